//! The `recur` binary: flags and environment to [`recur::Config`], logging,
//! bind, and [`recur::Server::run_with_signals`] until SIGINT or SIGTERM (a
//! second one cuts the shutdown delay short).

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

#[cfg(feature = "otel")]
mod otel;
mod task;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, Layer, fmt::time::ChronoUtc, prelude::*};

/// jemalloc rather than the system allocator: see Cargo.toml (a herd's
/// runs started a third sooner, on a third less CPU).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "recur",
    version,
    about = "A periodic-task service controlled over gRPC"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<Serve>),
    /// Register, inspect and control tasks on a running server.
    Task(Box<task::TaskArgs>),
    /// Bearer tokens for the access file (--auth-tokens).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Keys for encrypting header values at rest (--secret-key-file).
    #[command(subcommand)]
    SecretKey(SecretKeyCommand),
}

#[derive(Subcommand)]
enum SecretKeyCommand {
    /// Write a fresh random 32-byte key to FILE (created, mode 0600; an
    /// existing file is never overwritten).
    ///
    /// Example: recur secret-key new /etc/recur/secret.key
    New {
        /// Where to write the key.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token once, and the access-file entry that
    /// lets it in (only its SHA-256 is stored).
    ///
    /// Example: recur token new --name ci --scopes read,write --namespace team-a.
    New(NewToken),
}

#[derive(Args)]
struct NewToken {
    /// Shown in audit events and errors instead of the token.
    #[arg(long)]
    name: String,
    /// Comma-separated: read, write, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// The task-id prefix the token is confined to (e.g. team-a.).
    #[arg(long)]
    namespace: Option<String>,
}

#[derive(Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, env = "RECUR_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Redis URL, e.g. redis://127.0.0.1:6379. Makes Redis the system of
    /// record (tasks survive restarts) and enables Redis actions.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key the server owns (the store's keys).
    #[arg(long, env = "RECUR_KEY_PREFIX", default_value = "recur:")]
    key_prefix: String,
    /// Shards of the Redis store's tasks and due index. Fixed for the life
    /// of a store.
    #[arg(long, env = "RECUR_STORE_SHARDS", default_value_t = 16)]
    store_shards: u32,
    /// Seconds a replica's lease on Redis lasts unless renewed (every
    /// fifth of it): a killed replica's tasks fire elsewhere after at most
    /// this plus one renewal.
    #[arg(long, env = "RECUR_LEASE_SECS", default_value_t = 5.0)]
    lease_secs: f64,
    /// Node id shown in logs and in Redis CLIENT LIST (default: random).
    #[arg(long, env = "RECUR_NODE_ID")]
    node_id: Option<String>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "RECUR_LOG_JSON")]
    log_json: bool,
    /// Shortest interval a task may use, in seconds.
    #[arg(long, env = "RECUR_MIN_INTERVAL_SECS", default_value_t = 1.0)]
    min_interval_secs: f64,
    /// Most tasks the server holds.
    #[arg(long, env = "RECUR_MAX_TASKS", default_value_t = 100_000)]
    max_tasks: usize,
    /// Seconds the server keeps serving after SIGINT/SIGTERM with health
    /// NOT_SERVING, so a load balancer can move traffic away first; a second
    /// signal cuts it short.
    #[arg(
        long,
        alias = "shutdown-delay",
        env = "RECUR_SHUTDOWN_DELAY_SECS",
        default_value_t = 0.0
    )]
    shutdown_delay_secs: f64,
    /// Seconds runs in flight may take to finish at shutdown before they are cancelled.
    #[arg(long, env = "RECUR_SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    shutdown_grace_secs: f64,
    /// Results kept per task.
    #[arg(long, env = "RECUR_RESULTS_PER_TASK", default_value_t = 100)]
    results_per_task: usize,
    /// Results kept in total.
    #[arg(long, env = "RECUR_RESULTS_TOTAL", default_value_t = 100_000)]
    results_total: usize,
    /// Output bytes kept in the result log in total.
    #[arg(long, env = "RECUR_RESULTS_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    results_max_bytes: usize,
    /// Hours a result is kept in the Redis result log at most.
    #[arg(long, env = "RECUR_RESULTS_MAX_AGE_HOURS", default_value_t = 168.0)]
    results_max_age_hours: f64,
    /// Seconds start-up keeps retrying an unreachable Redis before exiting.
    #[arg(long, env = "RECUR_REDIS_STARTUP_SECS", default_value_t = 30.0)]
    redis_startup_secs: f64,
    /// Most result streams open at once.
    #[arg(long, env = "RECUR_MAX_OPEN_STREAMS", default_value_t = 1024)]
    max_open_streams: usize,
    /// Most runs going at once; more wait in a queue (see the summary log).
    #[arg(long, env = "RECUR_MAX_RUNS_IN_FLIGHT", default_value_t = 4096)]
    max_runs_in_flight: usize,
    /// Serve TLS with this certificate chain (PEM, leaf first). Reloaded
    /// when the file changes or on SIGHUP.
    #[arg(long, env = "RECUR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RECUR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mTLS. The
    /// certificate's subject is the caller's identity.
    #[arg(long, env = "RECUR_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The access file: bearer tokens and certificate subjects with their
    /// scopes and namespaces (YAML; see the README). Reloaded when it
    /// changes or on SIGHUP.
    #[arg(long, env = "RECUR_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// Allow a listen address beyond loopback without TLS or
    /// authentication, for a TLS-terminating proxy or mesh that provides
    /// both. Warned about at every start.
    #[arg(long, env = "RECUR_INSECURE")]
    insecure: bool,
    /// Let reflection be used without a token (it describes the API, not
    /// the tasks); by default it needs the read scope.
    #[arg(long, env = "RECUR_OPEN_REFLECTION")]
    open_reflection: bool,
    /// CIDRs HTTP actions may reach although a built-in rule denies them
    /// (link-local, multicast, ...); repeat or comma-separate. The most
    /// specific prefix wins, deny on a tie.
    #[arg(long, env = "RECUR_HTTP_ALLOW", value_delimiter = ',')]
    http_allow: Vec<String>,
    /// CIDRs HTTP actions may not reach, e.g. the private ranges:
    /// 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,::1/128,fc00::/7
    #[arg(long, env = "RECUR_HTTP_DENY", value_delimiter = ',')]
    http_deny: Vec<String>,
    /// Append one JSON line per call that changes a task to this file:
    /// time, caller, namespace, method, task id, outcome.
    #[arg(long, env = "RECUR_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Audit reads (GetTask, ListTasks, StreamResults) too.
    #[arg(long, env = "RECUR_AUDIT_READS", requires = "audit_log")]
    audit_reads: bool,
    /// Named secrets for HttpAction.secret_headers: a YAML map of name to
    /// value, reloaded when it changes. RECUR_SECRET_<NAME> works too.
    #[arg(long, env = "RECUR_SECRETS_FILE")]
    secrets_file: Option<PathBuf>,
    /// Encrypt header values in the Redis store with this key (32 bytes,
    /// from `recur secret-key new`). Repeat to rotate: the first encrypts,
    /// every one given decrypts.
    #[arg(long, env = "RECUR_SECRET_KEY_FILE", value_delimiter = ',')]
    secret_key_file: Vec<PathBuf>,
    /// Confine Redis actions to keys under this prefix (e.g. app:); commands
    /// whose keys Redis's key specs cannot tell are refused.
    #[arg(long, env = "RECUR_REDIS_ACTION_PREFIX")]
    redis_action_prefix: Option<String>,
    /// Run Redis actions on their own connection to this URL, e.g. as an
    /// ACL user limited to the action prefix (see the README).
    #[arg(long, env = "RECUR_REDIS_ACTION_URL")]
    redis_action_url: Option<String>,
    /// Serve the dashboard page at / on the gRPC port (HTTP/1.1, its calls
    /// over gRPC-Web). --dashboard=false leaves the port plain gRPC over
    /// HTTP/2.
    #[arg(long, env = "RECUR_DASHBOARD", default_value_t = true, action = clap::ArgAction::Set)]
    dashboard: bool,
    /// Serve Prometheus metrics at /metrics on this address (plain HTTP,
    /// no authentication: bind it where only the scraper reaches, e.g.
    /// 127.0.0.1:9464 or a pod IP). Off by default.
    #[arg(long, env = "RECUR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Add per-task series (labelled by task_id) to /metrics: for
    /// deployments of hundreds of tasks, not 100,000.
    #[arg(long, env = "RECUR_METRICS_PER_TASK", requires = "metrics_listen")]
    metrics_per_task: bool,
    /// Export each run's span (task id, run, occurrence id, trigger; an
    /// attempt span per attempt) over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317.
    #[cfg(feature = "otel")]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of runs traced, 0 to 1.
    #[cfg(feature = "otel")]
    #[arg(long, env = "RECUR_OTLP_SAMPLE_RATIO", default_value_t = 1.0)]
    otlp_sample_ratio: f64,
    /// Which spans are exported, in RUST_LOG syntax (runs and attempts
    /// are recur's DEBUG spans).
    #[cfg(feature = "otel")]
    #[arg(long, env = "RECUR_OTLP_FILTER", default_value = otel::DEFAULT_FILTER)]
    otlp_filter: String,
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("invalid {flag}: {e}"))
}

impl Serve {
    fn config(&self) -> Result<recur::Config, String> {
        let mut config = recur::Config::default();
        config.redis_url = self.redis_url.clone().filter(|u| !u.is_empty());
        if let Some(node_id) = &self.node_id {
            config.node_id = node_id.clone();
        }
        config.min_interval = seconds("--min-interval-secs", self.min_interval_secs)?;
        config.max_tasks = self.max_tasks;
        config.shutdown_delay = seconds("--shutdown-delay-secs", self.shutdown_delay_secs)?;
        config.shutdown_grace = seconds("--shutdown-grace-secs", self.shutdown_grace_secs)?;
        config.results_per_task = self.results_per_task;
        config.results_total = self.results_total;
        config.results_max_bytes = self.results_max_bytes;
        config.results_max_age = seconds(
            "--results-max-age-hours",
            self.results_max_age_hours * 3600.0,
        )?;
        config.key_prefix = self.key_prefix.clone();
        config.store_shards = self.store_shards;
        config.lease = seconds("--lease-secs", self.lease_secs)?;
        config.max_open_streams = self.max_open_streams;
        config.max_runs_in_flight = self.max_runs_in_flight;
        config.redis_startup_window = seconds("--redis-startup-secs", self.redis_startup_secs)?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let mut tls = recur::TlsFiles::new(cert, key);
            if let Some(ca) = &self.tls_client_ca {
                tls = tls.client_ca(ca);
            }
            config.tls = Some(tls);
        }
        config.auth_tokens = self.auth_tokens.clone();
        config.insecure = self.insecure;
        config.open_reflection = self.open_reflection;
        config.http_allow = self.http_allow.clone();
        config.http_deny = self.http_deny.clone();
        config.audit_log = self.audit_log.clone();
        config.audit_reads = self.audit_reads;
        config.secrets_file = self.secrets_file.clone();
        config.secret_key_files = self.secret_key_file.clone();
        config.redis_action_prefix = self.redis_action_prefix.clone();
        config.redis_action_url = self.redis_action_url.clone().filter(|u| !u.is_empty());
        config.metrics_per_task = self.metrics_per_task;
        config.dashboard = self.dashboard;
        config
            .check_exposure(self.listen)
            .map_err(|e| e.to_string())?;
        // Checked here as well as in `run`, so a bad flag is a usage error
        // (exit 2) before the port is bound.
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let serve = match cli.command {
        Command::Serve(serve) => serve,
        Command::Task(args) => return task::run(*args).await,
        Command::Token(TokenCommand::New(new)) => return new_token(&new),
        Command::SecretKey(SecretKeyCommand::New { file }) => return new_secret_key(&file),
    };
    let config = match serve.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("recur: {message}");
            return ExitCode::from(2);
        }
    };
    let tracing = match init_logging(&serve, &config.node_id) {
        Ok(tracing) => tracing,
        Err(message) => {
            eprintln!("recur: {message}");
            return ExitCode::from(2);
        }
    };
    let (shutdown, hurry) = shutdown_signals();
    let listener = match tokio::net::TcpListener::bind(serve.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %serve.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let mut server = recur::Server::new(config);
    if let Some(addr) = serve.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => server = server.metrics(listener),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen for /metrics");
                return ExitCode::FAILURE;
            }
        }
    }
    reload_on_sighup(server.reload_trigger());
    let served = server
        .run_with_signals(
            listener,
            shutdown.cancelled_owned(),
            hurry.cancelled_owned(),
        )
        .await;
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    };
    flush_traces(tracing).await;
    code
}

/// `recur token new`: the token on stdout's first line (once: only its
/// digest is kept), then the entry for the access file.
fn new_token(new: &NewToken) -> ExitCode {
    let scopes: Vec<&str> = new.scopes.iter().map(|s| s.trim()).collect();
    if let Some(bad) = scopes
        .iter()
        .find(|s| recur::access::Scope::parse(s).is_none())
    {
        eprintln!("recur: invalid --scopes: {bad:?} is not one of read, write, admin");
        return ExitCode::from(2);
    }
    if let Some(ns) = &new.namespace
        && let Err(reason) = recur::access::file::check_namespace(ns)
    {
        eprintln!("recur: invalid --namespace: {reason}");
        return ExitCode::from(2);
    }
    let token = match recur::access::token::new_token() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("recur: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{token}");
    println!();
    println!("# Add to the tokens: list of the access file (--auth-tokens).");
    println!("# The token above is shown only now; the file keeps its SHA-256.");
    print!(
        "{}",
        recur::access::token::yaml_entry(&new.name, &scopes, new.namespace.as_deref(), &token)
    );
    ExitCode::SUCCESS
}

/// `recur secret-key new FILE`: a key only its owner can read.
fn new_secret_key(file: &std::path::Path) -> ExitCode {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let key = match recur::secrets::SecretKeys::new_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("recur: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
    match written {
        Ok(()) => {
            println!("wrote a new key to {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("recur: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP reloads the TLS and access files at once (they also reload by
/// themselves when they change).
fn reload_on_sighup(trigger: recur::ReloadTrigger) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; files still reload when they change");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received, reloading the tls and access files");
            trigger.reload();
        }
    });
}

/// The OTLP exporter, kept to flush it at exit (empty without the `otel`
/// feature).
#[derive(Default)]
struct Traces {
    #[cfg(feature = "otel")]
    otel: Option<otel::Otel>,
}

/// Logs go to stderr, stdout being the program's output by convention, with
/// RFC 3339 UTC times in both formats so lines from several hosts sort and
/// compare. Colour only for a person at a terminal: escape codes in a file
/// or a log collector are noise. Each layer has its own filter, so
/// exporting DEBUG run spans over OTLP does not put them in the log.
fn init_logging(serve: &Serve, node_id: &str) -> Result<Traces, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = serve.log_json;
    let colour = !json
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt::layer()
        .with_timer(ChronoUtc::rfc_3339())
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let logs = if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otel")]
    {
        if let Some(endpoint) = &serve.otlp_endpoint {
            let settings = otel::OtelSettings {
                endpoint: endpoint.clone(),
                sample_ratio: serve.otlp_sample_ratio,
                instance: node_id.to_string(),
                filter: serve.otlp_filter.clone(),
            };
            let (exporting, handle) = otel::layer(&settings).map_err(|e| e.to_string())?;
            registry.with(exporting).init();
            tracing::info!(endpoint = %endpoint, "exporting run spans over OTLP");
            return Ok(Traces { otel: Some(handle) });
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = node_id;
    registry.init();
    Ok(Traces::default())
}

/// Sends the spans still buffered, off the runtime's threads (the flush
/// blocks for up to a few seconds).
async fn flush_traces(traces: Traces) {
    #[cfg(feature = "otel")]
    if let Some(otel) = traces.otel {
        let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
    }
    #[cfg(not(feature = "otel"))]
    let Traces {} = traces;
}

/// Tokens cancelled by the first SIGINT or SIGTERM (shut down) and by the
/// second (cut the shutdown delay short). The handlers are installed when
/// this is called, not when a token is first awaited, so a signal that
/// arrives while start-up waits for Redis still shuts down gracefully.
fn shutdown_signals() -> (CancellationToken, CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = CancellationToken::new();
    let hurry = CancellationToken::new();
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return (shutdown, hurry);
    };
    let (first, second) = (shutdown.clone(), hurry.clone());
    tokio::spawn(async move {
        let mut received = 0_u32;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            received += 1;
            match received {
                1 => {
                    tracing::info!(signal = %name, "shutdown signal received");
                    first.cancel();
                }
                2 => {
                    tracing::info!(signal = %name, "second shutdown signal received");
                    second.cancel();
                }
                // Installing a handler replaced the default action for good,
                // so later signals land here rather than killing the process.
                _ => tracing::info!(signal = %name, "shutdown already under way"),
            }
        }
    });
    (shutdown, hurry)
}
