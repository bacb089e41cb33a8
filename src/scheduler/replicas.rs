//! Replicas sharing one store (Redis): which of them fires what, and how a
//! change made on one reaches the others.
//!
//! - Leases: every tick (a fifth of the lease) this process takes its
//!   lease step (the store's `lease.lua`): it stays a member and learns the
//!   shards it owns. Tasks are armed here only in shards it owns, and the
//!   store refuses a firing step of a shard whose lease this process no
//!   longer holds (judged by Redis's clock, fenced), so each slot is fired
//!   by one replica, and a replica cut off or paused past its lease fires
//!   nothing. Shards gained: their tasks are read and armed; lost: disarmed.
//! - Failover: a replica killed or cut off stops renewing; once its lease
//!   has passed (by Redis's clock), the next member's step takes its shards
//!   and is told it is gone: its runs still going are given up (ABANDONED,
//!   reported by this process), and their late results, if it comes back,
//!   are recorded as of a lapsed claim.
//! - Stopping: the shards move to the others at once (draining), while this
//!   process stays a runner until its last run has reported, then leaves.
//! - Changes: a control call on any replica publishes the task's id; every
//!   other replica reads the task again, arms or disarms it (if it owns
//!   it), and applies a pause or cancel to the runs it has going (a
//!   CANCEL_RUNNING names the runs). Resubscribing, and the retention
//!   sweep, read every task again as the backstop for a lost message.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Error, Inner, timer::Keep};
use crate::{
    store::{Change, LeaseChange, LeaseMode, TaskFilter},
    task::{Outcome, TaskId, TaskRecord, TaskState},
};

/// Most changes read again in one round.
const CHANGES_PER_ROUND: usize = 1024;

impl Inner {
    /// Takes lease steps every `every` (and at once when another replica
    /// moved something) until `stopping`; then hands the shards over and
    /// stays a runner until `leave`, when it leaves.
    pub(super) async fn lease_loop(
        self: Arc<Self>,
        every: Duration,
        moved: Arc<Notify>,
        rearm: Arc<Notify>,
        leave: CancellationToken,
    ) {
        let mut failing = false;
        // The first step at once: it joins.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    biased;
                    _ = self.stopping.cancelled() => break,
                    _ = moved.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
            if self.stopping.is_cancelled() {
                break;
            }
            match self.store.lease(LeaseMode::Member).await {
                Ok(Some(change)) => {
                    if failing {
                        info!("lease renewed again");
                    }
                    failing = false;
                    if self.apply_lease(change) {
                        rearm.notify_one();
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    if !failing {
                        warn!(%error, "cannot renew the lease: this replica's shards move to the others once it lapses");
                    }
                    failing = true;
                }
            }
        }
        // No slot fires here any more: the shards go to the others now.
        if let Ok(Some(change)) = self.store.lease(LeaseMode::Draining).await {
            self.disarm_lost(&change);
        }
        loop {
            tokio::select! {
                _ = leave.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let _ = self.store.lease(LeaseMode::Draining).await;
        }
        match self.store.lease(LeaseMode::Leave).await {
            Ok(_) => info!("left the replicas"),
            Err(error) => warn!(%error, "could not leave the replicas; the others wait for the lease to lapse"),
        }
    }

    /// Acts on what a lease step changed; true when every task is to be
    /// read again (shards gained, replicas gone). Not that reading itself:
    /// the lease loop must not wait on it, or a long read (100,000 tasks)
    /// could let its own lease lapse.
    fn apply_lease(&self, change: LeaseChange) -> bool {
        self.disarm_lost(&change);
        for node in &change.dead {
            warn!(replica = %node, "a replica's lease lapsed (killed, or cut off from Redis): its shards move, its runs still going are reported ABANDONED");
        }
        for node in &change.left {
            info!(replica = %node, "a replica left");
        }
        if !change.gained.is_empty() {
            info!(shards = ?change.gained, "shards taken over");
        }
        !(change.gained.is_empty() && change.dead.is_empty() && change.left.is_empty())
    }

    /// Reads every task again each time `rearm` is told to (coalesced),
    /// arming those of the shards this process owns and giving up the runs
    /// of replicas gone; until stopping. A read that fails is tried again
    /// every `every`.
    pub(super) async fn rearm_loop(self: Arc<Self>, every: Duration, rearm: Arc<Notify>) {
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                _ = rearm.notified() => {}
            }
            let mut failing = false;
            while let Err(error) = self.rearm_all().await {
                if !failing {
                    warn!(%error, "could not read the tasks after a lease change; trying again");
                }
                failing = true;
                tokio::select! {
                    _ = self.stopping.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
    }

    fn disarm_lost(&self, change: &LeaseChange) {
        if change.lost.is_empty() {
            return;
        }
        info!(shards = ?change.lost, "shards handed over");
        let store = self.store.clone();
        self.timer.retain(Keep(Arc::new(move |id: &TaskId| store.owns(id))));
    }

    /// Reads every task and arms those this process owns, and gives up the
    /// runs of replicas gone (of this process's earlier runs, at a start).
    pub(super) async fn rearm_all(&self) -> Result<(), Error> {
        let mut with_runs = Vec::new();
        self.each_task(|task| self.arm_noting_runs(task, &mut with_runs))
            .await?;
        // Giving runs up may wait (a Redis being written back answers
        // UNAVAILABLE): the retention sweep gives them up later, and a
        // start does not fail on it.
        if let Err(error) = self.abandon_runs(&with_runs).await {
            warn!(%error, "could not give up the runs of stopped processes yet; the retention sweep will");
        }
        Ok(())
    }

    /// Arms `task` (where this process owns it) and notes it in
    /// `with_runs` when it has runs, which may be of replicas gone.
    pub(super) fn arm_noting_runs(&self, task: &TaskRecord, with_runs: &mut Vec<TaskId>) {
        self.arm(task);
        if task.active_runs > 0 {
            with_runs.push(task.id.clone());
        }
    }

    /// Hands every task to `visit`, in id order, reading a page of 1,000
    /// at a time.
    pub(super) async fn each_task(&self, mut visit: impl FnMut(&TaskRecord)) -> Result<(), Error> {
        let mut after: Option<TaskId> = None;
        loop {
            let page = self
                .store
                .list_tasks(after.as_ref(), 1000, &TaskFilter::default())
                .await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id.clone());
            page.iter().for_each(&mut visit);
        }
    }

    /// Applies what other replicas changed, read from `changes`, until
    /// stopping; a membership move wakes the lease loop through `moved`.
    pub(super) async fn follow_changes(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<Change>,
        moved: Arc<Notify>,
        rearm: Arc<Notify>,
    ) {
        let mut batch = Vec::new();
        loop {
            let received = tokio::select! {
                biased;
                _ = self.stopping.cancelled() => return,
                received = changes.recv_many(&mut batch, CHANGES_PER_ROUND) => received,
            };
            if received == 0 {
                return;
            }
            let mut ids: Vec<TaskId> = Vec::new();
            let mut seen: HashSet<TaskId> = HashSet::new();
            for change in batch.drain(..) {
                match change {
                    Change::Task { id, cancel } => {
                        // At once, before reading the task: the runs are
                        // named, and the store already dropped their claim
                        // to go on.
                        if !cancel.is_empty()
                            && let Some(handle) = self.registry.get(&id)
                        {
                            for run in cancel {
                                handle.cancel_run(run);
                            }
                        }
                        if seen.insert(id.clone()) {
                            ids.push(id);
                        }
                    }
                    Change::Moved => moved.notify_one(),
                    // Changes may have been missed: read every task.
                    Change::Resync => {
                        rearm.notify_one();
                        self.touched_all();
                    }
                }
            }
            let reads = ids.iter().map(|id| self.store.get_task(id));
            let tasks = futures::future::join_all(reads).await;
            for (id, task) in ids.iter().zip(tasks) {
                match task {
                    Ok(Some(task)) => self.changed_elsewhere(&task),
                    Ok(None) => self.forget(id),
                    // The sweep reads it again.
                    Err(error) => warn!(task_id = %id, %error, "could not read a task another replica changed"),
                }
            }
        }
    }

    /// A task another replica changed, as read after the change.
    fn changed_elsewhere(&self, task: &TaskRecord) {
        self.arm(task);
        self.touched(&task.id);
        match task.state {
            // Runs fired ahead here and waiting for their instant must
            // not start; a cancel also stops the runs going here.
            TaskState::Paused => self.halted(&task.id, Outcome::Skipped),
            TaskState::Cancelled => self.halted(&task.id, Outcome::Cancelled),
            _ => {}
        }
    }
}
