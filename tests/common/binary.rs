//! The `recur` binary as a child process on a Redis store: started,
//! stopped with SIGTERM, killed with kill -9.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use recur::pb::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;

/// How long the binary may take to accept connections.
pub const START_WAIT: Duration = Duration::from_secs(20);

/// A `recur serve` process on a Redis store.
pub struct Recur {
    pub child: Child,
    pub addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Recur {
    /// Starts the binary on `redis` under `prefix` and waits until it
    /// accepts connections.
    pub async fn start(redis: &str, prefix: &str) -> Recur {
        Recur::start_with(redis, prefix, &[]).await
    }

    /// [`Recur::start`] with more flags.
    pub async fn start_with(redis: &str, prefix: &str, flags: &[&str]) -> Recur {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--redis-url", redis, "--key-prefix", prefix])
            .args(["--min-interval-secs", "0.05", "--shutdown-grace-secs", "1"])
            .args(flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn the recur binary");
        let mut process = Recur { child, addr, log };
        let deadline = Instant::now() + START_WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                panic!("recur exited during start ({status}):\n{}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "recur did not accept in time:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub async fn client(&self) -> TaskServiceClient<Channel> {
        super::connect(self.addr).await
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(self) {
        self.sigterm();
        self.exited().await;
    }

    /// Waits for a clean exit (after [`Recur::sigterm`]).
    pub async fn exited(mut self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "exit {status}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kill -9: no shutdown step runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Recur {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
