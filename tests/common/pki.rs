//! Certificates for the TLS tests: a CA made on the spot, server
//! certificates for localhost, client certificates with a chosen subject,
//! and clients that speak TLS, mTLS and send a bearer token.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use recur::pb::v1::task_service_client::TaskServiceClient;
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A test CA.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Pem {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, "recur");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with subject `CN=<cn>,O=<o>` (RFC 4514 order).
    pub fn client(&self, cn: &str, o: &str) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        // DER order O, then CN, as in most certificates; RFC 4514 writes it
        // reversed. (rcgen starts with a default CN, which would come first.)
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, o);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `dir/name` by rename, as cert-manager and editors do,
/// and returns the path.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// A TLS channel trusting `ca`, with a client certificate when given.
pub async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&Pem>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(channel)
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    request
}

/// Adds `authorization: Bearer <token>` to every call (none when `None`).
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
            );
        }
        Ok(request)
    }
}

/// A client sending `token` on every call.
pub type TokenClient =
    TaskServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A client on `channel` sending `token` (or nothing) on every call.
pub fn with_token(channel: Channel, token: Option<&str>) -> TokenClient {
    TaskServiceClient::with_interceptor(channel, Bearer(token.map(str::to_string)))
}

/// A plaintext channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Where [`Pem::write_into`] put a certificate and its key.
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pem {
    /// Writes the certificate and key into `dir` as `<name>.pem` and
    /// `<name>-key.pem`, for clients and servers that take file paths.
    pub fn write_into(&self, dir: &std::path::Path, name: &str) -> PemFiles {
        PemFiles {
            cert: write(dir, &format!("{name}.pem"), &self.cert),
            key: write(dir, &format!("{name}-key.pem"), &self.key),
        }
    }
}
