//! Watching a remote store: whether it answers (health shows
//! `recur.v1.TaskService` NOT_SERVING while it does not, and calls fail
//! fast with UNAVAILABLE meanwhile), and whether it came back empty, in
//! which case the store writes back the definitions this process holds and
//! every open result stream ends with DATA_LOSS (told by the store's log
//! reader, in log order).

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Inner;
use crate::store::Checked;

impl Inner {
    /// Checks the store every `every` until the scheduler stops; `status`
    /// says whether it answered the last check.
    pub(super) async fn watch_store(
        self: Arc<Self>,
        every: std::time::Duration,
        status: watch::Sender<bool>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                _ = ticks.tick() => {}
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
