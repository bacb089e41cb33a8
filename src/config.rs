//! Server configuration: every bound the service enforces, with its default
//! and the reason for it, and the check that the values can work together.
//! No clap types here; the binary maps flags onto this.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use redis::IntoConnectionInfo;
use tokio::sync::Semaphore;

/// Shortest `min_interval` accepted: below a millisecond the timer cannot
/// keep the promise, and zero would let a task fire in a busy loop.
const MIN_INTERVAL_FLOOR: Duration = Duration::from_millis(1);

/// Why a [`Config`] cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is out of its range, or does not fit with another one.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// What to change: the `recur serve` flag when there is one (such as
        /// `--max-open-streams`), else the [`Config`] field (such as
        /// `Config::stream_buffer`), so the message points at the fix.
        setting: &'static str,
        /// The rule broken and the value given.
        reason: String,
    },
}

/// Shortest lease: renewed every fifth of it, and a renewal must come
/// through in time even with a slow Redis.
const LEASE_MIN: Duration = Duration::from_millis(500);
/// Longest lease: a killed replica's tasks wait this long to move.
const LEASE_MAX: Duration = Duration::from_secs(300);

/// How a recur server behaves. `Config::default()` is what `recur serve`
/// runs with when no flag is given; [`Config::validate`] says whether a
/// changed one can run (the server checks it before opening anything).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Redis URL. When set, the managed pool is opened before the server
    /// takes calls, Redis is the system of record of tasks, runs and results
    /// (under `key_prefix`), and Redis actions can run.
    pub redis_url: Option<String>,
    /// Names this process in logs and in Redis `CLIENT LIST` (`recur:<node_id>`).
    pub node_id: String,
    /// Keys under this prefix belong to the server (the task store's keys);
    /// Redis actions may not touch them.
    pub key_prefix: String,
    /// Shards of the Redis store's tasks and due index, each its own hash
    /// slot, so no single key is hot. Fixed for the life of a store: tasks
    /// are found by the shard their id hashes to.
    pub store_shards: u32,
    /// How long a replica's lease on Redis (its membership and the shards
    /// it fires) lasts unless renewed; renewed every fifth of it. A replica
    /// killed or cut off has its shards fire elsewhere within this plus one
    /// renewal, and its runs still going are then reported ABANDONED.
    pub lease: Duration,
    /// Shortest `every` a task may use; protects the server from busy loops.
    pub min_interval: Duration,
    /// Most tasks the server holds (terminal ones included until retention
    /// removes them); registration beyond it is RESOURCE_EXHAUSTED.
    pub max_tasks: usize,
    /// Attempt timeout when a task sets none.
    pub default_timeout: Duration,
    /// Longest attempt timeout a task may ask for.
    pub max_timeout: Duration,
    /// How long the server goes on serving after a shutdown signal, with
    /// health already NOT_SERVING, before it stops taking calls: a load
    /// balancer needs its health-check interval times its failure threshold
    /// to notice, and calls it sends meanwhile would otherwise fail. Zero
    /// (the default) suits a server with no balancer in front.
    pub shutdown_delay: Duration,
    /// How long runs in flight may go on after the server stopped taking
    /// calls, before their tokens are cancelled.
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
    /// Results older than this are dropped from the Redis result log (when
    /// a result is recorded); with the count and byte bounds, the log's size
    /// has a ceiling whatever the load.
    pub results_max_age: Duration,
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
    /// A connection that sends nothing for this long after it was accepted
    /// (no TLS handshake finished, no HTTP/2 preface) is closed, so idle
    /// connections cannot pile up; after the preface, keepalive applies.
    pub first_byte_timeout: Duration,
    /// HTTP/2 keepalive ping interval, so half-open clients are reaped.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Bound of opening one Redis connection.
    pub redis_connect_timeout: Duration,
    /// Bound of one Redis reply.
    pub redis_response_timeout: Duration,
    /// Shared connections in the Redis pool, each multiplexed: they are
    /// not checked out, every caller's commands pipeline on them.
    pub redis_pool_size: usize,
    /// How long start-up keeps retrying an unreachable Redis before giving
    /// up. The last attempt starts when the window ends, so start-up fails
    /// after the window plus that attempt (bounded by the connect and
    /// response timeouts).
    pub redis_startup_window: Duration,
    /// Serve TLS with this certificate and key; with a client CA, mTLS.
    /// The files are watched and reloaded without dropping connections.
    pub tls: Option<TlsFiles>,
    /// The access file (`--auth-tokens`): bearer tokens and certificate
    /// subjects with their scopes and namespaces. Watched and reloaded.
    pub auth_tokens: Option<PathBuf>,
    /// Serve beyond loopback without TLS or authentication
    /// (`--insecure`), for a TLS-terminating proxy or a mesh in front;
    /// warned about at every start.
    pub insecure: bool,
    /// Reflection needs no token (`--open-reflection`); by default it
    /// needs the `read` scope once authentication is on.
    pub open_reflection: bool,
    /// CIDRs HTTP actions may connect to although a built-in rule denies
    /// them (`--http-allow`); the most specific prefix decides.
    pub http_allow: Vec<String>,
    /// CIDRs HTTP actions may not connect to (`--http-deny`), such as the
    /// private ranges when internal services are off limits.
    pub http_deny: Vec<String>,
    /// Append one JSON line per call that changes a task to this file
    /// (`--audit-log`): time, caller, namespace, method, task id, outcome.
    pub audit_log: Option<PathBuf>,
    /// Audit reads (GetTask, ListTasks, StreamResults) too (`--audit-reads`).
    pub audit_reads: bool,
    /// With [`crate::Server::metrics`]: add per-task series (labelled by
    /// task id) to `/metrics`. Off by default: a series per task is more
    /// than most Prometheus servers should hold at scale.
    pub metrics_per_task: bool,
    /// Serve the dashboard page at `/` on the gRPC port (HTTP/1.1), and
    /// gRPC-Web for its calls. On by default; off, the port speaks plain
    /// gRPC over HTTP/2 only.
    pub dashboard: bool,
    /// Named secrets that `secret_headers` refer to (`--secrets-file`, a
    /// YAML map of name to value); `RECUR_SECRET_<NAME>` variables too.
    pub secrets_file: Option<PathBuf>,
    /// Keys encrypting header values in the Redis store
    /// (`--secret-key-file`, repeated): the first encrypts, all decrypt,
    /// so a key can be rotated.
    pub secret_key_files: Vec<PathBuf>,
    /// Redis actions may only touch keys under this prefix
    /// (`--redis-action-prefix`); commands whose keys cannot be known from
    /// Redis's key specifications are then refused.
    pub redis_action_prefix: Option<String>,
    /// Redis actions run on their own connection to this URL
    /// (`--redis-action-url`), typically as an ACL user confined to the
    /// action prefix, instead of the server's own pool.
    pub redis_action_url: Option<String>,
}

/// The PEM files of the server's TLS.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
    /// CA certificates that sign client certificates (`--tls-client-ca`):
    /// when set, every client must present one it signed, and the
    /// certificate's subject is the caller's identity.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// TLS with `cert` and `key`, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Requires client certificates signed by the CA in `ca`.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>) -> TlsFiles {
        self.client_ca = Some(ca.into());
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            key_prefix: "recur:".to_string(),
            store_shards: 16,
            lease: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            max_tasks: 100_000,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(24 * 3600),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            connection_drain: Duration::from_secs(2),
            results_per_task: 100,
            results_total: 100_000,
            results_max_bytes: 256 * 1024 * 1024,
            results_max_age: Duration::from_secs(7 * 24 * 3600),
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
            first_byte_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            redis_connect_timeout: Duration::from_secs(2),
            redis_response_timeout: Duration::from_secs(5),
            redis_pool_size: 2,
            redis_startup_window: Duration::from_secs(30),
            tls: None,
            auth_tokens: None,
            insecure: false,
            open_reflection: false,
            http_allow: Vec::new(),
            http_deny: Vec::new(),
            audit_log: None,
            audit_reads: false,
            metrics_per_task: false,
            dashboard: true,
            secrets_file: None,
            secret_key_files: Vec::new(),
            redis_action_prefix: None,
            redis_action_url: None,
        }
    }
}

impl Config {
    /// Checks that every value is in its range and that values fit together,
    /// naming the flag (or field) to change. [`crate::Server::run`] calls it
    /// before opening anything; the binary calls it before binding, so a
    /// typo in a flag is a usage error and not a panic or a failure deep in
    /// start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        count("--max-tasks", self.max_tasks, 1, usize::MAX)?;
        count("--results-per-task", self.results_per_task, 1, usize::MAX)?;
        count("--results-total", self.results_total, 1, usize::MAX)?;
        // Semaphores and channels panic outside 1..=MAX_PERMITS.
        count(
            "--max-open-streams",
            self.max_open_streams,
            1,
            Semaphore::MAX_PERMITS,
        )?;
        count(
            "--max-runs-in-flight",
            self.max_runs_in_flight,
            1,
            Semaphore::MAX_PERMITS,
        )?;
        count(
            "Config::stream_buffer",
            self.stream_buffer,
            1,
            Semaphore::MAX_PERMITS,
        )?;
        count(
            "Config::concurrency_per_connection",
            self.concurrency_per_connection,
            1,
            Semaphore::MAX_PERMITS,
        )?;
        count(
            "Config::max_concurrent_streams_per_connection",
            self.max_concurrent_streams_per_connection as usize,
            1,
            usize::MAX,
        )?;
        count(
            "Config::max_message_size",
            self.max_message_size,
            1,
            usize::MAX,
        )?;
        count("--store-shards", self.store_shards as usize, 1, 1024)?;
        if !(LEASE_MIN..=LEASE_MAX).contains(&self.lease) {
            return Err(ConfigError::Invalid {
                setting: "--lease-secs",
                reason: format!(
                    "must be between {} s and {} s",
                    LEASE_MIN.as_secs_f64(),
                    LEASE_MAX.as_secs_f64()
                ),
            });
        }
        if self.key_prefix.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "--key-prefix",
                reason: "must not be empty: the store's keys would mix with everyone's".into(),
            });
        }
        count(
            "Config::redis_pool_size",
            self.redis_pool_size,
            1,
            usize::MAX,
        )?;
        at_least("--min-interval-secs", self.min_interval, MIN_INTERVAL_FLOOR)?;
        // A zero timeout fails every attempt without trying it.
        for (setting, value) in [
            ("Config::default_timeout", self.default_timeout),
            ("Config::max_timeout", self.max_timeout),
            ("Config::http_connect_timeout", self.http_connect_timeout),
            ("Config::http_read_timeout", self.http_read_timeout),
            ("Config::keepalive_interval", self.keepalive_interval),
            ("Config::first_byte_timeout", self.first_byte_timeout),
            ("Config::keepalive_timeout", self.keepalive_timeout),
            ("Config::redis_connect_timeout", self.redis_connect_timeout),
            (
                "Config::redis_response_timeout",
                self.redis_response_timeout,
            ),
        ] {
            at_least(setting, value, Duration::from_millis(1))?;
        }
        if self.default_timeout > self.max_timeout {
            return Err(invalid(
                "Config::default_timeout",
                format!(
                    "must not exceed Config::max_timeout ({}), got {}",
                    secs(self.max_timeout),
                    secs(self.default_timeout)
                ),
            ));
        }
        self.validate_node_id()?;
        self.address_policy()?;
        if let Some(prefix) = &self.redis_action_prefix {
            if self.redis_url.is_none() && self.redis_action_url.is_none() {
                return Err(invalid(
                    "--redis-action-prefix",
                    "needs --redis-url or --redis-action-url: there is no Redis for actions".into(),
                ));
            }
            if prefix.is_empty() || prefix.starts_with(&self.key_prefix) {
                return Err(invalid(
                    "--redis-action-prefix",
                    format!(
                        "must be non-empty and outside --key-prefix {:?}, whose keys actions may never touch, got {prefix:?}",
                        self.key_prefix
                    ),
                ));
            }
        }
        if let Some(url) = &self.redis_action_url {
            url.as_str()
                .into_connection_info()
                .map_err(|e| invalid("--redis-action-url", format!("not a Redis URL: {e}")))?;
        }
        if let Some(tls) = &self.tls {
            for (setting, path) in [("--tls-cert", &tls.cert), ("--tls-key", &tls.key)] {
                if path.as_os_str().is_empty() {
                    return Err(invalid(setting, "must name a PEM file".into()));
                }
            }
        }
        if let Some(url) = &self.redis_url {
            // The URL is not repeated: it may carry a password.
            url.as_str()
                .into_connection_info()
                .map_err(|e| invalid("--redis-url", format!("not a Redis URL: {e}")))?;
        }
        Ok(())
    }

    /// The address policy of HTTP actions from `http_allow` and `http_deny`.
    pub(crate) fn address_policy(
        &self,
    ) -> Result<crate::action::address::AddressPolicy, ConfigError> {
        crate::action::address::AddressPolicy::new(&self.http_allow, &self.http_deny).map_err(|e| {
            ConfigError::Invalid {
                setting: e.setting,
                reason: format!("{:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8", e.value),
            }
        })
    }

    /// Whether calls are authenticated: with an access file, or with mTLS
    /// (a certificate signed by the client CA is then the credential).
    pub fn authenticates(&self) -> bool {
        self.auth_tokens.is_some() || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }

    /// Secure by default: loopback needs nothing; any other address needs
    /// authentication, and tokens need TLS (they would travel in clear
    /// otherwise), unless `insecure` says a proxy or mesh does that.
    /// [`crate::Server::run`] checks it against the bound address; the
    /// binary checks it before binding.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if listen.ip().to_canonical().is_loopback() || self.insecure {
            return Ok(());
        }
        let problem = match (&self.tls, self.authenticates()) {
            (Some(_), true) => return Ok(()),
            (None, true) => "bearer tokens would travel in clear without TLS",
            (Some(_), false) => "TLS alone lets anyone who reaches the port in",
            (None, false) => "anyone who reaches the port could run any task",
        };
        Err(invalid(
            "--listen",
            format!(
                "{listen} is beyond loopback and {problem}: give --tls-cert and --tls-key with \
                 --auth-tokens (or --tls-client-ca for mTLS), or --insecure if a TLS-terminating \
                 proxy or mesh authenticates callers"
            ),
        ))
    }

    /// The node id names Redis connections (`CLIENT SETNAME recur:<id>`),
    /// which Redis refuses with spaces or control characters; refused
    /// there, every connection would fail and start-up would retry for the
    /// whole window before reporting Redis "unreachable".
    fn validate_node_id(&self) -> Result<(), ConfigError> {
        if self.node_id.is_empty() {
            return Err(invalid("--node-id", "must not be empty".to_string()));
        }
        if let Some(c) = self.node_id.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(invalid(
                "--node-id",
                format!(
                    "must be printable ASCII without spaces (it names Redis connections), got {c:?} in {:?}",
                    self.node_id
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(setting: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { setting, reason }
}

/// Checks `min <= value <= max`.
fn count(setting: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            setting,
            format!("must be at least {min}, got {value}"),
        ));
    }
    if value > max {
        return Err(invalid(
            setting,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks `value >= min`.
fn at_least(setting: &'static str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            setting,
            format!("must be at least {}, got {}", secs(min), secs(value)),
        ));
    }
    Ok(())
}

/// A duration in seconds, as the `--*-secs` flags take it.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    fn error_of(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        change(&mut config);
        config.validate().expect_err("invalid").to_string()
    }

    /// One way to break a default config.
    type Change = fn(&mut Config);

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let cases: [(Change, &str); 12] = [
            (
                |c| c.max_open_streams = 0,
                "invalid --max-open-streams: must be at least 1, got 0",
            ),
            (
                |c| c.max_open_streams = usize::MAX,
                "invalid --max-open-streams: must be at most",
            ),
            (|c| c.max_tasks = 0, "invalid --max-tasks:"),
            (|c| c.results_per_task = 0, "invalid --results-per-task:"),
            (|c| c.results_total = 0, "invalid --results-total:"),
            (|c| c.stream_buffer = 0, "invalid Config::stream_buffer:"),
            (
                |c| c.redis_pool_size = 0,
                "invalid Config::redis_pool_size:",
            ),
            (
                |c| c.min_interval = Duration::from_micros(100),
                "invalid --min-interval-secs: must be at least 0.001s, got 0.0001s",
            ),
            (
                |c| c.default_timeout = c.max_timeout + Duration::from_secs(1),
                "invalid Config::default_timeout: must not exceed Config::max_timeout",
            ),
            (
                |c| c.node_id = "my node".into(),
                "invalid --node-id: must be printable ASCII",
            ),
            (
                |c| c.node_id = String::new(),
                "invalid --node-id: must not be empty",
            ),
            (
                |c| c.redis_url = Some("localhost:6379".into()),
                "invalid --redis-url: not a Redis URL",
            ),
        ];
        for (change, expected) in cases {
            let message = error_of(change);
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn a_redis_url_password_is_not_repeated() {
        let message = error_of(|c| c.redis_url = Some("nosuch://user:hunter2@host/".into()));
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn beyond_loopback_needs_authentication_over_tls_or_insecure() {
        let any: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        for loopback in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            let addr = loopback.parse().expect("addr");
            assert_eq!(Config::default().check_exposure(addr), Ok(()), "{loopback}");
        }
        let refused: [Change; 3] = [
            |_| {},
            |c| c.auth_tokens = Some("tokens.yaml".into()),
            |c| c.tls = Some(TlsFiles::new("c.pem", "k.pem")),
        ];
        for change in refused {
            let mut config = Config::default();
            change(&mut config);
            let message = config.check_exposure(any).expect_err("refused").to_string();
            for flag in ["--tls-cert", "--auth-tokens", "--insecure"] {
                assert!(message.contains(flag), "{message}");
            }
        }
        let allowed: [Change; 3] = [
            |c| {
                c.tls = Some(TlsFiles::new("c.pem", "k.pem"));
                c.auth_tokens = Some("tokens.yaml".into());
            },
            |c| c.tls = Some(TlsFiles::new("c.pem", "k.pem").client_ca("ca.pem")),
            |c| c.insecure = true,
        ];
        for change in allowed {
            let mut config = Config::default();
            change(&mut config);
            assert_eq!(config.check_exposure(any), Ok(()));
        }
    }
}
