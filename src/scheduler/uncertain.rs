//! Control steps the store did not answer (a lost reply, a timeout): each
//! may or may not have applied. Once the store answers again every one is
//! followed up as the store has it, so a change applied unseen is neither
//! lost nor done twice: the task is re-armed as stored, a trigger that
//! applied has its queued run started and the runs it cancelled recorded
//! (one that did not apply is not dispatched late), a pause or cancel that
//! applied has the runs it dropped recorded.

use std::sync::Arc;

use tracing::info;

use super::Inner;
use crate::{
    store::StoreError,
    task::{Outcome, TaskId},
};

/// A control step whose outcome is unknown.
pub(super) enum Uncertain {
    /// An update, resume or other change of the task record.
    Change(TaskId),
    /// A trigger, by the occurrence id it dispatched with.
    Trigger(TaskId, String),
    /// A pause or cancel, by its call identity, with how the runs it
    /// dropped are reported.
    Halt(TaskId, String, Outcome),
}

impl Uncertain {
    fn task(&self) -> &TaskId {
        match self {
            Uncertain::Change(id) | Uncertain::Trigger(id, _) | Uncertain::Halt(id, _, _) => id,
        }
    }
}

impl Inner {
    /// Notes `step` when `error` leaves unknown whether it applied (the
    /// store did not answer); any other error applied nothing.
    pub(super) fn uncertain(&self, error: &StoreError, step: Uncertain) {
        if matches!(error, StoreError::Unavailable { .. }) {
            self.uncertain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(step);
        }
    }

    /// Follows up every uncertain step; one the store still cannot answer
    /// waits for the next call.
    pub(super) async fn settle_uncertain(self: &Arc<Self>) {
        let steps = std::mem::take(&mut *self.uncertain.lock().unwrap_or_else(|e| e.into_inner()));
        for step in steps {
            if let Err(error) = self.follow_up(&step).await {
                self.uncertain(&error, step);
            }
        }
    }

    async fn follow_up(self: &Arc<Self>, step: &Uncertain) -> Result<(), StoreError> {
        // Whatever the step was, the task is armed as the store has it: a
        // change applied unseen leaves no timer of the old version.
        if let Some(task) = self.store.get_task(step.task()).await? {
            self.arm(&task);
        }
        match step {
            Uncertain::Change(_) => {}
            Uncertain::Trigger(id, occurrence) => {
                if let Some(fire) = self.store.applied_trigger(id, occurrence).await? {
                    info!(task_id = %id, dropped = fire.dropped.len(), "a trigger whose reply was lost did apply: its run starts now, and the runs it cancelled are recorded");
                    // As its reply would have been applied.
                    self.apply_fire(fire, None, None, None);
                }
            }
            Uncertain::Halt(id, call, dropped_as) => {
                if let Some((dropped, ended)) = self.store.halt_dropped(id, call).await? {
                    info!(task_id = %id, dropped = dropped.len(), "a pause or cancel whose reply was lost did apply: its dropped runs are recorded now");
                    self.halted(id, *dropped_as);
                    self.report_halt(id, &dropped, ended, *dropped_as);
                }
            }
        }
        Ok(())
    }
}
