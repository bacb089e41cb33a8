//! The benchmark's tasks as gRPC requests: a no-op (or HTTP) action every
//! second (or another cadence), with slots laid out by phase, registered in
//! parallel batches so a 100,000-task scenario does not spend its time on
//! round trips.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use recur::pb::v1::{
    self as pb, RegisterTaskRequest, TaskSpec, action::Kind, schedule::Cadence,
    task_service_client::TaskServiceClient,
};
use tonic::transport::Channel;

use crate::{cli::Phase, server::NOOP_KIND};

/// Prefix of the ids of tasks whose results the collectors account for; the
/// rest of the id is the task's index.
pub const FIRING_PREFIX: &str = "t";

/// Registration calls in flight at once: enough to hide the round trip on
/// loopback, few enough not to be shed by the server's per-connection limit.
const REGISTER_CONCURRENCY: usize = 32;

/// Connections registration spreads over, so the server's connection tasks
/// can run on both cores.
const REGISTER_CONNECTIONS: usize = 4;

/// Id of the `index`-th benchmark task.
pub fn task_id(index: usize) -> String {
    format!("{FIRING_PREFIX}{index}")
}

/// Index of a benchmark task from its id; None for other tasks.
pub fn task_index(task_id: &str) -> Option<u32> {
    task_id.strip_prefix(FIRING_PREFIX)?.parse().ok()
}

/// Offset of the `index`-th task's slots within its cadence `every`, in
/// whole milliseconds (occurrence ids carry milliseconds, so slots stay
/// exact). A fixed hash (splitmix64) rather than a random generator: the
/// same layout on every run (at 1 s, the one the Python peers compute).
pub fn phase_offset(phase: Phase, index: usize, every: Duration) -> Duration {
    match phase {
        Phase::Herd => Duration::ZERO,
        Phase::Random => {
            let mut z = (index as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            Duration::from_millis(z % (every.as_millis() as u64).max(1))
        }
    }
}

/// Slots of a task anchored at `first` (every `every`) that fall in `[from, to)`.
pub fn slots_in(
    first: DateTime<Utc>,
    every: Duration,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> u64 {
    let period = (every.as_micros() as i64).max(1);
    let count_before = |t: DateTime<Utc>| -> i64 {
        // Slots at first + k * every, k >= 0, strictly before t.
        let micros = (t - first).num_microseconds().unwrap_or(0);
        if micros <= 0 {
            0
        } else {
            (micros + period - 1) / period
        }
    };
    (count_before(to) - count_before(from)).max(0) as u64
}

/// Protobuf timestamp of a chrono instant.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Chrono instant of a protobuf timestamp (the epoch for a missing one).
pub fn instant(t: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default()
}

/// Microseconds from `earlier` to `later`.
pub fn micros_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> i64 {
    (later - earlier).num_microseconds().unwrap_or(i64::MAX)
}

/// What a benchmark task does each second.
#[derive(Debug, Clone)]
pub enum Work {
    /// The no-op custom kind.
    Noop,
    /// GET this URL (the task index is appended).
    Http(String),
}

/// A spec running `work` every `every`, first at `start_at`.
pub fn spec(work: &Work, index: usize, every: Duration, start_at: DateTime<Utc>) -> TaskSpec {
    let kind = match work {
        Work::Noop => Kind::Custom(pb::CustomAction {
            kind: NOOP_KIND.to_string(),
            payload: Vec::new(),
        }),
        Work::Http(base) => Kind::Http(pb::HttpAction {
            method: "GET".to_string(),
            url: format!("{base}{index}"),
            ..Default::default()
        }),
    };
    TaskSpec {
        schedule: Some(pb::Schedule {
            cadence: Some(Cadence::Every(prost_types::Duration {
                seconds: every.as_secs() as i64,
                nanos: every.subsec_nanos() as i32,
            })),
            start_at: Some(timestamp(start_at)),
            ..Default::default()
        }),
        action: Some(pb::Action { kind: Some(kind) }),
        timeout: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Registers tasks `0..count` (`task_id(i)`, every `every`, first slot at
/// `base + phase_offset(phase, i, every)`) and returns how long it took.
pub async fn register_all(
    clients: &[TaskServiceClient<Channel>],
    count: usize,
    work: &Work,
    phase: Phase,
    every: Duration,
    base: DateTime<Utc>,
) -> Duration {
    let started = Instant::now();
    let workers = REGISTER_CONCURRENCY.min(count.max(1));
    let mut handles = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut client = clients[worker % clients.len()].clone();
        let work = work.clone();
        handles.push(tokio::spawn(async move {
            // Worker w registers w, w + workers, w + 2 * workers, ...
            for index in (worker..count).step_by(workers) {
                let start_at = base + phase_offset(phase, index, every);
                let request = RegisterTaskRequest {
                    task_id: task_id(index),
                    spec: Some(spec(&work, index, every, start_at)),
                    request_id: String::new(),
                    ..Default::default()
                };
                client
                    .register_task(request)
                    .await
                    .unwrap_or_else(|s| panic!("RegisterTask {}: {s}", task_id(index)));
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a registration worker panicked");
    }
    started.elapsed()
}

/// `REGISTER_CONNECTIONS` clients on their own connections.
pub async fn register_clients(
    server: &crate::server::ServerProcess,
) -> Vec<TaskServiceClient<Channel>> {
    let mut clients = Vec::with_capacity(REGISTER_CONNECTIONS);
    for _ in 0..REGISTER_CONNECTIONS {
        clients.push(server.client().await);
    }
    clients
}
