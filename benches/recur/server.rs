//! The measured recur server: this bench binary re-executed with `--serve`,
//! embedding the library with a no-op custom kind, so the OS can account
//! its CPU and memory apart from the load generator. It runs on the memory
//! store, or on the Redis store under the case's prefix. The parent drives
//! it over gRPC on 127.0.0.1 and kills it when the handle is dropped (or
//! stops it and waits, where a case needs it gone before it goes on).

use std::{net::SocketAddr, process::Stdio, time::Duration};

use bytes::Bytes;
use recur::{
    Config, HandlerContext, HandlerError, Server, TaskHandler,
    pb::v1::task_service_client::TaskServiceClient,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStdin, Command},
};
use tonic::transport::Channel;

use crate::store::CaseStore;

/// Custom kind of every benchmark task: returns at once, so what is measured
/// is the scheduler, not the work.
pub const NOOP_KIND: &str = "noop";

/// Bound of the child's start-up (exec, runtime, bind).
const STARTUP: Duration = Duration::from_secs(30);

/// Bound of a graceful stop: the server's shutdown grace and drain (0.5 s
/// each) and closing its Redis pool, with room to spare.
const STOP: Duration = Duration::from_secs(10);

/// The handler of [`NOOP_KIND`].
struct Noop;

#[recur::async_trait]
impl TaskHandler for Noop {
    async fn run(&self, _ctx: HandlerContext) -> Result<Bytes, HandlerError> {
        Ok(Bytes::new())
    }
}

/// Names the audit log of a `--serve` process, when set.
const AUDIT_LOG_ENV: &str = "RECUR_BENCH_AUDIT_LOG";

/// The `--serve` mode: serves recur on 127.0.0.1:0 until stdin closes (the
/// parent exited or dropped its handle), printing `listening <addr>` first.
/// With `redis` (URL, key prefix) Redis is the system of record.
pub fn serve(max_tasks: usize, redis: Option<(String, String)>, node_id: Option<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the server runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        // The parent reads this line to learn the port.
        println!("listening {addr}");
        let mut config = Config::default();
        config.max_tasks = max_tasks;
        // The bench ends servers often; their runs are no-ops.
        config.shutdown_grace = Duration::from_millis(500);
        config.connection_drain = Duration::from_millis(500);
        if let Some((url, prefix)) = redis {
            config.redis_url = Some(url);
            config.key_prefix = prefix;
        }
        if let Some(node_id) = node_id {
            config.node_id = node_id;
        }
        // The RegisterTask row with the audit trail on (issue 8).
        if let Some(path) = std::env::var_os(AUDIT_LOG_ENV) {
            config.audit_log = Some(path.into());
        }
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            // Anything read is ignored; EOF or an error means the parent is gone.
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        Server::new(config)
            .handler(NOOP_KIND, Noop)
            .run(listener, stdin_closed)
            .await
            .expect("recur server failed");
    });
}

/// A running server process. Dropping it closes its stdin (a graceful
/// shutdown) and kills it, so no server outlives the bench.
pub struct ServerProcess {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Its process id, for the CPU and memory probes.
    pub pid: u32,
    /// The pid of the Redis it stores in, when that runs on this machine.
    pub redis_pid: Option<u32>,
    /// Held so that dropping the handle closes the server's stdin.
    _stdin: ChildStdin,
    /// Held with `kill_on_drop`.
    _child: Child,
}

impl ServerProcess {
    /// Starts `<this binary> --serve` holding up to `max_tasks` tasks on `store`.
    pub async fn start(max_tasks: usize, store: &CaseStore) -> ServerProcess {
        Self::start_named(max_tasks, store, None).await
    }

    /// [`ServerProcess::start`] with a node id (a replica's name).
    pub async fn start_named(
        max_tasks: usize,
        store: &CaseStore,
        node_id: Option<&str>,
    ) -> ServerProcess {
        Self::spawn(max_tasks, store, node_id, None).await
    }

    /// [`ServerProcess::start`] writing its audit trail to `audit_log`.
    pub async fn start_audited(
        max_tasks: usize,
        store: &CaseStore,
        audit_log: &std::path::Path,
    ) -> ServerProcess {
        Self::spawn(max_tasks, store, None, Some(audit_log)).await
    }

    async fn spawn(
        max_tasks: usize,
        store: &CaseStore,
        node_id: Option<&str>,
        audit_log: Option<&std::path::Path>,
    ) -> ServerProcess {
        let exe = std::env::current_exe().expect("path of the bench binary");
        let mut command = Command::new(exe);
        if let Some(path) = audit_log {
            command.env(AUDIT_LOG_ENV, path);
        }
        let mut child = command
            .args(["--serve", "--max-tasks", &max_tasks.to_string()])
            .args(store.serve_args())
            .args(node_id.map(|id| ["--node-id", id]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the recur server process");
        let pid = child.id().expect("server pid");
        let stdin = child.stdin.take().expect("server stdin");
        let stdout = child.stdout.take().expect("server stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(STARTUP, lines.next_line())
            .await
            .expect("the server did not print its address within 30 s")
            .expect("reading the server's stdout")
            .expect("the server exited before printing its address");
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        // Drain the rest of its stdout so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            addr,
            pid,
            redis_pid: store.redis_pid(),
            _stdin: stdin,
            _child: child,
        }
    }

    /// Stops the server gracefully (closes its stdin) and waits until it
    /// has exited, so a Redis store has seen its last write (its pool sends
    /// QUIT on every connection); kills it after `STOP`.
    pub async fn stop(self) {
        let ServerProcess {
            _stdin: stdin,
            _child: mut child,
            ..
        } = self;
        drop(stdin);
        match tokio::time::timeout(STOP, child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("  the server exited with {status}"),
            Ok(Err(e)) => eprintln!("  waiting for the server to exit: {e}"),
            Err(_) => eprintln!("  the server did not stop within {STOP:?}: killed"),
        }
    }

    /// kill -9: no shutdown step runs; waits until it is gone.
    pub async fn kill(self) {
        let ServerProcess {
            _child: mut child, ..
        } = self;
        if let Err(e) = child.kill().await {
            eprintln!("  killing the server: {e}");
        }
    }

    /// A client on a new HTTP/2 connection.
    pub async fn client(&self) -> TaskServiceClient<Channel> {
        connect(self.addr).await
    }
}

/// A client on a new connection to `addr`, with no message size cap beyond
/// the server's own.
pub async fn connect(addr: SocketAddr) -> TaskServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to the recur server at {addr}: {e}"));
    TaskServiceClient::new(channel)
}
