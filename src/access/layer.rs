//! The tower layer in front of every service: it finds out who is calling
//! (a bearer token, else the mTLS certificate), checks the scope the method
//! needs ([`super::methods`]), and either answers UNAUTHENTICATED /
//! PERMISSION_DENIED itself or passes the call on with its [`Caller`] in the
//! request's extensions. A layer rather than an interceptor: only a layer
//! sees the method path, and it covers health and reflection too.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use tonic::{
    Status,
    codegen::http::{self, HeaderMap},
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use x509_cert::der::Decode;

use super::{AccessHandle, Caller, Scope, Scopes, methods, quota::RateLimits};
use crate::audit::{AuditLog, Event};

/// How calls are authenticated.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Off: every caller is [`Caller::anonymous`] (loopback, or `--insecure`
    /// without credentials configured).
    enabled: bool,
    /// Tokens and subjects in force; reloaded in place.
    access: AccessHandle,
    /// Reflection needs no token (`--open-reflection`).
    open_reflection: bool,
    /// Refused calls to the task service are audited like answered ones.
    audit: AuditLog,
    /// The `calls_per_second` buckets of this process.
    rates: Arc<RateLimits>,
    /// Refuse browser requests (HTTP/1.x, gRPC-Web) whose `Host` is a
    /// name other than `localhost`: see [`methods::rebindable`].
    check_host: bool,
}

impl Gate {
    /// A gate; `enabled` false lets every call through as anonymous.
    pub fn new(
        enabled: bool,
        access: AccessHandle,
        open_reflection: bool,
        audit: AuditLog,
    ) -> Gate {
        Gate {
            enabled,
            access,
            open_reflection,
            audit,
            rates: Arc::default(),
            check_host: false,
        }
    }

    /// Refuses browser requests (the page, gRPC-Web) that name this server
    /// by a DNS name other than `localhost`. For a server without
    /// authentication that a browser can reach (the dashboard on):
    /// otherwise any web site its operator visits could point a name of
    /// its own at 127.0.0.1 (DNS rebinding) and call the API as the page.
    pub fn refuse_rebound_hosts(mut self, on: bool) -> Gate {
        self.check_host = on;
        self
    }

    /// The audit event of a refused call to `path`, when one is wanted:
    /// only task-service methods, reads only with `--audit-reads`.
    fn refusal(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<&[u8]>,
        status: &Status,
    ) -> Option<Event> {
        let (method_path, scope) = methods::TASK_SERVICE.iter().find(|(p, _)| *p == path)?;
        if !self
            .audit
            .wants(*scope == methods::Needed::Scope(Scope::Read))
        {
            return None;
        }
        // Who it was, as far as known: a known token or subject that lacked
        // the scope, else nobody.
        let caller = self.identify(headers, peer).ok();
        Some(Event {
            at: chrono::Utc::now(),
            caller: caller
                .as_ref()
                .map_or_else(|| Arc::from("unauthenticated"), |c| c.name.clone()),
            namespace: caller.and_then(|c| c.namespace),
            method: method_path.rsplit('/').next().unwrap_or(method_path),
            task_id: None,
            outcome: match status.code() {
                tonic::Code::PermissionDenied => "PERMISSION_DENIED",
                tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
                _ => "UNAUTHENTICATED",
            },
        })
    }

    /// The caller of a call to `path`, or the status refusing it.
    fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<&[u8]>,
    ) -> Result<Caller, Status> {
        if !self.enabled {
            return Ok(Caller::anonymous());
        }
        let needed = match methods::needed(path, self.open_reflection) {
            methods::Needed::Open => {
                return Ok(Caller {
                    name: Arc::from("unauthenticated"),
                    scopes: Scopes::default(),
                    namespace: None,
                });
            }
            methods::Needed::Authenticated => None,
            methods::Needed::Scope(scope) => Some(scope),
        };
        let caller = self.identify(headers, peer)?;
        if let Some(needed) = needed
            && !caller.scopes.allow(needed)
        {
            return Err(Status::permission_denied(format!(
                "{:?} lacks the {:?} scope that {path} needs",
                &*caller.name,
                needed.name()
            )));
        }
        if let (Some(ns), Some(access)) = (&caller.namespace, self.access.current()) {
            let quota = access.quota(ns);
            if let Err(wait) = self.rates.take(ns, &quota, std::time::Instant::now()) {
                return Err(crate::api::status::quota_exceeded(
                    "calls_per_second",
                    ns,
                    &format!(
                        "{} calls per second in this process",
                        quota.calls_per_second.unwrap_or_default()
                    ),
                    Some(wait),
                ));
            }
        }
        Ok(caller)
    }

    /// A bearer token when one is sent, else the client certificate.
    fn identify(&self, headers: &HeaderMap, peer: Option<&[u8]>) -> Result<Caller, Status> {
        let access = self.access.current();
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or_else(|| {
                    Status::unauthenticated("authorization metadata must be \"Bearer <token>\"")
                })?;
            // The token is never repeated: a typo of a real one is close to it.
            return access
                .as_deref()
                .and_then(|a| a.by_token(token))
                .map(|entry| entry.caller())
                .ok_or_else(|| Status::unauthenticated("the bearer token is not known"));
        }
        if let Some(der) = peer {
            let subject = subject(der)
                .ok_or_else(|| Status::unauthenticated("the client certificate cannot be read"))?;
            return match access.as_deref() {
                // Without an access file the CA is the whole policy: any
                // certificate it signed may do everything.
                None => Ok(Caller {
                    name: Arc::from(subject),
                    scopes: Scopes::ALL,
                    namespace: None,
                }),
                Some(access) => access
                    .by_subject(&subject)
                    .map(|entry| entry.caller())
                    .ok_or_else(|| {
                        Status::permission_denied(format!(
                            "certificate subject {subject:?} is not in the access file"
                        ))
                    }),
            };
        }
        Err(Status::unauthenticated(
            "no credentials: send \"authorization: Bearer <token>\" metadata (or a client certificate)",
        ))
    }
}

/// The subject of a DER certificate as an RFC 4514 string
/// (`CN=deployer,O=acme`: most specific first, comma-separated).
pub fn subject(der: &[u8]) -> Option<String> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

/// Puts a [`Gate`] in front of a service.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    gate: Arc<Gate>,
}

impl AccessLayer {
    /// The layer of `gate`.
    pub fn new(gate: Gate) -> AccessLayer {
        AccessLayer {
            gate: Arc::new(gate),
        }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// A service behind a [`Gate`].
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, B> Service<http::Request<B>> for Access<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if self.gate.check_host && methods::rebindable(&request) {
            let status = Status::permission_denied(
                "this server has no authentication, so a browser may reach it only as localhost or by its IP address (a DNS name could be rebound to it by another site)",
            );
            let mut refused = status.into_http();
            if methods::is_page(request.method(), request.uri().path()) {
                *refused.status_mut() = http::StatusCode::FORBIDDEN;
            }
            return Either::Right(ready(Ok(refused)));
        }
        if methods::is_page(request.method(), request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let peer = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        match self
            .gate
            .check(request.uri().path(), request.headers(), peer)
        {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                // Refusals never wait for the audit writer: anyone can make
                // them, and a flood of them must not hold up other callers.
                if let Some(event) =
                    self.gate
                        .refusal(request.uri().path(), request.headers(), peer, &status)
                {
                    self.gate.audit.record_refusal(event);
                }
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessFile, Scope, token};

    fn gate() -> Gate {
        let text = format!(
            "tokens:\n  - name: reader\n    sha256: {}\n    scopes: [read]\n",
            token::digest_hex("r")
        );
        let access = AccessHandle::new(Some(AccessFile::parse(&text).expect("valid")));
        Gate::new(true, access, false, AuditLog::default())
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            authorization.parse().expect("ascii"),
        );
        h
    }

    const GET: &str = "/recur.v1.TaskService/GetTask";

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        let g = gate();
        for ok in ["Bearer r", "bearer r", "BEARER  r "] {
            let caller = g.check(GET, &headers(ok), None).expect(ok);
            assert_eq!(&*caller.name, "reader");
        }
        for bad in ["Basic r", "Bearer", "Bearer R", "r"] {
            let status = g.check(GET, &headers(bad), None).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
            assert!(!status.message().contains(" R"), "{}", status.message());
        }
    }

    #[test]
    fn a_missing_scope_is_named() {
        let status = gate()
            .check(
                "/recur.v1.TaskService/PauseTask",
                &headers("Bearer r"),
                None,
            )
            .expect_err("read cannot pause");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().contains("\"write\""),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("\"reader\""),
            "{}",
            status.message()
        );
    }

    #[test]
    fn off_lets_everyone_in_as_anonymous_with_every_scope() {
        let caller = Gate::new(false, AccessHandle::default(), false, AuditLog::default())
            .check("/recur.v1.TaskService/DeleteTask", &HeaderMap::new(), None)
            .expect("off");
        assert!(caller.scopes.allow(Scope::Admin));
        assert!(caller.namespace.is_none());
    }
}
