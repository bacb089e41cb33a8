//! Redis for tests. The shared server on 127.0.0.1:6379 is used under a
//! random key prefix and never flushed; tests that stop or break Redis spawn
//! their own `redis-server` on a free port, killed on drop.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub const SHARED_URL: &str = "redis://127.0.0.1:6379";

/// A random prefix for keys a test writes to the shared Redis.
pub fn random_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A connection to `url`.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// Names of the clients `CLIENT LIST` shows.
pub async fn client_names(url: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|kv| kv.strip_prefix("name=")))
        .map(str::to_string)
        .collect()
}

/// A private redis-server on a free port; its log goes into failure messages.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
    /// Where it keeps its append-only file, when it persists.
    dir: Option<std::path::PathBuf>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        Self::start_on(free_port())
    }

    /// One that keeps its data across restarts (appendonly, fsync always)
    /// in `dir`.
    pub fn start_persistent(dir: &std::path::Path) -> OwnRedis {
        Self::spawn(free_port(), Some(dir.to_path_buf()))
    }

    /// Starts it again on its port, with its data if it persists.
    pub fn restart(&mut self) {
        self.stop();
        *self = Self::spawn(self.port, self.dir.clone());
    }

    pub fn start_on(port: u16) -> OwnRedis {
        Self::spawn(port, None)
    }

    fn spawn(port: u16, dir: Option<std::path::PathBuf>) -> OwnRedis {
        let persistence: Vec<String> = match &dir {
            Some(dir) => vec![
                "--dir".into(),
                dir.to_string_lossy().into_owned(),
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
            ],
            None => vec!["--appendonly".into(), "no".into()],
        };
        let log = tempfile::NamedTempFile::new().expect("log file");
        let log_path = log.path().to_string_lossy().into_owned();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--logfile",
                &log_path,
            ])
            .args(&persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        // Wait for it to accept connections (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on {port}; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis {
            port,
            child,
            log,
            dir,
        }
    }

    /// What redis-server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
