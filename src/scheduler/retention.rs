//! Retention of terminal tasks: CANCELLED and COMPLETED tasks stay readable
//! for `terminal_retention`, then are removed, so memory stays flat.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use super::{Error, Inner};
use crate::{
    store::{StoreError, TaskFilter},
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
        let mut after: Option<TaskId> = None;
        let mut with_runs = Vec::new();
        loop {
            let page = self
                .store
                .list_tasks(after.as_ref(), 1000, &TaskFilter::default())
                .await?;
            let Some(last) = page.last() else {
                // Replicas: runs of a replica gone whose lapse was told to
                // no one that gave them up (it stopped, or the reply was
                // lost) are given up here.
                return self.abandon_runs(&with_runs).await;
            };
            after = Some(last.id.clone());
            for task in page {
                // Replicas: the backstop of change messages lost on the
                // way (arming is ordered by version, so an older read
                // never undoes a newer arming).
                if shared {
                    self.arm(&task);
                    if task.active_runs > 0 {
                        with_runs.push(task.id.clone());
                    }
                }
                // With replicas, the owner of its shard removes it.
                if task.has_ended()
                    && cutoff.is_some_and(|cutoff| task.updated_at < cutoff)
                    && self.store.owns(&task.id)
                {
                    match self.store.delete_task(&task.id, task.version).await {
                        Ok(()) => {
                            self.forget(&task.id);
                            debug!(task_id = %task.id, "terminal task removed by retention");
                        }
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}
