//! The `recur` binary: flags and environment to [`recur::Config`], logging,
//! bind, and [`recur::server::run`] until SIGINT or SIGTERM.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "recur",
    version,
    about = "A periodic-task service controlled over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Serve),
}

#[derive(Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, env = "RECUR_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Redis URL, e.g. redis://127.0.0.1:6379. Enables Redis actions.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
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
    /// Seconds runs in flight may take to finish at shutdown before they are cancelled.
    #[arg(long, env = "RECUR_SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    shutdown_grace_secs: f64,
    /// Results kept per task.
    #[arg(long, env = "RECUR_RESULTS_PER_TASK", default_value_t = 100)]
    results_per_task: usize,
    /// Results kept in total.
    #[arg(long, env = "RECUR_RESULTS_TOTAL", default_value_t = 100_000)]
    results_total: usize,
    /// Seconds start-up keeps retrying an unreachable Redis before exiting.
    #[arg(long, env = "RECUR_REDIS_STARTUP_SECS", default_value_t = 30.0)]
    redis_startup_secs: f64,
    /// Most result streams open at once.
    #[arg(long, env = "RECUR_MAX_OPEN_STREAMS", default_value_t = 1024)]
    max_open_streams: usize,
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
        config.shutdown_grace = seconds("--shutdown-grace-secs", self.shutdown_grace_secs)?;
        config.results_per_task = self.results_per_task;
        config.results_total = self.results_total;
        config.max_open_streams = self.max_open_streams;
        config.redis_startup_window = seconds("--redis-startup-secs", self.redis_startup_secs)?;
        // Checked here as well as in `run`, so a bad flag is a usage error
        // (exit 2) before the port is bound.
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(serve) = cli.command;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if serve.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match serve.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("recur: {message}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    let listener = match tokio::net::TcpListener::bind(serve.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(addr = %serve.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match recur::server::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// while start-up waits for Redis still shuts down gracefully.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}
