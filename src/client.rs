//! How a Rust client reaches `recur serve`: the server address, TLS or
//! mTLS, and a bearer token, checked once when the settings are made, so a
//! mistake is reported as a sentence naming the option instead of a failed
//! call later. Knows nothing of what the client then does. The `recur task`
//! commands, the Rust client example and embedders' own clients share it;
//! the option names in its messages are those of `recur task` and the
//! example (`--server` / `RECUR_SERVER`, ...).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let connection = recur::client::Connection::new("127.0.0.1:50051", None, None, None, None)?;
//! let mut client = connection.connect().await?;
//! let me = client.who_am_i(recur::pb::v1::WhoAmIRequest {}).await?;
//! println!("connected as {}", me.get_ref().name);
//! # Ok(()) }
//! ```

use std::{path::PathBuf, time::Duration};

use crate::pb::v1::task_service_client::TaskServiceClient;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri},
};

/// StreamResults' trailer carrying the cursor a stream that ended early
/// (reader behind, shutdown) resumes after.
pub const RESUME_CURSOR_TRAILER: &str = "recur-resume-cursor";
/// StreamResults' trailer naming the oldest cursor still held (with
/// DATA_LOSS).
pub const OLDEST_CURSOR_TRAILER: &str = "recur-oldest-cursor";
/// StreamResults' response header: where the stream starts (the given
/// `after_cursor`, or the newest cursor when it opened live), so a stream
/// lost before its first result resumes without a gap.
pub const START_CURSOR_HEADER: &str = "recur-start-cursor";

/// Bound on connecting (TCP and the TLS handshake), so a wrong address
/// fails fast instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The generated client, sending the bearer token (if any) on every call.
pub type Client = TaskServiceClient<InterceptedService<Channel, BearerToken>>;

/// A mistake in the connection settings, found before connecting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A PEM file named by an option cannot be read or holds no PEM.
    #[error("{option}: cannot use {path}: {reason}")]
    File {
        /// The flag and variable naming the file.
        option: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificates or key were refused (such as a key that is not one).
    #[error("TLS setup for {server}: {reason}")]
    Tls {
        /// The server address.
        server: String,
        /// tonic's error with its causes.
        reason: String,
    },
    /// The server could not be reached, or the TLS handshake failed.
    #[error("cannot connect to {server}: {reason}{hint}")]
    Connect {
        /// The server address.
        server: String,
        /// tonic's error with its causes.
        reason: String,
        /// What to check next, when there is a likely cause; else empty.
        hint: &'static str,
    },
}

/// Where the server is and how to prove who we are; made only through
/// [`Connection::new`], so a value of this type is consistent.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `http://host:port` or `https://host:port`.
    server: String,
    /// The scheme is https: speak TLS.
    tls: bool,
    /// `Bearer <token>`, marked sensitive so it never shows in Debug output.
    authorization: Option<MetadataValue<Ascii>>,
    /// PEM of the CA that signed the server's certificate.
    ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for mTLS.
    identity: Option<(PathBuf, PathBuf)>,
}

impl Connection {
    /// Checks the settings: `server` is `host:port` (plaintext),
    /// `http://host:port` or `https://host:port` (TLS); a CA or client
    /// certificate needs https; a certificate needs its key and the other
    /// way round; the token must be sendable as metadata.
    pub fn new(
        server: &str,
        token: Option<&str>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Connection, SettingsError> {
        let fail = |reason: String| Err(SettingsError(reason));
        // A bare host:port is what `recur serve --listen` prints and takes.
        let server = if server.contains("://") {
            server.trim_end_matches('/').to_string()
        } else {
            format!("http://{server}")
        };
        let tls = match server.split_once("://") {
            Some(("https", _)) => true,
            Some(("http", _)) => false,
            _ => {
                return fail(format!(
                    "--server / RECUR_SERVER {server:?}: the scheme must be http:// (plaintext) or https:// (TLS)"
                ));
            }
        };
        if !server
            .parse::<Uri>()
            .is_ok_and(|uri| uri.host().is_some_and(|h| !h.is_empty()))
        {
            return fail(format!(
                "--server / RECUR_SERVER {server:?} is not an address like https://127.0.0.1:50051"
            ));
        }
        if !tls {
            // Silently sending no certificate would look like a server problem.
            for (option, given) in [
                ("--ca / RECUR_CA", ca.is_some()),
                ("--cert / RECUR_CERT", cert.is_some()),
                ("--key / RECUR_KEY", key.is_some()),
            ] {
                if given {
                    return fail(format!(
                        "{option} is for TLS, but the server address {server} is plaintext: write it as https://"
                    ));
                }
            }
        }
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return fail("--cert / RECUR_CERT needs its key: give --key / RECUR_KEY".into());
            }
            (None, Some(_)) => {
                return fail(
                    "--key / RECUR_KEY needs its certificate: give --cert / RECUR_CERT".into(),
                );
            }
        };
        let authorization = match token {
            None => None,
            Some(token) => {
                // The token itself is never repeated in an error: it is a secret.
                let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| {
                        SettingsError(
                            "--token / RECUR_TOKEN holds characters that metadata cannot carry \
                             (tokens from `recur token new` are plain ASCII)"
                                .into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Connection {
            server,
            tls,
            authorization,
            ca,
            identity,
        })
    }

    /// The server address, with its scheme.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Connects (with the TLS handshake, if any) and returns a client that
    /// sends the token on every call.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let mut endpoint = Channel::from_shared(self.server.clone())
            .map_err(|e| self.connect_error(&e))?
            .connect_timeout(CONNECT_TIMEOUT);
        if self.tls {
            endpoint = endpoint
                .tls_config(self.tls_config()?)
                .map_err(|e| ConnectError::Tls {
                    server: self.server.clone(),
                    reason: causes(&e),
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| self.connect_error(&e))?;
        Ok(TaskServiceClient::with_interceptor(
            channel,
            BearerToken(self.authorization.clone()),
        ))
    }

    /// Trusts the given CA (else whatever roots tonic was built with) and
    /// presents the client certificate, if any. The server's certificate
    /// must name the host of the address (`127.0.0.1` or `localhost`).
    fn tls_config(&self) -> Result<ClientTlsConfig, ConnectError> {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.ca {
            let pem = read_pem(ca, "--ca / RECUR_CA", "CERTIFICATE")?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.identity {
            let cert = read_pem(cert, "--cert / RECUR_CERT", "CERTIFICATE")?;
            let key = read_pem(key, "--key / RECUR_KEY", "PRIVATE KEY")?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Ok(tls)
    }

    fn connect_error(&self, error: &(dyn std::error::Error + 'static)) -> ConnectError {
        let reason = causes(error);
        // recur builds tonic without a system root store, so an https
        // address without --ca trusts nothing.
        let hint = if self.tls && self.ca.is_none() && reason.contains("certificate") {
            " (no --ca / RECUR_CA given: set it to the CA that signed the server's certificate)"
        } else {
            ""
        };
        ConnectError::Connect {
            server: self.server.clone(),
            reason,
            hint,
        }
    }
}

/// Reads a PEM file, refusing one without a `-----BEGIN ...{kind}-----`
/// block: tonic skips what it cannot parse, so a wrong file would
/// otherwise surface as an unexplained handshake failure.
fn read_pem(
    path: &std::path::Path,
    option: &'static str,
    kind: &str,
) -> Result<Vec<u8>, ConnectError> {
    let error = |reason: String| ConnectError::File {
        option,
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let text = String::from_utf8_lossy(&pem);
    let has_block = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(&format!("{kind}-----")));
    if !has_block {
        return Err(error(format!("no PEM {kind} in it")));
    }
    Ok(pem)
}

/// An error and its causes, `outer: inner: innermost`: tonic's own message
/// is only "transport error", the useful part (such as "invalid peer
/// certificate: UnknownIssuer") is in the sources.
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
/// (Debug shows the value as "Sensitive".)
#[derive(Clone, Debug)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
