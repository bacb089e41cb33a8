//! What a run does: HTTP calls, Redis commands and custom handlers that an
//! embedding program registers. This module runs one attempt; timeouts,
//! retries and overlap belong to the scheduler.

pub mod address;
pub mod http;
pub mod redis;

use std::{collections::HashMap, fmt, panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    redis_pool::RedisPool,
    task::{Action, TaskId},
};

/// The error type custom handlers return: anything that can be displayed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What a custom handler gets for one attempt.
#[derive(Clone)]
#[non_exhaustive]
pub struct HandlerContext {
    /// The task.
    pub task_id: TaskId,
    /// Task id plus nominal slot; the same on a retry and on every replica,
    /// so side effects can be deduplicated with it.
    pub occurrence_id: String,
    /// Run number.
    pub run: u64,
    /// Attempt within the run, from 1.
    pub attempt: u32,
    /// Nominal slot of the run.
    pub scheduled_at: DateTime<Utc>,
    /// The task's payload.
    pub payload: Bytes,
    /// Cancelled when the run is aborted (task cancelled, overlap policy,
    /// shutdown). Handlers should stop soon after; the attempt is abandoned
    /// either way.
    pub cancel: CancellationToken,
    /// The server's managed Redis pool, when one is configured.
    pub redis: Option<RedisPool>,
    /// The server's shared HTTP client.
    pub http: reqwest::Client,
}

impl fmt::Debug for HandlerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerContext")
            .field("task_id", &self.task_id)
            .field("occurrence_id", &self.occurrence_id)
            .field("run", &self.run)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A custom task kind, registered by an embedding program under a name.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Checks a payload at registration; the message becomes an
    /// INVALID_ARGUMENT naming `spec.action.custom.payload`.
    fn validate(&self, _payload: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// Runs one attempt. The returned bytes become the result's output.
    async fn run(&self, ctx: HandlerContext) -> Result<Bytes, HandlerError>;
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Body, reply as JSON, or handler output; capped.
    pub body: Bytes,
    /// Whether `body` was cut at the cap.
    pub truncated: bool,
    /// HTTP status, or 0.
    pub http_status: u16,
}

/// A failed attempt: why, and what it produced anyway (a non-2xx body).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Message for the result's `error`.
    pub message: String,
    /// Output of the failed attempt.
    pub output: Output,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            output: Output::default(),
        }
    }
}

/// Identifies the attempt being run.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Task.
    pub task_id: TaskId,
    /// Occurrence id.
    pub occurrence_id: String,
    /// Run number.
    pub run: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Nominal slot.
    pub scheduled_at: DateTime<Utc>,
    /// The run's token.
    pub cancel: CancellationToken,
}

/// Runs actions with the server's shared clients.
#[derive(Clone)]
pub struct Actions {
    http: http::HttpRunner,
    redis: Option<RedisPool>,
    handlers: Arc<HashMap<String, Arc<dyn TaskHandler>>>,
    output_cap: usize,
}

impl Actions {
    /// Bundles the shared clients and the registered handlers.
    pub fn new(
        http: http::HttpRunner,
        redis: Option<RedisPool>,
        handlers: HashMap<String, Arc<dyn TaskHandler>>,
        output_cap: usize,
    ) -> Self {
        Self {
            http,
            redis,
            handlers: Arc::new(handlers),
            output_cap,
        }
    }

    /// The handler registered as `kind`.
    pub fn handler(&self, kind: &str) -> Option<&Arc<dyn TaskHandler>> {
        self.handlers.get(kind)
    }

    /// Whether Redis actions can run.
    pub fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Runs one attempt of `action`. Cancellation and timeouts are the
    /// caller's: it drops this future.
    pub async fn run(&self, action: &Action, attempt: &Attempt) -> Result<Output, Failure> {
        match action {
            Action::Http(http) => self.http.run(http, &attempt.occurrence_id).await,
            Action::Redis(cmd) => {
                let Some(pool) = &self.redis else {
                    return Err(Failure::new("no Redis configured on this server"));
                };
                redis::run(pool, cmd, self.output_cap).await
            }
            Action::Custom(custom) => {
                let Some(handler) = self.handlers.get(&custom.kind) else {
                    return Err(Failure::new(format!(
                        "no handler registered for kind {:?}",
                        custom.kind
                    )));
                };
                let ctx = HandlerContext {
                    task_id: attempt.task_id.clone(),
                    occurrence_id: attempt.occurrence_id.clone(),
                    run: attempt.run,
                    attempt: attempt.attempt,
                    scheduled_at: attempt.scheduled_at,
                    payload: custom.payload.clone(),
                    cancel: attempt.cancel.clone(),
                    redis: self.redis.clone(),
                    http: self.http.client().clone(),
                };
                // A panicking handler is a failed attempt, not a run that
                // never reports: without this, its task would stay busy
                // forever (every later slot SKIPPED, DeleteTask refused).
                match AssertUnwindSafe(handler.run(ctx)).catch_unwind().await {
                    Ok(Ok(body)) => Ok(Output {
                        truncated: body.len() > self.output_cap,
                        body: body.slice(..body.len().min(self.output_cap)),
                        http_status: 0,
                    }),
                    Ok(Err(e)) => Err(Failure::new(e.to_string())),
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::warn!(task_id = %attempt.task_id, kind = %custom.kind, panic = %message, "handler panicked");
                        Err(Failure::new(if message.is_empty() {
                            "handler panicked".to_string()
                        } else {
                            format!("handler panicked: {message}")
                        }))
                    }
                }
            }
        }
    }
}
