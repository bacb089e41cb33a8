//! Embedding recur with a custom task kind.
//!
//! Run it, then register a task of kind "word-count":
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
    tracing_subscriber::fmt::init();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    Server::new(Config::default())
        .handler("word-count", WordCount)
        .run(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
