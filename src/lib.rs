//! recur: a periodic-task service controlled over gRPC.
//!
//! Clients register tasks (a schedule and an action), pause, resume,
//! trigger and cancel them, and stream their results. The binary `recur`
//! serves it; an embedding program runs the same server with its own task
//! kinds:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! recur::server::run(listener, recur::Config::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: every bound, with defaults, and the check that a config can run.
//! - [`server`]: start-up, serving, ordered shutdown; the only module that knows sockets.
//! - [`api`]: the gRPC handlers, proto <-> domain conversion, the one error -> status mapping.
//! - [`scheduler`]: registry, timer, firing, runs, schedule maths.
//! - [`action`]: HTTP, Redis and custom actions ([`TaskHandler`]).
//! - [`store`]: the storage trait and the in-memory store.
//! - [`results`]: the result broadcast and stream forwarding.
//! - [`redis_pool`]: the managed Redis pool.
//! - [`task`]: the domain model.
//! - [`pb`]: generated code.

#![warn(missing_docs)]

pub mod action;
pub mod api;
pub mod config;
pub mod pb;
pub mod redis_pool;
pub mod results;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod task;

pub use action::{HandlerContext, HandlerError, TaskHandler};
/// Implement [`TaskHandler`] with `#[recur::async_trait]`, without a
/// direct dependency on the async-trait crate.
pub use async_trait::async_trait;
pub use config::{Config, ConfigError};
pub use server::{Server, ServerError};
