//! A local HTTP server for HTTP actions: records every request and answers
//! as told. Tests wait on its notifications instead of sleeping.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
};
use tokio::sync::{Notify, mpsc};

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Per-path behaviour: status, delay, body, redirect target.
    behaviour: Mutex<HashMap<String, Behaviour>>,
    tx: Mutex<Option<mpsc::UnboundedSender<Received>>>,
    release: Notify,
}

/// How a path answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub status: Option<u16>,
    pub delay: Option<Duration>,
    /// Wait for `HttpTarget::release` before answering.
    pub hold: bool,
    pub body: Option<Vec<u8>>,
    pub location: Option<String>,
}

pub struct HttpTarget {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
}

impl HttpTarget {
    pub async fn start() -> HttpTarget {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::unbounded_channel();
        *shared.tx.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route("/{*path}", any(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpTarget {
            addr,
            shared,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers `path` with `status` (a failing target).
    pub fn fail(&self, path: &str, status: u16) {
        self.set(
            path,
            Behaviour {
                status: Some(status),
                ..Default::default()
            },
        );
    }

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .insert(path.to_string(), behaviour);
    }

    /// Lets held requests answer.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The next request to arrive (in arrival order), within the wait bound.
    pub async fn next_request(&self) -> Received {
        tokio::time::timeout(super::WAIT, self.rx.lock().await.recv())
            .await
            .expect("no request reached the HTTP target in time")
            .expect("target closed")
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let received = Received {
        method,
        path: path.clone(),
        headers,
        body,
        at: std::time::Instant::now(),
    };
    shared.received.lock().unwrap().push(received.clone());
    if let Some(tx) = shared.tx.lock().unwrap().as_ref() {
        let _ = tx.send(received);
    }
    let behaviour = shared
        .behaviour
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default();
    if behaviour.hold {
        let notified = shared.release.notified();
        notified.await;
    }
    if let Some(delay) = behaviour.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(behaviour.status.unwrap_or(200)).unwrap();
    let mut response = (status, behaviour.body.unwrap_or_else(|| b"ok".to_vec())).into_response();
    if let Some(location) = behaviour.location {
        response
            .headers_mut()
            .insert("location", location.parse().unwrap());
    }
    response
}
