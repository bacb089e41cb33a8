//! HTTP actions over one shared reqwest client. Redirects are followed here,
//! not by reqwest, because reqwest keeps custom headers (API keys, tokens)
//! when a redirect changes host; we drop every client-supplied header then.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, StatusCode, Url, header::HeaderName, header::HeaderValue};

use super::{
    Failure, Output,
    address::{AddressPolicy, NOT_ALLOWED, NotAllowed},
};
use crate::task::HttpAction;

/// Methods an HTTP action may use.
pub const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Header that carries the occurrence id, unless the task sets it itself.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How long an idle pooled connection to a target is kept: long enough to
/// reuse it across runs of a task every minute.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Settings of the shared client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// TCP connect bound.
    pub connect_timeout: Duration,
    /// Bound of each read from the socket.
    pub read_timeout: Duration,
    /// Bound of a whole request, for custom handlers using the shared
    /// client; HTTP actions are bounded by their attempt timeout before it.
    pub total_timeout: Duration,
    /// Most redirect hops.
    pub max_redirects: usize,
    /// Largest body kept.
    pub output_cap: usize,
    /// Where requests may go.
    pub addresses: AddressPolicy,
    /// Values of the secrets `secret_headers` name.
    pub secrets: crate::secrets::NamedSecrets,
}

/// Runs HTTP actions.
#[derive(Clone)]
pub struct HttpRunner {
    client: reqwest::Client,
    settings: HttpSettings,
}

impl HttpRunner {
    /// Builds the shared client: no system proxy (a scheduler must call what
    /// the task says, not what the environment says; a proxy would also
    /// hide the real destination from the address policy), no automatic
    /// redirects, bounded connect and read, and every name resolved through
    /// the address policy.
    pub fn new(settings: HttpSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(settings.addresses.resolver())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .timeout(settings.total_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("recur/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, settings })
    }

    /// The shared client, for custom handlers.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// One attempt: the request, up to `max_redirects` redirects, and the
    /// body read up to the cap. Non-2xx is a failure carrying the body.
    pub async fn run(
        &self,
        action: &HttpAction,
        task_id: &str,
        occurrence_id: &str,
    ) -> Result<Output, Failure> {
        let mut method = action.method.clone();
        let mut url = action.url.clone();
        let mut body = Some(action.body.clone());
        let mut send_client_headers = true;
        let mut hops = 0;
        let started = Instant::now();
        let response = loop {
            // reqwest connects to a literal IP without asking the resolver,
            // so those are judged here, on every hop.
            if literal_ip(&url).is_some_and(|ip| !self.settings.addresses.allows(ip)) {
                return Err(Failure::new(NOT_ALLOWED));
            }
            let mut request = self.client.request(method.clone(), url.clone());
            let client_sets_key = action
                .headers
                .keys()
                .chain(action.secret_headers.keys())
                .any(|k| k.eq_ignore_ascii_case(IDEMPOTENCY_KEY));
            if send_client_headers {
                for (name, secret) in &action.secret_headers {
                    // Checked at registration, but the secret may have been
                    // removed since: the run fails naming it, never its value.
                    let value = self.settings.secrets.get(secret, task_id).ok_or_else(|| {
                        Failure::new(format!(
                            "secret {secret:?} (header {name:?}) is not defined for this task on this server"
                        ))
                    })?;
                    let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) else {
                        return Err(Failure::new(format!(
                            "secret {secret:?} is not a valid value for header {name:?}"
                        )));
                    };
                    request = request.header(n, v);
                }
                for (name, value) in &action.headers {
                    // Validated at registration; a failure here is skipped
                    // rather than trusted.
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        request = request.header(n, v);
                    }
                }
            }
            if !client_sets_key && let Ok(v) = HeaderValue::from_str(occurrence_id) {
                request = request.header(IDEMPOTENCY_KEY, v);
            }
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let response = request.send().await.map_err(|e| {
                if refused(&e) {
                    return Failure::new(NOT_ALLOWED);
                }
                Failure::new(format!(
                    "request to {} failed: {}",
                    redact(&url),
                    // reqwest's message repeats the URL in full, secrets included.
                    error_chain(&e.without_url())
                ))
            })?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                break response;
            }
            let Some(location) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                break response;
            };
            hops += 1;
            if hops > self.settings.max_redirects {
                return Err(Failure::new(format!(
                    "more than {} redirects",
                    self.settings.max_redirects
                )));
            }
            let next = url
                .join(location)
                .map_err(|e| Failure::new(format!("bad redirect location: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Failure::new(format!(
                    "redirect to unsupported scheme {:?}",
                    next.scheme()
                )));
            }
            if next.host_str() != url.host_str()
                || next.port_or_known_default() != url.port_or_known_default()
            {
                send_client_headers = false;
            }
            // As browsers do: 303 always, and 301/302 after POST, become GET
            // without a body; 307/308 repeat the request as it was.
            if status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
            }
            url = next;
        };
        let status = response.status();
        let (body, truncated) = read_capped(response, self.settings.output_cap).await?;
        let output = Output {
            body,
            truncated,
            http_status: status.as_u16(),
        };
        tracing::debug!(
            status = status.as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "http action done"
        );
        if status.is_success() {
            Ok(output)
        } else {
            Err(Failure {
                message: format!("HTTP status {status}"),
                output,
            })
        }
    }
}

/// The host of `url` when it is an IP address. The URL parser has already
/// turned every IPv4 spelling (`0x7f000001`, `2130706433`, `127.1`) into
/// dotted form; IPv6 comes in brackets.
fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Whether the request failed because the resolver hook refused every
/// address of the host.
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<NotAllowed>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Reads at most `cap` bytes, then stops reading: a huge or endless body
/// costs the cap, not memory.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Bytes, bool), Failure> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Failure::new(format!(
            "reading response body failed: {}",
            error_chain(&e.without_url())
        ))
    })? {
        let room = cap - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

/// The URL without user info or query, which may hold secrets.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
