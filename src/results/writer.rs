//! The one result writer. Runs, firings and control calls hand it results
//! and task ends over an unbounded channel (bounded in practice by the cap
//! of runs in flight plus one skipped slot per task); it takes whatever is
//! waiting, records it in one store call, publishes it in cursor order and
//! hands promoted buffered runs back to the scheduler. Being the only
//! writer, it needs no lock to keep announcements in cursor order, and a
//! control call never waits behind a herd's results.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::fanout::Hub;
use crate::{
    stats::{SkipReason, Stats},
    store::{Recording, RunRecord, RunStart, Store, StoreError},
    task::{Outcome, TaskId, TaskResult},
};

/// Most messages taken per batch: one store call and one publication.
const MAX_BATCH: usize = 4096;

/// Longest a batch waits for runs being fired or started to go first
/// ([`Stats::starting_runs`]): results of a herd's first runs are recorded
/// (and streamed) at most this much later.
const MAX_YIELD: Duration = Duration::from_millis(250);



/// Tries of a batch the store refused for a reason other than being
/// unreachable, before its results are given up as lost (and counted and
/// logged as such).
const RECORD_TRIES: u32 = 3;

/// First pause between tries; doubles up to [`RECORD_RETRY_MAX`].
const RECORD_RETRY: Duration = Duration::from_millis(200);

/// Longest pause between tries, so a store coming back is used within it.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(1);

/// How long results wait for an unreachable store before they are given up
/// as lost. Meanwhile they are held in the writer's queue; no run starts
/// without the store (firing fails closed), so what waits is bounded by the
/// runs that were in flight when it went away (the cap of runs in flight)
/// and their ends. At shutdown they wait [`RECORD_TRIES`] tries only.
pub(crate) const RECORD_OUTAGE_WINDOW: Duration = Duration::from_secs(300);

/// A failing task logs at WARN at most this often; the rest are counted in
/// the summary (and every failure is in its result).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

// Nearly every message is a Record; boxing it would add an allocation per
// result to save space in the rare others.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Message {
    Record(Recording),
    Ended(TaskId),
    /// Stop after everything sent before it.
    Close,
}

/// Sends to the writer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::UnboundedSender<Message>,
    /// This process's name, stamped on every result it records.
    executor: Arc<str>,
}

impl WriterHandle {
    /// Records `result`; `finishes_run` when it ends a run that ran.
    pub(crate) fn record(&self, result: TaskResult, finishes_run: bool) {
        self.send(Recording {
            result,
            finishes_run,
            fence: 0,
        });
    }

    /// Records the result that finishes run `run` (which carries the
    /// fencing value of its claim).
    pub(crate) fn record_run(&self, result: TaskResult, run: &RunRecord) {
        self.send(Recording {
            result,
            finishes_run: true,
            fence: run.fence,
        });
    }

    fn send(&self, mut recording: Recording) {
        recording.result.executor = self.executor.clone();
        // The writer outlives every sender but the scheduler's, which closes
        // it only after the last run ended.
        let _ = self.tx.send(Message::Record(recording));
    }

    /// Announces that `task` ended, after every result sent before.
    pub(crate) fn ended(&self, task: TaskId) {
        let _ = self.tx.send(Message::Ended(task));
    }

    /// Records what was sent before, then stops the writer.
    pub(crate) fn close(&self) {
        let _ = self.tx.send(Message::Close);
    }
}

/// The writer's state.
pub(crate) struct Writer {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    /// Receives buffered runs that may start now.
    on_promoted: Box<dyn Fn(Vec<RunStart>) + Send + Sync>,
    /// When each failing task last logged a failure at WARN.
    failure_logged: HashMap<TaskId, Instant>,
    /// Cancelled when the scheduler stops: results stop waiting for an
    /// unreachable store, so shutdown is not held up by it.
    stopping: tokio_util::sync::CancellationToken,
    /// The store's log reader publishes (a store other processes append
    /// to): the writer only records, ends included.
    tailing: bool,
    /// The last batch waited for a herd (see `yield_to_starts`).
    yielded: bool,
}

impl Writer {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        on_promoted: Box<dyn Fn(Vec<RunStart>) + Send + Sync>,
        stopping: tokio_util::sync::CancellationToken,
        executor: Arc<str>,
    ) -> (Writer, WriterHandle, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            hub,
            stats,
            on_promoted,
            failure_logged: HashMap::new(),
            stopping,
            tailing: store.tails_log(),
            yielded: false,
            store,
        };
        (writer, WriterHandle { tx, executor }, rx)
    }

    /// Runs until closed (or every handle is gone).
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        let mut messages = Vec::with_capacity(MAX_BATCH);
        let mut batch = Vec::new();
        let mut ended = Vec::new();
        loop {
            if rx.recv_many(&mut messages, MAX_BATCH).await == 0 {
                return;
            }
            let mut closing = false;
            for message in messages.drain(..) {
                match message {
                    Message::Record(recording) => {
                        if !ended.is_empty() {
                            // An end must follow the results sent before it
                            // and precede those sent after it.
                            self.commit(&mut batch, &mut ended).await;
                        }
                        batch.push(recording);
                    }
                    Message::Ended(task) => ended.push(task),
                    Message::Close => closing = true,
                }
            }
            if !closing {
                self.yield_to_starts().await;
            }
            self.commit(&mut batch, &mut ended).await;
            if closing {
                return;
            }
        }
    }

    /// Waits, up to [`MAX_YIELD`], while a herd is being fired or started.
    /// Never for two batches in a row: under herds back to back, recording
    /// still gets a batch through between waits.
    async fn yield_to_starts(&mut self) {
        if std::mem::take(&mut self.yielded) {
            return;
        }
        // Tokio's clock, so tests on a paused clock see the bound too.
        let deadline = tokio::time::sleep(MAX_YIELD);
        tokio::pin!(deadline);
        loop {
            let done = self.stats.herd_done.notified();
            tokio::pin!(done);
            // Registered before looking, so a herd that ends in between
            // still wakes this.
            done.as_mut().enable();
            if !self.stats.starting_runs() {
                return;
            }
            self.yielded = true;
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = &mut deadline => return,
                _ = done => {}
            }
        }
    }

    /// Records `batch`, then publishes its results and the ends in `ended`;
    /// leaves both empty (their buffers are reused).
    async fn commit(&mut self, batch: &mut Vec<Recording>, ended: &mut Vec<TaskId>) {
        if batch.is_empty() && ended.is_empty() {
            return;
        }
        for recording in batch.iter() {
            self.count(&recording.result);
        }
        let recorded = if batch.is_empty() {
            Default::default()
        } else {
            self.record(batch).await
        };
        batch.clear();
        if self.tailing {
            // The log reader publishes both, in log order.
            if !ended.is_empty() {
                self.append_ends(ended).await;
                ended.clear();
            }
        } else {
            let mut ends = recorded.ended;
            ends.append(ended);
            self.hub.publish(&recorded.results, &ends);
        }
        if !recorded.promoted.is_empty() {
            (self.on_promoted)(recorded.promoted);
        }
    }

    /// Records `batch`, retrying a refusal: a batch is applied all or
    /// nothing, and a retry of one that applied unseen (a lost reply) is
    /// told so by the store, so nothing is recorded twice. What is given up
    /// is counted and logged, never dropped silently.
    async fn record(&self, batch: &[Recording]) -> crate::store::Recorded {
        let recorded = self
            .retrying("results", batch.len(), || self.store.record(batch))
            .await;
        recorded.unwrap_or_else(|error| {
            Stats::add(&self.stats.results_lost, batch.len() as u64);
            error!(%error, results = batch.len(), "results lost: the store refused them");
            Default::default()
        })
    }

    /// Appends end entries to the log, retried like results. An end that
    /// cannot be written is logged; readers of that task learn of its end
    /// when they next open a stream (it reads as ended).
    async fn append_ends(&self, ended: &[TaskId]) {
        let appended = self
            .retrying("task ends", ended.len(), || self.store.append_ends(ended))
            .await;
        if let Err(error) = appended {
            error!(%error, tasks = ended.len(), "task ends not appended to the log: open streams of them are not told");
        }
    }

    /// Runs `step` until it succeeds: an unreachable store is waited for
    /// (see [`RECORD_OUTAGE_WINDOW`]); any other refusal, or any once
    /// stopping, is tried [`RECORD_TRIES`] times. Returns the last error
    /// when it gives up.
    async fn retrying<T, F, Fut>(&self, what: &str, items: usize, step: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut pause = RECORD_RETRY;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match step().await {
                Ok(done) => {
                    if attempt > 1 {
                        info!(what, items, attempt, "written after retrying");
                    }
                    return Ok(done);
                }
                Err(error) => error,
            };
            let waiting_out_an_outage = matches!(error, StoreError::Unavailable { .. })
                && !self.stopping.is_cancelled()
                && started.elapsed() < RECORD_OUTAGE_WINDOW;
            if attempt >= RECORD_TRIES && !waiting_out_an_outage {
                return Err(error);
            }
            if attempt == 1 || attempt.is_power_of_two() {
                warn!(%error, what, items, attempt, "writing to the store failed, holding it and retrying");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECORD_RETRY_MAX);
        }
    }

    fn count(&mut self, result: &TaskResult) {
        let stats = &self.stats;
        if result.outcome == Outcome::Skipped && result.run == 0 {
            // Slots that never got a run: overlap, or a catch-up decision
            // naming how many it passed over. A numbered SKIPPED result is
            // a run dropped before it started (a pause, a shutdown), counted
            // with the runs below, not twice.
            if result.skipped_slots > 0 {
                stats.skipped_for(SkipReason::CatchUp, result.skipped_slots);
            } else {
                stats.skipped_for(SkipReason::Overlap, 1);
            }
        }
        if result.run > 0 {
            Stats::add(&stats.runs_by_outcome[Stats::outcome_index(result.outcome)], 1);
            if let Some(started) = result.started_at {
                let ran = (result.finished_at - started).to_std().unwrap_or_default();
                crate::stats::observe(&stats.run_duration, ran);
            }
        }
        // A failure is logged at WARN once a minute per task; the rest only
        // count (above).
        if !matches!(result.outcome, Outcome::Failed | Outcome::TimedOut) {
            return;
        }
        let now = Instant::now();
        let due = self
            .failure_logged
            .get(&result.task_id)
            .is_none_or(|at| now.duration_since(*at) >= FAILURE_LOG_EVERY);
        if due {
            if self.failure_logged.len() > 10_000 {
                self.failure_logged
                    .retain(|_, at| now.duration_since(*at) < FAILURE_LOG_EVERY);
            }
            self.failure_logged.insert(result.task_id.clone(), now);
            warn!(
                task_id = %result.task_id,
                run = result.run,
                outcome = ?result.outcome,
                attempts = result.attempts,
                error = %result.error,
                "run failed (further failures of this task within a minute are only counted)"
            );
        }
    }
}
