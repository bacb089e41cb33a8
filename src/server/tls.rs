//! TLS for the gRPC port through our own rustls acceptor (fed by
//! [`super::accept`]): tonic's built-in TLS cannot change its certificate
//! while serving, ours takes the config in force at each handshake, so a
//! renewed certificate or a new client CA applies to new connections while
//! open ones go on untouched.

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, ServerConfig, server::WebPkiClientVerifier},
    server::TlsStream,
};

use crate::config::TlsFiles;

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

/// Finishes the TLS handshake of an accepted connection with the config
/// in force when it starts.
pub fn handshake(
    tls: Arc<TlsConfig>,
) -> impl Fn(TcpStream) -> futures::future::BoxFuture<'static, std::io::Result<TlsStream<TcpStream>>>
+ Send
+ Sync
+ 'static {
    move |tcp| {
        let acceptor = TlsAcceptor::from(tls.current());
        Box::pin(async move { acceptor.accept(tcp).await })
    }
}
