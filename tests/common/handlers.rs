//! Custom task kinds for tests.

use std::sync::Arc;

use bytes::Bytes;
use recur::{HandlerContext, HandlerError, TaskHandler};
use tokio::sync::{Semaphore, mpsc};

/// Returns its payload at once.
pub struct Echo;

#[async_trait::async_trait]
impl TaskHandler for Echo {
    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        Ok(ctx.payload)
    }
}

/// Reports each start, then waits for a permit (or cancellation).
#[derive(Clone)]
pub struct Gate {
    pub permits: Arc<Semaphore>,
    pub started: mpsc::UnboundedSender<u64>,
}

impl Gate {
    pub fn new() -> (Gate, mpsc::UnboundedReceiver<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Gate {
                permits: Arc::new(Semaphore::new(0)),
                started: tx,
            },
            rx,
        )
    }
}

#[async_trait::async_trait]
impl TaskHandler for Gate {
    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        let _ = self.started.send(ctx.run);
        let permit = self.permits.acquire().await?;
        permit.forget();
        Ok(Bytes::from_static(b"released"))
    }
}
