//! Firing and runs: what happens when the timer says a slot is due (claim,
//! overlap policy, catch-up, advancing the schedule), how runs start, and
//! how their results are recorded and announced in cursor order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{
    Error, FIRING_RETRY, Inner,
    registry::{PendingRun, TaskHandle},
    run::{self, RunPlan},
};
use crate::{
    results::Event,
    store::StoreError,
    task::{OverlapPolicy, TaskId, TaskRecord, TaskResult, TaskState, Trigger},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Start,
    Skip,
    Buffer,
}

/// What the overlap policy says about starting a run now. CANCEL_RUNNING
/// cancels the runs in flight as part of deciding.
pub(super) fn overlap_decision(handle: &TaskHandle, policy: OverlapPolicy) -> Decision {
    let runs = handle.runs();
    if runs.active.is_empty() && runs.pending.is_none() {
        return Decision::Start;
    }
    match policy {
        OverlapPolicy::Skip => Decision::Skip,
        OverlapPolicy::Allow => Decision::Start,
        OverlapPolicy::CancelRunning => {
            for (_, token) in &runs.active {
                token.cancel();
            }
            Decision::Start
        }
        OverlapPolicy::BufferOne => {
            if runs.pending.is_some() {
                Decision::Skip
            } else {
                Decision::Buffer
            }
        }
    }
}

pub(super) fn policy_name(policy: OverlapPolicy) -> &'static str {
    match policy {
        OverlapPolicy::Skip => "SKIP",
        OverlapPolicy::Allow => "ALLOW",
        OverlapPolicy::CancelRunning => "CANCEL_RUNNING",
        OverlapPolicy::BufferOne => "BUFFER_ONE",
    }
}

/// Points `task` at its first slot after `slot`, or completes it when the
/// schedule has no more slots or max_runs is reached.
fn advance_past(task: &mut TaskRecord, slot: DateTime<Utc>, now: DateTime<Utc>) {
    let schedule = &task.spec.schedule;
    let exhausted = schedule
        .max_runs
        .is_some_and(|max| task.scheduled_run_count >= max);
    match schedule.next_slot_after(task.created_at, slot) {
        Some(next) if !exhausted => task.next_run_at = Some(next),
        _ => {
            task.state = TaskState::Completed;
            task.next_run_at = None;
            task.updated_at = now;
        }
    }
}

impl Inner {
    /// The timer says `slot` of `id` is due.
    pub(super) async fn fire(self: Arc<Self>, id: TaskId, slot: DateTime<Utc>) {
        if self.stopping.is_cancelled() {
            return;
        }
        if let Err(error) = self.fire_inner(&id, slot).await {
            // The store failed: try the same slot again shortly rather than
            // leaving the task unarmed. (If it failed after the claim, the
            // retry finds the slot claimed, says so and moves on.)
            warn!(task_id = %id, %slot, %error, "firing failed, retrying the slot");
            let retry_at = self.clock.now() + FIRING_RETRY;
            self.timer.set(id, slot, retry_at);
        }
    }

    async fn fire_inner(self: &Arc<Self>, id: &TaskId, slot: DateTime<Utc>) -> Result<(), Error> {
        let handle = match self.handle_of_existing(id).await {
            Ok(handle) => handle,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = handle.op.lock().await;
        if self.stopping.is_cancelled() {
            return Ok(());
        }
        let Some(mut task) = self.store.get_task(id).await? else {
            return Ok(());
        };
        if task.state != TaskState::Active || task.next_run_at != Some(slot) {
            // A control call re-armed or disarmed the task meanwhile.
            return Ok(());
        }
        let now = self.clock.now();
        let schedule = &task.spec.schedule;
        // A stalled process (suspend, overload) fires once, for the latest
        // slot that has passed, and counts the ones it passed over.
        let (slot, passed) = schedule
            .latest_due_slot(
                task.created_at,
                slot - chrono::Duration::nanoseconds(1),
                now,
            )
            .unwrap_or((slot, 0));
        if !self.store.claim_slot(id, slot).await? {
            // Claimed before: by another process sharing the store, or by this
            // one before the wall clock stepped back. It is not run again, and
            // the task moves on to its next slot so that it keeps firing.
            warn!(task_id = %id, %slot, "slot already claimed, not run again");
            advance_past(&mut task, slot, now);
            let task = self.store.update_task(task).await?;
            self.arm(&task);
            self.announce_if_finished(&task, &handle);
            return Ok(());
        }
        task.skipped_count += passed;
        let decision = overlap_decision(&handle, task.spec.overlap);
        let mut run = None;
        if decision == Decision::Skip {
            task.skipped_count += 1;
        } else {
            task.run_count += 1;
            task.scheduled_run_count += 1;
            run = Some(task.run_count);
        }
        advance_past(&mut task, slot, now);
        let task = self.store.update_task(task).await?;
        self.arm(&task);
        if passed > 0 {
            warn!(task_id = %id, %slot, skipped = passed, "runner fell behind, ran the latest slot only");
        }
        match run {
            Some(run) => {
                self.start_or_buffer(&handle, &task, decision, run, Trigger::Scheduled, slot)
            }
            None => {
                debug!(task_id = %id, %slot, "slot skipped, a run is still in flight");
                let result = run::skipped(
                    id.clone(),
                    slot,
                    now,
                    "a run was still in flight (overlap policy)",
                );
                self.record(result).await?;
            }
        }
        if task.state == TaskState::Completed {
            info!(task_id = %id, "task completed");
            self.announce_if_finished(&task, &handle);
        }
        Ok(())
    }

    /// Starts run `run` now, or parks it as the pending run.
    pub(super) fn start_or_buffer(
        self: &Arc<Self>,
        handle: &Arc<TaskHandle>,
        task: &TaskRecord,
        decision: Decision,
        run: u64,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
    ) {
        if decision == Decision::Buffer {
            handle.runs().pending = Some(PendingRun {
                run,
                trigger,
                scheduled_at,
            });
            return;
        }
        self.spawn_run(handle, task, run, trigger, scheduled_at);
    }

    fn spawn_run(
        self: &Arc<Self>,
        handle: &Arc<TaskHandle>,
        task: &TaskRecord,
        run: u64,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
    ) {
        let token = handle.token.child_token();
        handle.runs().active.push((run, token.clone()));
        let plan = RunPlan {
            task_id: task.id.clone(),
            run,
            trigger,
            scheduled_at,
            spec: task.spec.clone(),
            retry_deadline: task.next_run_at,
        };
        let inner = self.clone();
        let handle = handle.clone();
        debug!(task_id = %task.id, run, "run started");
        self.tracker.spawn(async move {
            // Shutdown may have begun between the decision and this start.
            if inner.stopping.is_cancelled() {
                token.cancel();
            }
            let result = run::execute(&inner.actions, &inner.clock, plan, token).await;
            inner.finish_run(&handle, result).await;
        });
    }

    /// Records a finished run, starts the pending one, announces the end of
    /// a terminal task.
    async fn finish_run(self: &Arc<Self>, handle: &Arc<TaskHandle>, result: TaskResult) {
        let id = result.task_id.clone();
        let run = result.run;
        debug!(task_id = %id, run, outcome = ?result.outcome, "run finished");
        let recorded = self.record_finished(handle, result).await;
        let _op = handle.op.lock().await;
        let task = match (recorded, self.store.get_task(&id).await) {
            (Ok(result), Ok(Some(mut task))) => {
                if task
                    .last_result
                    .as_ref()
                    .is_none_or(|last| last.run <= result.run)
                {
                    task.last_result = Some(result);
                }
                match self.store.update_task(task.clone()).await {
                    Ok(task) => Some(task),
                    Err(error) => {
                        warn!(task_id = %id, run, %error, "could not store last result");
                        Some(task)
                    }
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                warn!(task_id = %id, run, %error, "result lost: the store refused it");
                None
            }
            _ => None,
        };
        let pending = {
            let mut runs = handle.runs();
            if runs.active.is_empty() {
                runs.pending.take()
            } else {
                None
            }
        };
        let Some(task) = task else { return };
        if let Some(pending) = pending {
            // A completed task still owes its buffered run: it was counted
            // (max_runs) when it was buffered. Only cancel and stop drop it.
            if task.state == TaskState::Cancelled || self.stopping.is_cancelled() {
                debug!(task_id = %id, run = pending.run, "pending run dropped");
            } else {
                self.spawn_run(
                    handle,
                    &task,
                    pending.run,
                    pending.trigger,
                    pending.scheduled_at,
                );
                return;
            }
        }
        self.announce_if_finished(&task, handle);
    }

    /// Appends the result of a run that has ended, takes the run out of the
    /// task's runs in flight, then announces it. In that order: a client
    /// that reacts to the result (a trigger under SKIP) must not find the run
    /// still in flight, and the result is in the store before anyone hears.
    async fn record_finished(
        &self,
        handle: &TaskHandle,
        result: TaskResult,
    ) -> Result<TaskResult, StoreError> {
        let run = result.run;
        let _order = self.log_lock.lock().await;
        let appended = self.store.append_result(result).await;
        handle.runs().active.retain(|(r, _)| *r != run);
        let result = appended?;
        let _ = self.events.send(Event::Result(Arc::new(result.clone())));
        Ok(result)
    }

    /// Appends a result and announces it, in cursor order.
    async fn record(&self, result: TaskResult) -> Result<TaskResult, StoreError> {
        let _order = self.log_lock.lock().await;
        let result = self.store.append_result(result).await?;
        let _ = self.events.send(Event::Result(Arc::new(result.clone())));
        Ok(result)
    }
}
