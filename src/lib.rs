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
//! The public surface is deliberately short: [`Server`] and [`Config`] to run
//! one, [`TaskHandler`] for custom kinds, and [`pb`] for clients. Tasks are
//! registered through the API, which validates them, so an embedding
//! program cannot register what a client would be refused.
//!
//! # Layout
//! - `config`: every bound, with defaults, and the check that a config can run.
//! - `server`: start-up, serving, ordered shutdown; the only module that knows sockets.
//! - `access`: callers, scopes, namespaces, the access file and the layer that checks them.
//! - `audit`: the audit trail of calls, a JSON-lines file of its own.
//! - `api`: the gRPC handlers, proto <-> domain conversion, the one error -> status mapping.
//! - `scheduler`: control calls, timer, firing, the run queue, schedule maths, watching the store.
//! - `store`: the storage contract (atomic firing, run records, result log), the
//!   per-task state machine every store applies, the in-memory store and the
//!   Redis store (the system of record with `Config::redis_url`).
//! - `results`: the one result writer, fan-out to subscribers, result streams.
//! - `action`: HTTP, Redis and custom actions ([`TaskHandler`]).
//! - `redis_pool`: the managed Redis pool.
//! - `secrets`: named secrets for headers, and the keys that encrypt header values at rest.
//! - `task`: the domain model.
//! - `stats`: engine counters and histograms, for the periodic summary and `/metrics`.
//! - `metrics`: what `/metrics` shows (OpenMetrics, via prometheus-client).
//! - `pb`: generated code.
//! - `client`: how a Rust client connects (address, TLS, token), for `recur task` and embedders.

#![warn(missing_docs)]

/// Declares modules that are internal to the crate, and public (hidden from
/// the docs) with the `internals` feature, which the crate's own tests and
/// benchmarks turn on to drive the engine directly.
macro_rules! internal_modules {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$doc])*
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

internal_modules! {
    action;
    api;
    audit;
    redis_pool;
    results;
    scheduler;
    store;
    task;
}

pub mod access;
pub mod client;
pub mod config;
mod hex;
mod metrics;
pub mod pb;
pub mod secrets;
pub mod server;
mod stats;

pub use action::{HandlerContext, HandlerError, TaskHandler};
/// Implement [`TaskHandler`] with `#[recur::async_trait]`, without a
/// direct dependency on the async-trait crate.
pub use async_trait::async_trait;
pub use config::{Config, ConfigError, TlsFiles};
pub use redis_pool::RedisPool;
pub use results::stream::StreamGauge;
pub use server::{ReloadTrigger, Server, ServerError};
pub use task::TaskId;
