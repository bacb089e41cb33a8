//! Firing: what happens when the timer hands over a batch of due slots. The
//! schedule maths (catch-up after a stall, the slot after) runs here on the
//! task as armed; the store then applies each firing as one atomic step and
//! says what to do. No lock is held across an await: the store's step is
//! the only synchronisation with control calls, through the task's version.

use std::sync::Arc;

use chrono::Utc;
use tracing::{debug, warn};

use super::{FIRING_RETRY, Inner, run, timer::Armed};
use crate::{
    stats::Stats,
    store::{Dispatch, Fire, Fired, Firing},
    task::{Outcome, TaskState, occurrence_id},
};

/// Most due slots per store call: a herd is fired in few calls, and a
/// control call waiting for the store lock waits for one chunk at most.
const FIRE_CHUNK: usize = 1024;

impl Inner {
    /// Fires the due slots of `batch`, a chunk per store call.
    pub(super) async fn fire_batch(self: &Arc<Self>, batch: Vec<Armed>) {
        for chunk in batch.chunks(FIRE_CHUNK) {
            if self.stopping.is_cancelled() {
                return;
            }
            self.fire_chunk(chunk).await;
        }
    }

    async fn fire_chunk(self: &Arc<Self>, chunk: &[Armed]) {
        let now = self.clock.now();
        let firings: Vec<Firing> = chunk.iter().map(|armed| plan(armed, now)).collect();
        // What is needed after the store consumed the batch.
        let planned: Vec<_> = firings.iter().map(|f| f.slot).collect();
        let fired = match self.store.fire(firings).await {
            Ok(fired) => fired,
            Err(error) => {
                // Nothing of the chunk was applied: every task is still
                // armed at its slot in the store, so arming it again here
                // to retry shortly loses no slot and leaves none stuck.
                warn!(%error, slots = chunk.len(), "firing failed, retrying the slots");
                let retry_at = now + FIRING_RETRY;
                for armed in chunk {
                    let retry = Armed {
                        retry: true,
                        ..armed.clone()
                    };
                    self.timer.set(retry, retry_at);
                }
                return;
            }
        };
        for ((armed, slot), fired) in chunk.iter().zip(planned).zip(fired) {
            let task_id = &armed.id;
            match fired {
                // Gone, or changed since it was armed: whoever changed it
                // armed it again (a retry of a firing that did apply is
                // answered as Done, not Stale). Arming here as well could
                // hand the same slot out twice.
                Fired::Stale => {}
                Fired::AlreadyClaimed(fire) => {
                    warn!(task_id = %task_id, slot = %slot.to_rfc3339(), "slot already claimed, not run again");
                    self.apply_fire(fire);
                }
                Fired::Done(fire) => {
                    Stats::add(&self.stats.fired, 1);
                    // What the store applied, not what was planned: a retry
                    // replayed gets the first attempt's decision.
                    if fire.passed > 0 {
                        Stats::add(&self.stats.skipped, fire.passed);
                        let why = if matches!(fire.dispatch, Dispatch::PassedOver) {
                            warn!(task_id = %task_id, slot = %slot.to_rfc3339(), skipped = fire.passed, "runner fell behind, ran no missed slot (catch-up window)");
                            "missed (the server was behind); none ran: the latest was older than the catch-up window"
                        } else {
                            warn!(task_id = %task_id, slot = %slot.to_rfc3339(), skipped = fire.passed, "runner fell behind, ran the latest slot only");
                            "missed (the server was behind); catch-up ran only the latest slot"
                        };
                        // The armed slot is the first one missed.
                        self.writer.record(
                            run::caught_up(task_id.clone(), armed.slot, fire.passed, now, why),
                            false,
                        );
                    }
                    if matches!(fire.dispatch, Dispatch::Skipped) {
                        Stats::add(&self.stats.skipped, 1);
                        debug!(task_id = %task_id, slot = %slot.to_rfc3339(), "slot skipped, a run is still in flight");
                        self.writer.record(
                            run::skipped(
                                task_id.clone(),
                                slot,
                                now,
                                "a run was still in flight (overlap policy)",
                            ),
                            false,
                        );
                    }
                    self.apply_fire(fire);
                }
            }
        }
    }

    /// Carries out what the store decided for a firing or a trigger: arm
    /// the task at its new slot, cancel and record what the policy
    /// displaced, queue the new run, announce the end of a finished task.
    pub(super) fn apply_fire(self: &Arc<Self>, fire: Fire) {
        let Fire {
            task,
            dispatch,
            passed: _,
            cancel,
            dropped,
            ended,
        } = fire;
        self.arm(&task);
        if !cancel.is_empty()
            && let Some(handle) = self.registry.get(&task.id)
        {
            for run in cancel {
                handle.cancel_run(run);
            }
        }
        let now = self.clock.now();
        for run in &dropped {
            self.writer.record(
                run::dropped(
                    run,
                    Outcome::Cancelled,
                    now,
                    "cancelled before it started (overlap policy CANCEL_RUNNING)",
                ),
                false,
            );
        }
        if let Dispatch::Start(start) = dispatch {
            self.run_queue.push(start);
        }
        if task.state == TaskState::Completed {
            debug!(task_id = %task.id, "task completed");
        }
        if ended {
            self.writer.ended(task.id.clone());
        }
    }
}

/// Plans the firing of `armed` at `now`: a stalled process (suspend,
/// overload) fires once, for the latest slot that has passed, and counts
/// the ones it passed over.
fn plan(armed: &Armed, now: chrono::DateTime<Utc>) -> Firing {
    let schedule = &armed.spec.schedule;
    let (slot, passed) = schedule
        .latest_due_slot(
            armed.created_at,
            armed.slot - chrono::Duration::nanoseconds(1),
            now,
        )
        .unwrap_or((armed.slot, 0));
    Firing {
        task_id: armed.id.clone(),
        version: armed.version,
        armed_slot: armed.slot,
        slot,
        run: true,
        passed,
        next: schedule.next_slot_after(armed.created_at, slot),
        occurrence_id: occurrence_id(&armed.id, slot),
        now,
        retry: armed.retry,
    }
}
