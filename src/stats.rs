//! Counters of what the engine did, for the periodic INFO summary that
//! replaces a log line per registration or run (100,000 tasks would write
//! 100,000 lines). Plain atomics: bumped on the firing and result paths
//! without a lock.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often the summary is logged when anything happened.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Engine counters since start, and two gauges.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Slots fired (each dispatches a run or is skipped).
    pub fired: AtomicU64,
    /// Slots skipped by the overlap policy or catch-up.
    pub skipped: AtomicU64,
    /// Runs recorded as succeeded.
    pub succeeded: AtomicU64,
    /// Runs recorded as failed or timed out.
    pub failed: AtomicU64,
    /// Runs recorded as cancelled.
    pub cancelled: AtomicU64,
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

    fn snapshot(&self) -> [u64; 6] {
        [
            &self.fired,
            &self.skipped,
            &self.succeeded,
            &self.failed,
            &self.cancelled,
            &self.results_lost,
        ]
        .map(|c| c.load(Ordering::Relaxed))
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
