//! Watching a remote store: whether it answers (health shows
//! `recur.v1.TaskService` NOT_SERVING while it does not, and calls fail
//! fast with UNAVAILABLE meanwhile), and whether it came back empty, in
//! which case the store writes back the definitions this process holds and
//! every open result stream ends with DATA_LOSS (told by the store's log
//! reader, in log order). And whether this process's clock agrees with the
//! store's (see [`CLOCK_SKEW_BOUND`]).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Inner;
use crate::store::Checked;

/// Farthest this process's clock may be from the store's before it says
/// so at WARN. Slots fire by this process's clock; Redis's stamps the log,
/// judges its age and judges every replica's lease: a replica off by more
/// than this fires its slots that much off from the others (never twice:
/// the claim and the lease fence decide that). NTP keeps clocks within
/// milliseconds.
pub(crate) const CLOCK_SKEW_BOUND: chrono::Duration = chrono::Duration::seconds(1);

/// How often the store's clock is read: clocks drift slowly.
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(60);

/// How far this process's clock is ahead of the store's (negative: behind),
/// from a read of the store's clock between `before` and `after` on ours:
/// the store read its clock about halfway through the round trip.
pub(crate) fn clock_skew(
    before: DateTime<Utc>,
    store: DateTime<Utc>,
    after: DateTime<Utc>,
) -> chrono::Duration {
    let midway = before + (after - before) / 2;
    midway - store
}

/// Whether a skew is beyond [`CLOCK_SKEW_BOUND`], either way.
pub(crate) fn skewed(skew: chrono::Duration) -> bool {
    skew.abs() > CLOCK_SKEW_BOUND
}

impl Inner {
    /// Reads the store's clock and says at WARN when this process's is
    /// beyond [`CLOCK_SKEW_BOUND`] from it, and at INFO when it is back
    /// within; `was` is the last judgement.
    async fn check_clock(&self, was: &mut bool) {
        let before = self.clock.now();
        let Ok(Some(store)) = self.store.server_time().await else {
            return;
        };
        let skew = clock_skew(before, store, self.clock.now());
        let now = skewed(skew);
        if now && !*was {
            warn!(
                skew_ms = skew.num_milliseconds(),
                bound_ms = CLOCK_SKEW_BOUND.num_milliseconds(),
                "this process's clock is off from the store's (positive: ahead): slots fire by this process's clock; check NTP"
            );
        } else if !now && *was {
            info!(skew_ms = skew.num_milliseconds(), "this process's clock agrees with the store's again");
        }
        *was = now;
    }

    /// Checks the store every `every` until the scheduler stops; `status`
    /// says whether it answered the last check.
    pub(super) async fn watch_store(
        self: Arc<Self>,
        every: std::time::Duration,
        status: watch::Sender<bool>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock_checked: Option<tokio::time::Instant> = None;
        let mut clock_skewed = false;
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if clock_checked.is_none_or(|at| at.elapsed() >= CLOCK_CHECK_EVERY) {
                clock_checked = Some(tokio::time::Instant::now());
                self.check_clock(&mut clock_skewed).await;
            }
            match self.store.check().await {
                Ok(Checked::Same) => {
                    if !*status.borrow() {
                        info!("store reachable again");
                    }
                    status.send_replace(true);
                    self.settle_uncertain().await;
                }
                Ok(Checked::Restored {
                    tasks,
                    lost_epoch,
                    epoch,
                }) => {
                    error!(
                        restored_tasks = tasks,
                        %lost_epoch,
                        %epoch,
                        "the store came back empty: every result and run history it held is lost; the task definitions this process holds were written back"
                    );
                    // The store's log reader tells open streams, before
                    // anything of the new log reaches them.
                    status.send_replace(true);
                    self.settle_uncertain().await;
                }
                Err(error) => {
                    if *status.borrow() {
                        warn!(%error, "store unavailable: calls that need it fail with UNAVAILABLE until it is back");
                    }
                    status.send_replace(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn the_store_read_its_clock_halfway_through_the_round_trip() {
        // Sent at 10.000 s, answered at 10.010 s, the store said 10.005 s.
        assert_eq!(clock_skew(at(10_000), at(10_005), at(10_010)), chrono::Duration::zero());
        // The store says 8.5 s: this clock is 1.505 s ahead.
        let ahead = clock_skew(at(10_000), at(8_500), at(10_010));
        assert_eq!(ahead, chrono::Duration::milliseconds(1_505));
        assert!(skewed(ahead));
        assert!(skewed(-ahead), "behind counts too");
        assert!(!skewed(chrono::Duration::milliseconds(999)));
    }
}
