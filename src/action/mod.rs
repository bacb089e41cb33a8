//! What a run does: HTTP calls, Redis commands and custom handlers that an
//! embedding program registers. This module runs one attempt; timeouts,
//! retries and overlap belong to the scheduler.

pub mod address;
pub mod http;
pub mod redis;
pub mod redis_keys;

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
    /// HTTP actions' shared client and address policy.
    http: http::HttpRunner,
    /// The server's pool, handed to custom handlers.
    redis: Option<RedisPool>,
    /// What Redis actions run on and may touch; None refuses them.
    redis_actions: Option<redis::RedisActions>,
    /// Set on the copy that reads specs back from the store: a task
    /// registered before `--redis-action-prefix` was set (or Redis's key
    /// specs were consulted) must stay readable, cancellable and
    /// deletable, so only the command's shape is checked there; its runs
    /// are refused instead, by the full check before each attempt.
    stored_specs: bool,
    /// Custom kinds by name.
    handlers: Arc<HashMap<String, Arc<dyn TaskHandler>>>,
    /// Most bytes of output a result keeps.
    output_cap: usize,
}

impl Actions {
    /// Bundles the shared clients and the registered handlers. `redis` is
    /// the server's pool, for custom handlers; Redis actions run once
    /// [`Actions::with_redis_actions`] gives them their connection.
    pub fn new(
        http: http::HttpRunner,
        redis: Option<RedisPool>,
        handlers: HashMap<String, Arc<dyn TaskHandler>>,
        output_cap: usize,
    ) -> Self {
        Self {
            http,
            redis,
            redis_actions: None,
            stored_specs: false,
            handlers: Arc::new(handlers),
            output_cap,
        }
    }

    /// Lets Redis actions run, on `redis_actions`' connection and rules.
    pub fn with_redis_actions(mut self, redis_actions: Option<redis::RedisActions>) -> Self {
        self.redis_actions = redis_actions;
        self
    }

    /// The copy that checks specs read back from the store: see
    /// `stored_specs`.
    pub fn for_stored_specs(&self) -> Self {
        Self {
            stored_specs: true,
            ..self.clone()
        }
    }

    /// Checks a Redis action's command at registration; `key_prefix` is
    /// the server's own, which no key may be under. Without Redis only the
    /// command's shape is checked: the action is refused for that anyway.
    pub fn check_redis(
        &self,
        args: &[String],
        key_prefix: &str,
    ) -> Result<(), redis::CommandError> {
        let check = match &self.redis_actions {
            Some(actions) if !self.stored_specs => actions.key_check(),
            _ => redis::KeyCheck::Shape,
        };
        redis::check_command(args, check, key_prefix)
    }

    /// The handler registered as `kind`.
    pub fn handler(&self, kind: &str) -> Option<&Arc<dyn TaskHandler>> {
        self.handlers.get(kind)
    }

    /// Whether Redis actions can run.
    pub fn has_redis(&self) -> bool {
        self.redis_actions.is_some()
    }

    /// Runs one attempt of `action`. Cancellation and timeouts are the
    /// caller's: it drops this future.
    pub async fn run(&self, action: &Action, attempt: &Attempt) -> Result<Output, Failure> {
        match action {
            Action::Http(http) => {
                self.http
                    .run(http, attempt.task_id.as_str(), &attempt.occurrence_id)
                    .await
            }
            Action::Redis(cmd) => {
                let Some(redis) = &self.redis_actions else {
                    return Err(Failure::new("no Redis configured on this server"));
                };
                redis.run(cmd, self.output_cap).await
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
