//! Follows every result over StreamResults and accounts for the runs whose
//! slot falls in a measure window: lateness (`started_at - scheduled_at`),
//! fires against the expected number, doubles, skips. A reader that falls
//! behind is told so by the server and resumes from its cursor, so the
//! collector itself never makes a fire look missed.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use recur::{
    api::status::RESUME_CURSOR_TRAILER,
    pb::v1::{Outcome, StreamResultsRequest, TaskResult, task_service_client::TaskServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

use crate::tasks::{instant, micros_between, task_index};

/// Stream restarts after which the collector gives up (each restart is a
/// lag or a gap; thousands mean the measurement itself is broken).
const MAX_RESTARTS: u32 = 10_000;

/// The slots a scenario measures: `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First instant measured (after the warm-up).
    pub start: DateTime<Utc>,
    /// First instant no longer measured.
    pub end: DateTime<Utc>,
}

impl Window {
    fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// What the collector saw of the window's slots.
#[derive(Debug, Default)]
pub struct Tally {
    /// `started_at - scheduled_at` of every run in the window, first delivery only.
    pub lateness_us: Vec<i64>,
    /// Distinct slots in the window that ran.
    pub fired: u64,
    /// Slots in the window that ran more than once (distinct run numbers).
    pub doubled: u64,
    /// Results delivered twice (same task and run): a stream bug, not a fire.
    pub duplicate_deliveries: u64,
    /// Slots the server reported SKIPPED (a run still in flight).
    pub skipped: u64,
    /// Runs in the window that did not succeed (failed, timed out, cancelled).
    pub unsuccessful: u64,
    /// Times the stream ended with RESOURCE_EXHAUSTED and was resumed.
    pub lag_resumes: u32,
    /// Times the resume cursor had left retention (DATA_LOSS): results in
    /// between were not observed, so missing fires may be the stream's.
    pub gaps: u32,
    /// Tasks that had not reported a slot past the window when the
    /// collector stopped waiting: their window slots may still have run.
    pub unsettled: usize,
}

/// A running collector; `finish` stops it and returns the tally.
pub struct Collector {
    settled: Arc<AtomicUsize>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Tally>,
}

impl Collector {
    /// Opens a live stream of every result before any task is registered,
    /// so nothing the window needs can be published before it listens.
    /// `tasks` is how many benchmark tasks there will be.
    pub async fn start(
        client: TaskServiceClient<Channel>,
        tasks: usize,
        window: Window,
    ) -> Collector {
        let settled = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let first = open(client.clone(), String::new()).await;
        let handle = tokio::spawn(follow(
            client,
            first,
            tasks,
            window,
            settled.clone(),
            stop.clone(),
        ));
        Collector {
            settled,
            stop,
            handle,
        }
    }

    /// Waits until every task has reported a slot at or after the window's
    /// end (so each of its window slots has run or been passed over), or
    /// until `limit`; then stops and returns the tally.
    pub async fn finish(self, tasks: usize, limit: Duration) -> Tally {
        let deadline = tokio::time::Instant::now() + limit;
        while self.settled.load(Ordering::Relaxed) < tasks && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.cancel();
        let mut tally = self.handle.await.expect("the result collector panicked");
        tally.unsettled = tasks.saturating_sub(self.settled.load(Ordering::Relaxed));
        tally
    }
}

type Results = tonic::Streaming<TaskResult>;

async fn open(mut client: TaskServiceClient<Channel>, after_cursor: String) -> Results {
    try_open(&mut client, after_cursor)
        .await
        .expect("opening StreamResults for the collector")
}

async fn try_open(
    client: &mut TaskServiceClient<Channel>,
    after_cursor: String,
) -> Result<Results, tonic::Status> {
    Ok(client
        .stream_results(StreamResultsRequest {
            task_ids: Vec::new(),
            after_cursor,
            history_only: false,
        })
        .await?
        .into_inner())
}

/// Reopens after `cursor`; when retention dropped results after it
/// (DATA_LOSS), counts the gap and goes on from the oldest result held, or
/// (if retention moves faster than that) from now.
async fn reopen(
    client: &TaskServiceClient<Channel>,
    mut cursor: String,
    tally: &mut Tally,
) -> Results {
    let mut client = client.clone();
    for _ in 0..3 {
        match try_open(&mut client, cursor).await {
            Ok(stream) => return stream,
            Err(status) if status.code() == Code::DataLoss => {
                tally.gaps += 1;
                cursor = status
                    .metadata()
                    .get(RESUME_CURSOR_TRAILER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
            }
            Err(status) => panic!("reopening StreamResults for the collector: {status}"),
        }
    }
    open(client, String::new()).await
}

async fn follow(
    client: TaskServiceClient<Channel>,
    mut stream: Results,
    tasks: usize,
    window: Window,
    settled: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    // Slot -> run number, for the window's slots: (task index, slot in µs).
    let mut seen: HashMap<(u32, i64), u64> = HashMap::new();
    let mut task_settled = vec![false; tasks];
    let mut last_cursor = String::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = stream.message() => message,
        };
        let result = match message {
            Ok(Some(result)) => result,
            Ok(None) => break,
            Err(status) if tally.lag_resumes + tally.gaps >= MAX_RESTARTS => {
                eprintln!("collector: giving up after {MAX_RESTARTS} restarts: {status}");
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tally.lag_resumes += 1;
                let resume = status
                    .metadata()
                    .get(RESUME_CURSOR_TRAILER)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| last_cursor.clone(), str::to_string);
                stream = reopen(&client, resume, &mut tally).await;
                continue;
            }
            Err(status) if status.code() == Code::DataLoss => {
                // The cursor left retention; follow live results from here.
                tally.gaps += 1;
                stream = open(client.clone(), String::new()).await;
                continue;
            }
            Err(status) => {
                eprintln!("collector: result stream ended: {status}");
                break;
            }
        };
        last_cursor.clone_from(&result.cursor);
        let Some(index) = task_index(&result.task_id) else {
            continue;
        };
        let scheduled_at = instant(result.scheduled_at.as_ref());
        if scheduled_at >= window.end {
            if let Some(done) = task_settled.get_mut(index as usize)
                && !*done
            {
                *done = true;
                settled.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if !window.contains(scheduled_at) {
            continue;
        }
        if result.outcome() == Outcome::Skipped {
            tally.skipped += 1;
            continue;
        }
        let slot = scheduled_at.timestamp_micros();
        match seen.insert((index, slot), result.run) {
            None => {
                tally.fired += 1;
                let started_at = instant(result.started_at.as_ref());
                tally
                    .lateness_us
                    .push(micros_between(scheduled_at, started_at));
                if result.outcome() != Outcome::Succeeded {
                    tally.unsuccessful += 1;
                }
            }
            Some(run) if run == result.run => tally.duplicate_deliveries += 1,
            Some(_) => tally.doubled += 1,
        }
    }
    tally
}
