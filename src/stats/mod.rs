//! Counters of what the engine did, for the periodic INFO summary that
//! replaces a log line per registration or run (100,000 tasks would write
//! 100,000 lines) and for `/metrics`. Plain atomics: bumped on the firing
//! and result paths without a lock; only a scrape reads them all.

use prometheus_client::metrics::histogram::Histogram;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::task::Outcome;

/// How often the summary is logged when anything happened.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Engine counters since start, gauges and histograms.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Slots fired (each dispatches a run or is skipped).
    pub fired: AtomicU64,
    /// Results the store refused: lost, and said so.
    pub results_lost: AtomicU64,
    /// Runs whose action is going now.
    pub runs_in_flight: AtomicU64,
    /// Runs dispatched and waiting for a slot under the cap.
    pub runs_waiting: AtomicU64,
    /// Herds (large batches of due slots, large waves of runs) being fired
    /// or started now: the result writer lets them go first (see
    /// [`Stats::starting_runs`]).
    pub starting: AtomicU64,
    /// Woken when the last herd in [`Stats::starting`] is done.
    pub herd_done: tokio::sync::Notify,
    /// Runs whose result this process recorded, by final outcome
    /// ([`Stats::outcome_index`]). ABANDONED is counted by the replica
    /// that gave the run up; should the run's own replica finish it late
    /// after all (its claim lapsed), that one counts its outcome too.
    pub runs_by_outcome: [AtomicU64; OUTCOMES.len()],
    /// Slots that started no run, by [`SkipReason`].
    pub skipped_by_reason: [AtomicU64; SkipReason::ALL.len()],
    /// From when a scheduled run was due (its slot plus its jitter) to its
    /// first attempt: the scheduler's own delay, queueing under the cap
    /// of runs in flight included.
    pub start_lateness: Histogram,
    /// From a run's first attempt to its end, retries included.
    pub run_duration: Histogram,
    /// Each store operation's latency, by [`StoreOp`].
    pub store_ops: [Histogram; StoreOp::ALL.len()],
    /// Store operations that failed because of the store (unreachable,
    /// or a record it could not read), by [`StoreOp`]; not the answers a
    /// store gives by design (a version conflict, an id taken, a cursor
    /// too old).
    pub store_errors: [AtomicU64; StoreOp::ALL.len()],
    /// The instant the timer wakes next for the soonest armed task, in
    /// milliseconds since the epoch; [`NOTHING_ARMED`] when none is armed.
    pub next_due_ms: AtomicI64,
}

/// Upper bounds of the histograms' buckets in seconds: resolving 0.1 ms (a
/// store step on Redis) to 10 s (a slow run or a long stall), about three
/// per decade.
pub(crate) const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Counts `value` into `histogram`, in seconds (prometheus-client's
/// `Histogram`: a short uncontended lock, as cheap per observation as a
/// histogram of atomics, measured in benches/README.md "Metrics").
pub(crate) fn observe(histogram: &Histogram, value: Duration) {
    histogram.observe(value.as_secs_f64());
}

/// [`Stats::next_due_ms`] when no task is armed.
pub(crate) const NOTHING_ARMED: i64 = i64::MIN;

/// Outcomes in the order of [`Stats::runs_by_outcome`], with their labels.
pub(crate) const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Succeeded, "succeeded"),
    (Outcome::Failed, "failed"),
    (Outcome::TimedOut, "timed_out"),
    (Outcome::Cancelled, "cancelled"),
    (Outcome::Skipped, "skipped"),
    (Outcome::Abandoned, "abandoned"),
];

/// Why a slot started no run (it got no run number; a run dispatched and
/// dropped before it started is a SKIPPED run instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// A run was still in flight (overlap policy SKIP).
    Overlap,
    /// Missed while the server was behind; catch-up passed over it.
    CatchUp,
}

impl SkipReason {
    /// Every reason, in the order of [`Stats::skipped_by_reason`].
    pub(crate) const ALL: [SkipReason; 2] = [SkipReason::Overlap, SkipReason::CatchUp];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::CatchUp => "catch_up",
        }
    }
}

/// A store operation, for [`Stats::store_ops`]: the [`crate::store::Store`]
/// method's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    InsertTask,
    TaskForRequest,
    GetTask,
    UpdateTask,
    DeleteTask,
    ListTasks,
    CountTasks,
    Fire,
    Trigger,
    AppliedTrigger,
    HaltDropped,
    Halt,
    AbandonRuns,
    StartRuns,
    Record,
    ResultsAfter,
    HeadCursor,
    Check,
    ServerTime,
    AppendEnds,
    Lease,
    StreamSlots,
}

impl StoreOp {
    /// Every operation, in the order of [`Stats::store_ops`].
    pub(crate) const ALL: [StoreOp; 22] = [
        StoreOp::InsertTask,
        StoreOp::TaskForRequest,
        StoreOp::GetTask,
        StoreOp::UpdateTask,
        StoreOp::DeleteTask,
        StoreOp::ListTasks,
        StoreOp::CountTasks,
        StoreOp::Fire,
        StoreOp::Trigger,
        StoreOp::AppliedTrigger,
        StoreOp::HaltDropped,
        StoreOp::Halt,
        StoreOp::AbandonRuns,
        StoreOp::StartRuns,
        StoreOp::Record,
        StoreOp::ResultsAfter,
        StoreOp::HeadCursor,
        StoreOp::Check,
        StoreOp::ServerTime,
        StoreOp::AppendEnds,
        StoreOp::Lease,
        StoreOp::StreamSlots,
    ];

    /// The `op` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            StoreOp::InsertTask => "insert_task",
            StoreOp::TaskForRequest => "task_for_request",
            StoreOp::GetTask => "get_task",
            StoreOp::UpdateTask => "update_task",
            StoreOp::DeleteTask => "delete_task",
            StoreOp::ListTasks => "list_tasks",
            StoreOp::CountTasks => "count_tasks",
            StoreOp::Fire => "fire",
            StoreOp::Trigger => "trigger",
            StoreOp::AppliedTrigger => "applied_trigger",
            StoreOp::HaltDropped => "halt_dropped",
            StoreOp::Halt => "halt",
            StoreOp::AbandonRuns => "abandon_runs",
            StoreOp::StartRuns => "start_runs",
            StoreOp::Record => "record",
            StoreOp::ResultsAfter => "results_after",
            StoreOp::HeadCursor => "head_cursor",
            StoreOp::Check => "check",
            StoreOp::ServerTime => "server_time",
            StoreOp::AppendEnds => "append_ends",
            StoreOp::Lease => "lease",
            StoreOp::StreamSlots => "stream_slots",
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            fired: AtomicU64::new(0),
            results_lost: AtomicU64::new(0),
            runs_in_flight: AtomicU64::new(0),
            runs_waiting: AtomicU64::new(0),
            starting: AtomicU64::new(0),
            herd_done: tokio::sync::Notify::new(),
            runs_by_outcome: Default::default(),
            skipped_by_reason: Default::default(),
            start_lateness: Histogram::new(BUCKETS),
            run_duration: Histogram::new(BUCKETS),
            store_ops: std::array::from_fn(|_| Histogram::new(BUCKETS)),
            store_errors: Default::default(),
            next_due_ms: AtomicI64::new(NOTHING_ARMED),
        }
    }
}

/// Counts one herd in [`Stats::starting`] while any clone is held. Firing
/// hands a clone to every run it starts, which drops it as it begins: the
/// herd is going until its last run has begun, not only until the store
/// step that started them returned. Results recorded meanwhile would take
/// the cores the runs are waiting for (10,000 due at once on the memory
/// store: a commit of a few results for every few runs that began).
#[derive(Clone)]
pub(crate) struct Starting {
    _counted: Arc<Counted>,
}

struct Counted(Arc<Stats>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.starting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.herd_done.notify_waiters();
        }
    }
}

/// A herd fired ahead of its instant: counted in [`Stats::starting`] from
/// the instant (when the first of its runs wakes), not while its runs wait
/// for it, until the last of them has begun.
pub(crate) struct HerdAtInstant {
    stats: Arc<Stats>,
    starting: OnceLock<Starting>,
}

impl HerdAtInstant {
    pub(crate) fn new(stats: &Arc<Stats>) -> Arc<HerdAtInstant> {
        Arc::new(HerdAtInstant {
            stats: stats.clone(),
            starting: OnceLock::new(),
        })
    }

    /// The herd's guard, counting from the first call; held by each run
    /// until it begins (this one's goes when every run has woken).
    pub(crate) fn begin(&self) -> Starting {
        self.starting.get_or_init(|| self.stats.starting()).clone()
    }
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The index of `outcome` in [`Stats::runs_by_outcome`].
    pub(crate) fn outcome_index(outcome: Outcome) -> usize {
        match outcome {
            Outcome::Succeeded => 0,
            Outcome::Failed => 1,
            Outcome::TimedOut => 2,
            Outcome::Cancelled => 3,
            Outcome::Skipped => 4,
            Outcome::Abandoned => 5,
        }
    }

    /// Counts `n` slots skipped for `reason`.
    pub(crate) fn skipped_for(&self, reason: SkipReason, n: u64) {
        Stats::add(&self.skipped_by_reason[reason as usize], n);
    }

    /// The soonest armed task's due time, as the timer last saw it.
    pub(crate) fn set_next_due(&self, due: Option<DateTime<Utc>>) {
        let ms = due.map_or(NOTHING_ARMED, |d| d.timestamp_millis());
        self.next_due_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a firing batch or a start wave as going until the guard and
    /// its clones are dropped.
    pub(crate) fn starting(self: &Arc<Self>) -> Starting {
        self.starting.fetch_add(1, Ordering::AcqRel);
        Starting {
            _counted: Arc::new(Counted(self.clone())),
        }
    }

    /// Whether a herd is being fired or started now. Its runs start
    /// sooner when recording the results of its first runs waits for the
    /// rest to start: both need the same cores and, on Redis, the same
    /// single-threaded server (10,000 due at once: last start 110 -> 77 ms
    /// on the memory store, 380 -> 230 ms on Redis; benches/README.md).
    pub(crate) fn starting_runs(&self) -> bool {
        self.starting.load(Ordering::Acquire) > 0
    }

    /// What the summary logs: fired, skipped, succeeded, failed (timed
    /// out included), cancelled, lost; read from the series `/metrics`
    /// serves, so nothing is counted twice.
    fn snapshot(&self) -> [u64; 6] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let outcome = |o: Outcome| load(&self.runs_by_outcome[Stats::outcome_index(o)]);
        [
            load(&self.fired),
            self.skipped_by_reason.iter().map(load).sum(),
            outcome(Outcome::Succeeded),
            outcome(Outcome::Failed) + outcome(Outcome::TimedOut),
            outcome(Outcome::Cancelled),
            load(&self.results_lost),
        ]
    }

    /// Logs what changed every [`SUMMARY_EVERY`] until `stop`.
    pub(crate) async fn summarise(&self, stop: CancellationToken) {
        let mut last = self.snapshot();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SUMMARY_EVERY) => {}
            }
            let now = self.snapshot();
            if now == last {
                continue;
            }
            let [fired, skipped, succeeded, failed, cancelled, lost] =
                std::array::from_fn(|i| now[i] - last[i]);
            info!(
                period_s = SUMMARY_EVERY.as_secs(),
                fired,
                skipped,
                succeeded,
                failed,
                cancelled,
                results_lost = lost,
                runs_in_flight = self.runs_in_flight.load(Ordering::Relaxed),
                runs_waiting = self.runs_waiting.load(Ordering::Relaxed),
                "engine summary"
            );
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_tables_are_in_declaration_order() {
        for (i, reason) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        for (i, op) in StoreOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        for (i, (outcome, _)) in OUTCOMES.iter().enumerate() {
            assert_eq!(Stats::outcome_index(*outcome), i);
        }
    }

    #[tokio::test]
    async fn a_herd_lasts_until_the_last_of_its_runs_let_go() {
        let stats = Arc::new(Stats::default());
        let herd = stats.starting();
        let runs: Vec<Starting> = (0..3).map(|_| herd.clone()).collect();
        // The firing step returned; its runs have not begun.
        drop(herd);
        assert!(stats.starting_runs());
        let done = stats.herd_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let mut runs = runs.into_iter();
        drop(runs.next());
        drop(runs.next());
        assert!(stats.starting_runs(), "one run has not begun");
        drop(runs.next());
        assert!(!stats.starting_runs());
        // The writer waiting on it is woken.
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("herd_done notified");
    }
}
