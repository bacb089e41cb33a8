//! TLS for the gRPC port through our own rustls acceptor: tonic's built-in
//! TLS cannot change its certificate while serving, ours takes the config
//! in force at each handshake, so a renewed certificate or a new client CA
//! applies to new connections while open ones go on untouched.

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::Stream;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, ServerConfig, server::WebPkiClientVerifier},
    server::TlsStream,
};
use tracing::{debug, warn};

use crate::config::TlsFiles;

/// A client that has not finished its handshake by then is dropped, so
/// idle connections that never speak cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes under way at once; accepting waits beyond it, so a
/// flood of connections that never finish costs a bounded amount of memory.
const MAX_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for the gRPC server to take them.
const HANDED_OVER: usize = 64;

/// After an accept error (such as too many open files), the pause before
/// trying again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{setting} {path}: {reason}")]
    File {
        /// The flag naming the file.
        setting: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (such as a key that does not match
    /// the certificate).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("--tls-client-ca: {0}")]
    ClientCa(String),
}

fn file_error(setting: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        setting,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads `files` into a server config speaking HTTP/2 only (gRPC).
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error("--tls-cert", &files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("--tls-cert", &files.cert, e))?;
    if certs.is_empty() {
        return Err(file_error(
            "--tls-cert",
            &files.cert,
            "no certificate in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("--tls-key", &files.key, e))?;
    // The provider is named here rather than taken from the process
    // default: reqwest brings rustls too, and two installed providers make
    // the default builder panic.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_error("--tls-client-ca", ca, e))?
            {
                let cert = cert.map_err(|e| file_error("--tls-client-ca", ca, e))?;
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(file_error("--tls-client-ca", ca, "no certificate in it"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS config in force, swapped whole on reload; each handshake takes
/// the one in force when it starts.
#[derive(Debug)]
pub struct TlsConfig(RwLock<Arc<ServerConfig>>);

impl TlsConfig {
    /// Starts with `config`.
    pub fn new(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig(RwLock::new(config))
    }

    fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            // Only an Arc is ever stored under the lock: a whole value.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `config` in force for new connections.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        match self.0.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// Connections from `listener` once their TLS handshake finished, for
/// `serve_with_incoming_shutdown`. Handshakes run side by side (one slow
/// client delays nobody) and are bounded in number and time; a failed one
/// is logged at debug, since port scanners make them all day. The listener
/// is closed once the server stops taking connections (drops the stream).
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsConfig>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(HANDED_OVER);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = tx.closed() => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
                _ = tx.closed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => debug!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) })
}
