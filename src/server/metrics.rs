//! The `/metrics` endpoint: plain HTTP on a listener of its own, never the
//! gRPC port, because it answers anyone who reaches it (bind it where only
//! the scraper does). Served from start-up until shutdown stops accepting
//! calls (step 3), so the shutdown delay can still be watched.

use std::sync::Arc;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Exporter;

/// The OpenMetrics text format, which Prometheus prefers when it asks.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `exporter` on `listener` until `stop`.
pub(super) fn spawn(
    listener: TcpListener,
    exporter: Exporter,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let exporter = Arc::new(exporter);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let exporter = exporter.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, CONTENT_TYPE)],
                        exporter.render().await,
                    )
                }
            }),
        )
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: try /metrics\n").into_response()
        });
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics");
    }
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "the /metrics listener failed");
        }
    })
}
