//! Embedding recur with a custom task kind.
//!
//! Run it (it serves on 127.0.0.1:50051, or on `RECUR_LISTEN`; `RUST_LOG`
//! sets the log filter, `info` by default), then register a task of kind
//! "word-count":
//!
//! ```text
//! cargo run --example custom_kind
//! grpcurl -plaintext -d '{"task_id":"wc","spec":{"schedule":{"every":"10s"},
//!   "action":{"custom":{"kind":"word-count","payload":"aGVsbG8gd29ybGQ="}}}}' \
//!   127.0.0.1:50051 recur.v1.TaskService/RegisterTask
//! ```

use bytes::Bytes;
use recur::{Config, HandlerContext, HandlerError, Server, TaskHandler};

/// Counts the words of its payload. A real handler would call a database,
/// a queue, or the shared HTTP client and Redis pool found in the context.
struct WordCount;

#[recur::async_trait]
impl TaskHandler for WordCount {
    /// Refused at registration with INVALID_ARGUMENT naming
    /// `spec.action.custom.payload`.
    fn validate(&self, payload: &[u8]) -> Result<(), String> {
        std::str::from_utf8(payload)
            .map(drop)
            .map_err(|_| "payload must be UTF-8 text".to_string())
    }

    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        // Long work should watch ctx.cancel; this is quick.
        let text = std::str::from_utf8(&ctx.payload)?;
        let words = text.split_whitespace().count();
        tracing::info!(occurrence = %ctx.occurrence_id, words, "counted");
        Ok(Bytes::from(format!("{{\"words\":{words}}}")))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The library logs through `tracing` but never installs a subscriber,
    // so without one it says nothing at all: show `info` and up unless
    // RUST_LOG asks for something else.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // The same variable as `recur serve`, so a second copy can run elsewhere.
    let addr = std::env::var("RECUR_LISTEN").unwrap_or_else(|_| "127.0.0.1:50051".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "custom_kind: serving on {}, with task kind \"word-count\"; Ctrl-C to stop",
        listener.local_addr()?
    );
    Server::new(Config::default())
        .handler("word-count", WordCount)
        .run(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
