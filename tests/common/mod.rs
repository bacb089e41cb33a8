//! Test harness: a real server on an ephemeral port with the generated
//! client, an HTTP target that records what it receives, and Redis helpers.

#![allow(dead_code)]

pub mod binary;
pub mod handlers;
pub mod http_target;
pub mod pki;
pub mod proxy;
pub mod redis;

use std::{net::SocketAddr, time::Duration};

use recur::{
    Config, Server, ServerError,
    pb::v1::{self as pb, task_service_client::TaskServiceClient},
    results::stream::StreamGauge,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Generous bound for waiting on something that should happen quickly; tests
/// fail with a message instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// A config suited to tests: short grace and drain so shutdown tests are quick.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.shutdown_grace = Duration::from_secs(2);
    config.connection_drain = Duration::from_secs(1);
    config
}

/// A running server. Dropping it cancels it; `stop` also waits for it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: TaskServiceClient<Channel>,
    pub open_streams: StreamGauge,
    shutdown: CancellationToken,
    /// Cuts the shutdown delay short, as a second signal does in the binary.
    hurry: CancellationToken,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config(), |s| s).await
    }

    /// Binds port 0 first, then runs the server, so no sleep is needed before
    /// connecting: the kernel queues connections until the server accepts.
    pub async fn start_with(config: Config, build: impl FnOnce(Server) -> Server) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = build(Server::new(config));
        let open_streams = server.open_streams();
        let shutdown = CancellationToken::new();
        let hurry = CancellationToken::new();
        let handle = tokio::spawn(server.run_with_signals(
            listener,
            shutdown.clone().cancelled_owned(),
            hurry.clone().cancelled_owned(),
        ));
        let client = connect(addr).await;
        TestServer {
            addr,
            client,
            open_streams,
            shutdown,
            hurry,
            handle: Some(handle),
        }
    }

    /// A client on a new connection, or None when the server no longer accepts.
    pub async fn try_connect(addr: SocketAddr) -> Option<TaskServiceClient<Channel>> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        Some(TaskServiceClient::new(channel))
    }

    /// A client on a new connection.
    pub async fn new_client(&self) -> TaskServiceClient<Channel> {
        connect(self.addr).await
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("server did not stop within 60s")
            .expect("server task panicked")
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Ends the shutdown delay early, like a second SIGTERM.
    pub fn hurry_shutdown(&self) {
        self.hurry.cancel();
    }

    /// Takes the join handle (to await `run` elsewhere).
    pub fn take_handle(&mut self) -> JoinHandle<Result<(), ServerError>> {
        self.handle.take().expect("running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.hurry.cancel();
    }
}

pub async fn connect(addr: SocketAddr) -> TaskServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    TaskServiceClient::new(channel)
}

/// A spec running `action` every `every`.
pub fn spec_every(every: Duration, action: pb::action::Kind) -> pb::TaskSpec {
    pb::TaskSpec {
        schedule: Some(pb::Schedule {
            cadence: Some(pb::schedule::Cadence::Every(prost_types::Duration {
                seconds: every.as_secs() as i64,
                nanos: every.subsec_nanos() as i32,
            })),
            ..Default::default()
        }),
        action: Some(pb::Action { kind: Some(action) }),
        ..Default::default()
    }
}

/// An HTTP GET action.
pub fn http_get(url: &str) -> pb::action::Kind {
    pb::action::Kind::Http(pb::HttpAction {
        method: "GET".into(),
        url: url.into(),
        ..Default::default()
    })
}

/// A custom action.
pub fn custom(kind: &str, payload: &[u8]) -> pb::action::Kind {
    pb::action::Kind::Custom(pb::CustomAction {
        kind: kind.into(),
        payload: payload.to_vec(),
    })
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Registers `spec` as `id`.
pub async fn register(
    client: &mut TaskServiceClient<Channel>,
    id: &str,
    spec: pb::TaskSpec,
) -> pb::Task {
    client
        .register_task(pb::RegisterTaskRequest {
            task_id: id.into(),
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("register {id}: {s:?}"))
        .into_inner()
}

/// Opens a result stream.
pub async fn stream(
    client: &mut TaskServiceClient<Channel>,
    task_ids: &[&str],
    after_cursor: &str,
    history_only: bool,
) -> tonic::Streaming<pb::TaskResult> {
    client
        .stream_results(pb::StreamResultsRequest {
            task_ids: task_ids.iter().map(|s| s.to_string()).collect(),
            after_cursor: after_cursor.into(),
            history_only,
        })
        .await
        .expect("stream_results")
        .into_inner()
}

/// The next message of a stream, failing the test after [`WAIT`].
pub async fn next_result(
    stream: &mut tonic::Streaming<pb::TaskResult>,
) -> Result<Option<pb::TaskResult>, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no stream message within the wait bound")
}

/// The next WatchTasks event, failing the test after [`WAIT`].
pub async fn next_event(events: &mut tonic::Streaming<pb::TaskEvent>) -> pb::TaskEvent {
    tokio::time::timeout(WAIT, events.message())
        .await
        .expect("an event within the wait bound")
        .expect("the stream goes on")
        .expect("an event")
}

/// Waits until `check` holds, polling `probe`; for state visible only by
/// reading (e.g. a gauge), with a failure message instead of a hang.
pub async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The every-interval of a task's schedule, in seconds.
pub fn every_secs(task: &pb::Task) -> i64 {
    match task
        .spec
        .as_ref()
        .and_then(|s| s.schedule.as_ref())
        .and_then(|s| s.cadence.as_ref())
    {
        Some(pb::schedule::Cadence::Every(d)) => d.seconds,
        other => panic!("not an every schedule: {other:?}"),
    }
}

/// Reads a task, failing the test if it cannot.
pub async fn get(client: &mut TaskServiceClient<Channel>, id: &str) -> pb::Task {
    client
        .get_task(pb::GetTaskRequest {
            task_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("get {id}: {s:?}"))
        .into_inner()
}

/// Triggers a manual run of `id`, failing the test if it is refused.
pub async fn trigger(client: &mut TaskServiceClient<Channel>, id: &str) {
    client
        .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
        .await
        .unwrap_or_else(|s| panic!("trigger {id}: {s:?}"));
}

/// Every result retained after `start` ("": all), replayed.
pub async fn history(client: &mut TaskServiceClient<Channel>, start: &str) -> Vec<pb::TaskResult> {
    let mut replay = stream(client, &[], start, true).await;
    let mut out = Vec::new();
    while let Some(r) = next_result(&mut replay).await.expect("replay") {
        out.push(r);
    }
    out
}

pub fn outcome(r: &pb::TaskResult) -> pb::Outcome {
    pb::Outcome::try_from(r.outcome).expect("outcome")
}

pub fn state(t: &pb::Task) -> pb::TaskState {
    pb::TaskState::try_from(t.state).expect("state")
}
