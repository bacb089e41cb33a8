//! Retention of terminal tasks: CANCELLED and COMPLETED tasks stay readable
//! for `terminal_retention`, then are removed, so memory stays flat.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use super::{Error, Inner};
use crate::{
    store::StoreError,
    task::TaskId,
};

impl Inner {
    /// Removes terminal tasks past retention, so memory stays flat.
    pub(super) async fn sweep_loop(self: Arc<Self>) {
        let period = (self.settings.terminal_retention / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = self.stopping.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(error) = self.sweep().await {
                warn!(%error, "retention sweep failed");
            }
        }
    }

    async fn sweep(&self) -> Result<(), Error> {
        // None: retention longer than the calendar, nothing is old enough
        // (the sweep still arms and gives up runs, with replicas).
        let cutoff = chrono::Duration::from_std(self.settings.terminal_retention)
            .ok()
            .and_then(|keep| self.clock.now().checked_sub_signed(keep));
        let shared = self.store.lease_every().is_some();
        let mut with_runs = Vec::new();
        let mut expired: Vec<(TaskId, u64)> = Vec::new();
        self.each_task(|task| {
            // Replicas: the backstop of change messages lost on the way
            // (arming is ordered by version, so an older read never undoes
            // a newer arming), and of runs of a replica gone whose lapse
            // was told to no one that gave them up (it stopped, or the
            // reply was lost).
            if shared {
                self.arm_noting_runs(task, &mut with_runs);
            }
            // With replicas, the owner of its shard removes it.
            if task.has_ended()
                && cutoff.is_some_and(|cutoff| task.updated_at < cutoff)
                && self.store.owns(&task.id)
            {
                expired.push((task.id.clone(), task.version));
            }
        })
        .await?;
        for (id, version) in expired {
            match self.store.delete_task(&id, version).await {
                Ok(()) => {
                    self.forget(&id);
                    debug!(task_id = %id, "terminal task removed by retention");
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.abandon_runs(&with_runs).await
    }
}
