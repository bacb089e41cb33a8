//! Server configuration: every bound the service enforces, with its default
//! and the reason for it. No clap types here; the binary maps flags onto this.

use std::time::Duration;

/// How a recur server behaves. `Config::default()` is what `recur serve`
/// runs with when no flag is given.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Redis URL. When set, the managed pool is opened before the server
    /// takes calls and Redis actions can run. (The task store stays in memory
    /// in this version.)
    pub redis_url: Option<String>,
    /// Names this process in logs and in Redis `CLIENT LIST` (`recur:<node_id>`).
    pub node_id: String,
    /// Keys under this prefix belong to the server; Redis actions may not touch them.
    pub key_prefix: String,
    /// Shortest `every` a task may use; protects the server from busy loops.
    pub min_interval: Duration,
    /// Most tasks the server holds (terminal ones included until retention
    /// removes them); registration beyond it is RESOURCE_EXHAUSTED.
    pub max_tasks: usize,
    /// Attempt timeout when a task sets none.
    pub default_timeout: Duration,
    /// Longest attempt timeout a task may ask for.
    pub max_timeout: Duration,
    /// How long runs in flight may go on after a shutdown signal before
    /// their tokens are cancelled.
    pub shutdown_grace: Duration,
    /// How long shutdown waits for gRPC connections to close after result
    /// streams were ended; tonic itself would wait forever.
    pub connection_drain: Duration,
    /// Results kept per task; older ones are dropped first.
    pub results_per_task: usize,
    /// Results kept in total across tasks, so memory stays flat.
    pub results_total: usize,
    /// Output bytes kept in the result log in total; the oldest results go
    /// first when it is exceeded.
    pub results_max_bytes: usize,
    /// How long CANCELLED and COMPLETED tasks stay readable before they are removed.
    pub terminal_retention: Duration,
    /// Largest response body kept as a result's output; the rest is cut and
    /// `output_truncated` is set. Also bounds what is read from the network.
    pub output_cap: usize,
    /// Redirect hops an HTTP action follows before failing.
    pub max_redirects: usize,
    /// Bound of the TCP connect of an HTTP action.
    pub http_connect_timeout: Duration,
    /// Bound of reading each chunk of an HTTP response.
    pub http_read_timeout: Duration,
    /// Results queued per open stream; a reader further behind gets
    /// RESOURCE_EXHAUSTED with a resume cursor instead of slowing anyone.
    /// Queued results are shared pointers (8 bytes each, the result itself
    /// is shared by every stream), and a queue takes memory only while it
    /// holds something: the default lets a reader that keeps up with steady
    /// load ride out a 100,000-task herd, at worst about 1 MiB per stream.
    pub stream_buffer: usize,
    /// Most runs whose action is going at once. Runs beyond it wait in a
    /// queue (counted in the periodic summary) and their `started_at` shows
    /// the wait; a herd larger than this runs in waves instead of opening
    /// as many connections and futures at once.
    pub max_runs_in_flight: usize,
    /// Most result streams open at once across all clients.
    pub max_open_streams: usize,
    /// Most HTTP/2 streams per connection.
    pub max_concurrent_streams_per_connection: u32,
    /// Most calls handled at once per connection; calls beyond it are shed
    /// with RESOURCE_EXHAUSTED rather than queued.
    pub concurrency_per_connection: usize,
    /// Largest request message accepted (after decompression).
    pub max_message_size: usize,
    /// HTTP/2 keepalive ping interval, so half-open clients are reaped.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Bound of opening one Redis connection.
    pub redis_connect_timeout: Duration,
    /// Bound of one Redis reply.
    pub redis_response_timeout: Duration,
    /// Bound of waiting for a free pooled connection.
    pub redis_checkout_timeout: Duration,
    /// Connections in the Redis pool.
    pub redis_pool_size: usize,
    /// How long start-up keeps retrying an unreachable Redis before giving up.
    pub redis_startup_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            key_prefix: "recur:".to_string(),
            min_interval: Duration::from_secs(1),
            max_tasks: 100_000,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(10),
            connection_drain: Duration::from_secs(2),
            results_per_task: 100,
            results_total: 100_000,
            results_max_bytes: 256 * 1024 * 1024,
            terminal_retention: Duration::from_secs(24 * 3600),
            output_cap: 64 * 1024,
            max_redirects: 5,
            http_connect_timeout: Duration::from_secs(5),
            http_read_timeout: Duration::from_secs(15),
            stream_buffer: 131_072,
            max_runs_in_flight: 4096,
            max_open_streams: 1024,
            max_concurrent_streams_per_connection: 256,
            concurrency_per_connection: 256,
            max_message_size: 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            redis_connect_timeout: Duration::from_secs(2),
            redis_response_timeout: Duration::from_secs(5),
            redis_checkout_timeout: Duration::from_secs(5),
            redis_pool_size: 16,
            redis_startup_window: Duration::from_secs(30),
        }
    }
}
