//! A task as a store keeps it: the record plus its run records, owed
//! results, last claimed slot and last result, and the state machine that
//! every store applies to it. The memory store applies it under its lock;
//! the Redis store loads the task, applies the same step and writes it back
//! with a compare-and-set, so both stores decide exactly alike.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Decision, Dispatch, Fire, Fired, Firing, Halt, Halted, RunPhase, RunRecord, RunStart,
    Triggered, decide,
};
use crate::task::{Health, Outcome, TaskId, TaskRecord, TaskResult, TaskState, Trigger};

/// A task and what the store keeps beside it.
#[derive(Clone)]
pub(crate) struct Stored {
    /// The record; its derived fields (`last_result`, `active_runs`) are
    /// filled in from the fields below on read.
    pub(crate) record: TaskRecord,
    /// The request id that registered it, so deleting it forgets that id
    /// without scanning every request id.
    pub(crate) request_id: Option<String>,
    /// Latest slot claimed: a slot at or before it is never started again.
    pub(crate) last_claimed: Option<DateTime<Utc>>,
    /// Runs dispatched and not yet recorded, oldest first.
    pub(crate) runs: Vec<RunRecord>,
    /// Results decided but not yet recorded (a skipped slot, a catch-up
    /// decision's, a run dropped before it started), by the replica that
    /// decided them and records them: the task has not ended while any is
    /// owed, and a replica that is gone owes none any more.
    pub(crate) owed: Owed,
    /// Result of the most recent run (by run number).
    pub(crate) last_result: Option<Arc<TaskResult>>,
    /// How its runs went, kept here beside `last_result` (not in the
    /// record, which control calls write back whole).
    pub(crate) health: Arc<Health>,
    /// What the last applied firing decided, so that a retry of it (its
    /// caller saw an error, e.g. a lost reply) gets the same answer instead
    /// of a stale one that would orphan the run it dispatched.
    pub(crate) last_fire: Option<LastFire>,
    /// What the last applied halt dropped, under its call's identity.
    pub(crate) last_halt: Option<LastHalt>,
    /// What the last applied trigger cancelled and dropped, under its
    /// occurrence id, for a caller that never saw its reply.
    pub(crate) last_trigger: Option<LastTrigger>,
}

/// What a trigger's overlap policy did to the runs before it
/// (CANCEL_RUNNING), for a caller that never saw its reply.
#[derive(Clone)]
pub(crate) struct LastTrigger {
    pub(crate) occurrence_id: String,
    pub(crate) cancel: Vec<u64>,
    pub(crate) dropped: Vec<RunRecord>,
}

/// Results owed, by the node id of the replica that decided them (and so
/// records them). The step under way adds to the unclaimed count, which
/// [`Stored::claim_runs`] gives to its replica once the step is decided
/// (the memory store, one process, leaves them there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Owed {
    /// (node id, count), no zero count; "" for the unclaimed.
    by: Vec<(String, u64)>,
}

impl Owed {
    /// From what is stored.
    pub(crate) fn from_parts(by: impl IntoIterator<Item = (String, u64)>) -> Owed {
        let mut owed = Owed::default();
        for (node, n) in by {
            owed.add_to(&node, n);
        }
        owed
    }

    /// Each node's count.
    pub(crate) fn parts(&self) -> &[(String, u64)] {
        &self.by
    }

    /// Results owed in all.
    pub(crate) fn total(&self) -> usize {
        self.by.iter().map(|(_, n)| *n as usize).sum()
    }

    /// Owes `n` more, decided by the step under way.
    fn add(&mut self, n: usize) {
        self.add_to("", n as u64);
    }

    fn add_to(&mut self, node: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.by.iter_mut().find(|(owner, _)| owner == node) {
            Some((_, count)) => *count += n,
            None => self.by.push((node.to_string(), n)),
        }
    }

    /// A result `node` recorded settles one it owed (or an unclaimed one);
    /// false when it owed none.
    fn settle(&mut self, node: &str) -> bool {
        let Some(i) = self
            .by
            .iter()
            .position(|(owner, _)| owner == node)
            .or_else(|| self.by.iter().position(|(owner, _)| owner.is_empty()))
        else {
            return false;
        };
        self.by[i].1 -= 1;
        if self.by[i].1 == 0 {
            self.by.remove(i);
        }
        true
    }

    /// Takes what replicas that are gone owed: lost.
    fn take(&mut self, gone: impl Fn(&str) -> bool) -> usize {
        let (lost, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.by).into_iter().partition(|(node, _)| gone(node));
        self.by = kept;
        lost.iter().map(|(_, n)| *n as usize).sum()
    }

    /// Gives the unclaimed to `node`.
    fn claim(&mut self, node: &str) {
        if let Some(i) = self.by.iter().position(|(owner, _)| owner.is_empty()) {
            let (_, n) = self.by.remove(i);
            self.add_to(node, n);
        }
    }
}

/// The runs a halt dropped, for a caller that never saw its reply.
#[derive(Clone)]
pub(crate) struct LastHalt {
    pub(crate) call: String,
    pub(crate) dropped: Vec<RunRecord>,
    pub(crate) ended: bool,
}

/// The decision of an applied firing, kept small (one per task).
#[derive(Clone)]
pub(crate) struct LastFire {
    /// The version it fired, and the slot it was armed for: its identity.
    pub(crate) version: u64,
    pub(crate) armed_slot: DateTime<Utc>,
    /// The run it dispatched (0: none), and whether it skipped the slot
    /// (overlap) or passed over it (catch-up).
    pub(crate) run: u64,
    pub(crate) skipped: bool,
    pub(crate) passed_over: bool,
    /// Missed slots it passed over.
    pub(crate) passed: u64,
    /// The slot had been claimed before: the firing only advanced the task.
    pub(crate) claimed_before: bool,
    /// The replica whose step it was ("" until claimed, and in the memory
    /// store).
    pub(crate) node: String,
    pub(crate) cancel: Vec<u64>,
    pub(crate) dropped: Vec<RunRecord>,
    pub(crate) ended: bool,
}

impl Stored {
    pub(crate) fn view(&self) -> TaskRecord {
        let mut record = self.record.clone();
        record.last_result = self.last_result.clone();
        record.health = self.health.clone();
        record.active_runs = self.runs.len() + self.owed.total();
        record
    }

    /// Terminal with no run left and no result owed: the moment its end is
    /// announced.
    pub(crate) fn ended(&self) -> bool {
        self.record.state.is_terminal() && self.runs.is_empty() && self.owed.total() == 0
    }

    /// A task as first stored.
    pub(crate) fn new(record: TaskRecord, request_id: Option<&str>) -> Stored {
        Stored {
            record: TaskRecord {
                last_result: None,
                active_runs: 0,
                ..record
            },
            request_id: request_id.map(str::to_string),
            last_claimed: None,
            runs: Vec::new(),
            owed: Owed::default(),
            last_result: None,
            health: Default::default(),
            last_fire: None,
            last_halt: None,
            last_trigger: None,
        }
    }

    /// Replaces spec and schedule fields if `record.version` is the stored
    /// one; see [`super::Store::update_task`].
    pub(crate) fn update(&mut self, record: TaskRecord) -> Option<TaskRecord> {
        if self.record.version != record.version {
            return None;
        }
        self.record = TaskRecord {
            version: record.version + 1,
            last_result: None,
            active_runs: 0,
            ..record
        };
        Some(self.view())
    }

    /// Whether [`super::Store::delete_task`] at `version` may remove it.
    pub(crate) fn deletable(&self, version: u64) -> bool {
        self.record.version == version && self.runs.is_empty()
    }

    /// Dispatches a manual run; see [`super::Store::trigger`].
    pub(crate) fn trigger(&mut self, occurrence_id: String, now: DateTime<Utc>) -> Triggered {
        // Not twice for one call (occurrence ids of triggers are unique).
        if let Some(start) = self.queued_run(&occurrence_id) {
            return Triggered::Done(Fire {
                task: self.view(),
                dispatch: Dispatch::Start(start),
                passed: 0,
                cancel: Vec::new(),
                dropped: Vec::new(),
                ended: false,
            });
        }
        if self.record.state.is_terminal() {
            return Triggered::Terminal(self.view());
        }
        let decision = decide(self.record.spec.overlap, &self.runs);
        if decision == Decision::Skip {
            return Triggered::Busy(self.view());
        }
        self.record.run_count += 1;
        self.record.version += 1;
        let run = RunRecord {
            task_id: self.record.id.clone(),
            run: self.record.run_count,
            trigger: Trigger::Manual,
            scheduled_at: now,
            occurrence_id,
            retry_deadline: self.retry_deadline(),
            phase: RunPhase::Queued,
            fence: self.record.version,
            runner: String::new(),
        };
        let occurrence_id = run.occurrence_id.clone();
        let (dispatch, cancel, dropped) = self.apply(decision, run);
        self.last_trigger = Some(LastTrigger {
            occurrence_id,
            cancel: cancel.clone(),
            dropped: dropped.clone(),
        });
        Triggered::Done(Fire {
            task: self.view(),
            dispatch,
            passed: 0,
            cancel,
            dropped,
            ended: false,
        })
    }

    /// What the trigger with `occurrence_id` did, if it applied and left
    /// something to do (its run still queued; runs it cancelled or dropped,
    /// while it is the task's last trigger): for a caller that never saw
    /// its reply. None when it did not apply, or nothing is left to do.
    pub(crate) fn applied_trigger(&self, occurrence_id: &str) -> Option<Fire> {
        let start = self.queued_run(occurrence_id);
        let (cancel, dropped) = match &self.last_trigger {
            Some(last) if last.occurrence_id == occurrence_id => {
                (last.cancel.clone(), last.dropped.clone())
            }
            _ => (Vec::new(), Vec::new()),
        };
        if start.is_none() && cancel.is_empty() && dropped.is_empty() {
            return None;
        }
        Some(Fire {
            task: self.view(),
            dispatch: start.map_or(Dispatch::None, Dispatch::Start),
            passed: 0,
            cancel,
            dropped,
            ended: false,
        })
    }

    /// The run dispatched with `occurrence_id`, if it is still queued.
    pub(crate) fn queued_run(&self, occurrence_id: &str) -> Option<RunStart> {
        let run = self
            .runs
            .iter()
            .find(|r| r.occurrence_id == occurrence_id && r.phase == RunPhase::Queued)?;
        Some(RunStart {
            record: run.clone(),
            spec: self.record.spec.clone(),
        })
    }

    /// Pauses or cancels; see [`super::Store::halt`].
    pub(crate) fn halt(&mut self, halt: Halt, now: DateTime<Utc>) -> Halted {
        let (target, reason, drops_manual, call) = match halt {
            Halt::Pause { reason, call } => (TaskState::Paused, reason, false, call),
            Halt::Cancel { reason, call } => (TaskState::Cancelled, reason, true, call),
        };
        match (self.record.state, target) {
            (state, target) if state == target => return Halted::Unchanged(self.view()),
            (TaskState::Active, _) | (TaskState::Paused, TaskState::Cancelled) => {}
            _ => return Halted::Refused(self.view()),
        }
        let dropped = self.drop_runs(|run| drops_manual || run.trigger == Trigger::Scheduled);
        let task = &mut self.record;
        if target == TaskState::Paused {
            task.skipped_count += dropped.len() as u64;
        }
        task.state = target;
        task.next_run_at = None;
        task.reason = reason;
        task.updated_at = now;
        task.version += 1;
        self.last_halt = Some(LastHalt {
            call,
            dropped: dropped.clone(),
            ended: self.ended(),
        });
        Halted::Done {
            task: self.view(),
            dropped,
            ended: self.ended(),
        }
    }

    /// See [`super::Store::halt_dropped`].
    pub(crate) fn halt_dropped(&self, call: &str) -> Option<(Vec<RunRecord>, bool)> {
        let last = self.last_halt.as_ref().filter(|last| last.call == call)?;
        Some((last.dropped.clone(), last.ended))
    }

    /// Moves queued run `run` to running; false when it was dropped.
    pub(crate) fn start(&mut self, run: u64) -> bool {
        match self.runs.iter_mut().find(|r| r.run == run) {
            Some(record) if record.phase == RunPhase::Queued => {
                record.phase = RunPhase::Running;
                true
            }
            _ => false,
        }
    }

    /// Settles a recorded result (its cursor already set): keeps it as the
    /// last result, retires the run it finishes or the result it owed, and
    /// promotes a buffered run once no run is in flight. Returns the
    /// promoted run and whether the task ended with this result.
    pub(crate) fn settle(
        &mut self,
        result: &Arc<TaskResult>,
        finishes_run: bool,
        node: &str,
    ) -> (Option<RunStart>, bool) {
        if result.run > 0
            && self
                .last_result
                .as_ref()
                .is_none_or(|last| last.run <= result.run)
        {
            self.last_result = Some(result.clone());
        }
        if finishes_run && result.run > 0 {
            Arc::make_mut(&mut self.health).note(result);
        }
        let mut promoted = None;
        let settled = if finishes_run {
            let before = self.runs.len();
            // A scheduled run that never started and is reported SKIPPED
            // (one claimed ahead of its instant, then dropped by a pause)
            // no longer counts toward max_runs, as a queued run dropped by
            // a pause does not (`drop_runs`).
            let dropped = result.outcome == Outcome::Skipped
                && result.started_at.is_none()
                && result.trigger == Trigger::Scheduled;
            if dropped && self.runs.iter().any(|r| r.run == result.run) {
                let task = &mut self.record;
                task.scheduled_run_count = task.scheduled_run_count.saturating_sub(1);
            }
            self.runs.retain(|r| r.run != result.run);
            let in_flight = self.runs.iter().any(|r| r.phase != RunPhase::Buffered);
            if !in_flight
                && let Some(buffered) = self
                    .runs
                    .iter_mut()
                    .find(|r| r.phase == RunPhase::Buffered)
            {
                // A completed task still owes its buffered run: it was
                // counted (max_runs) when it was buffered.
                buffered.phase = RunPhase::Queued;
                // Runs where it is promoted, not where it was buffered.
                buffered.runner.clear();
                promoted = Some(RunStart {
                    record: buffered.clone(),
                    spec: self.record.spec.clone(),
                });
            }
            self.runs.len() < before
        } else {
            self.owed.settle(node)
        };
        // Only a result that settled something can end the task, so its end
        // is reported once.
        (promoted, settled && self.ended())
    }

    /// Applies the overlap policy to a new scheduled run of `slot`: counts
    /// it as run or skipped and returns what [`Stored::apply`] decided.
    fn dispatch_slot(
        &mut self,
        task_id: TaskId,
        slot: DateTime<Utc>,
        occurrence_id: String,
    ) -> (Dispatch, Vec<u64>, Vec<RunRecord>) {
        let decision = decide(self.record.spec.overlap, &self.runs);
        let task = &mut self.record;
        if decision == Decision::Skip {
            task.skipped_count += 1;
        } else {
            task.run_count += 1;
            task.scheduled_run_count += 1;
        }
        let run = RunRecord {
            task_id,
            run: self.record.run_count,
            trigger: Trigger::Scheduled,
            scheduled_at: slot,
            occurrence_id,
            retry_deadline: None,
            phase: RunPhase::Queued,
            // The version this firing step ends with.
            fence: self.record.version + 1,
            runner: String::new(),
        };
        self.apply(decision, run)
    }

    /// Takes the run records of processes that stopped (`gone(runner)`;
    /// found at a start, or when a replica's lease lapsed): runs not
    /// started are dropped as at a pause, running ones are given up; each
    /// is then owed a result. Returns them with the number of results the
    /// processes gone owed, now lost (decided, never recorded; they no
    /// longer hold the task), and a run buffered behind them, promoted.
    pub(crate) fn abandon(
        &mut self,
        gone: impl Fn(&str) -> bool,
    ) -> (Vec<RunRecord>, usize, Option<RunStart>) {
        let mut runs = self.drop_runs(|run| gone(&run.runner));
        let (running, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|run| gone(&run.runner));
        self.runs = kept;
        let lost = self.owed.take(&gone);
        self.owed.add(running.len());
        runs.extend(running);
        // A run a live replica buffered behind one given up here goes now,
        // as it would have when that one finished (its result, ABANDONED,
        // settles no run, so nothing else would promote it).
        let mut promoted = None;
        if !runs.is_empty()
            && !self.runs.iter().any(|r| r.phase != RunPhase::Buffered)
            && let Some(buffered) = self.runs.iter_mut().find(|r| r.phase == RunPhase::Buffered)
        {
            buffered.phase = RunPhase::Queued;
            buffered.runner.clear();
            promoted = Some(RunStart {
                record: buffered.clone(),
                spec: self.record.spec.clone(),
            });
        }
        (runs, lost, promoted)
    }

    /// Marks the runs no replica has claimed yet (new, or promoted) as
    /// `runner`'s, and the results owed that the step decided: the replica
    /// whose step dispatched them runs them, and records those.
    pub(crate) fn claim_runs(&mut self, runner: &str) {
        for run in self.runs.iter_mut().filter(|run| run.runner.is_empty()) {
            run.runner = runner.to_string();
        }
        self.owed.claim(runner);
        if let Some(last) = self.last_fire.as_mut()
            && last.node.is_empty()
        {
            last.node = runner.to_string();
        }
    }

    /// Drops the runs `drop` selects, which have not started: each still
    /// gets a result (owed until recorded); a scheduled one no longer
    /// counts toward max_runs. Run numbers are never given back.
    fn drop_runs(&mut self, drop: impl Fn(&RunRecord) -> bool) -> Vec<RunRecord> {
        let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runs)
            .into_iter()
            .partition(|run| run.phase != RunPhase::Running && drop(run));
        self.runs = kept;
        let scheduled = dropped
            .iter()
            .filter(|run| run.trigger == Trigger::Scheduled)
            .count() as u64;
        let task = &mut self.record;
        task.scheduled_run_count = task.scheduled_run_count.saturating_sub(scheduled);
        self.owed.add(dropped.len());
        dropped
    }

    /// Applies `decision` (made by [`decide`] over these runs) to the new
    /// run `run`; returns what was dispatched, the running runs to cancel
    /// and the queued ones dropped.
    fn apply(
        &mut self,
        decision: Decision,
        run: RunRecord,
    ) -> (Dispatch, Vec<u64>, Vec<RunRecord>) {
        let mut cancel = Vec::new();
        let mut dropped = Vec::new();
        let dispatch = match decision {
            Decision::Skip => {
                self.owed.add(1);
                Dispatch::Skipped
            }
            Decision::Start | Decision::CancelThenStart => {
                if decision == Decision::CancelThenStart {
                    dropped = self.drop_runs(|_| true);
                    cancel = self.runs.iter().map(|r| r.run).collect();
                }
                self.runs.push(run.clone());
                Dispatch::Start(RunStart {
                    record: run,
                    spec: self.record.spec.clone(),
                })
            }
            Decision::Buffer => {
                self.runs.push(RunRecord {
                    phase: RunPhase::Buffered,
                    ..run
                });
                Dispatch::Buffered
            }
        };
        (dispatch, cancel, dropped)
    }

    /// Points the task at `next`, or completes it when there is none or
    /// max_runs is reached.
    fn advance(&mut self, next: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let task = &mut self.record;
        let exhausted = task
            .spec
            .schedule
            .max_runs
            .is_some_and(|max| task.scheduled_run_count >= max);
        match next {
            Some(next) if !exhausted => task.next_run_at = Some(next),
            _ => {
                task.state = TaskState::Completed;
                task.next_run_at = None;
                task.updated_at = now;
            }
        }
    }

    /// Retries of a run dispatched now stop at the next slot, or for the
    /// task's last run at `end_at` (if set; otherwise after max_attempts).
    pub(crate) fn retry_deadline(&self) -> Option<DateTime<Utc>> {
        self.record.next_run_at.or(self.record.spec.schedule.end_at)
    }

    /// Answers a retry of the last applied firing as the first attempt was
    /// answered, as far as it still holds (a run since started or dropped is
    /// not handed out again).
    fn replay(&self, last: &LastFire) -> Fired {
        let dispatch = if last.skipped {
            Dispatch::Skipped
        } else if last.passed_over {
            Dispatch::PassedOver
        } else {
            match self.runs.iter().find(|r| r.run == last.run) {
                // Queued, or started by that firing step itself: either way
                // never handed out, since its reply was lost.
                Some(run) if matches!(run.phase, RunPhase::Queued | RunPhase::Running) => {
                    Dispatch::Start(RunStart {
                        record: run.clone(),
                        spec: self.record.spec.clone(),
                    })
                }
                Some(run) if run.phase == RunPhase::Buffered => Dispatch::Buffered,
                _ => Dispatch::None,
            }
        };
        let fire = Fire {
            task: self.view(),
            dispatch,
            passed: last.passed,
            cancel: last.cancel.clone(),
            dropped: last.dropped.clone(),
            ended: last.ended,
        };
        if last.claimed_before {
            Fired::AlreadyClaimed(fire)
        } else {
            Fired::Done(fire)
        }
    }

    /// Fires one due slot; see [`Store::fire`].
    pub(crate) fn fire(&mut self, f: Firing) -> Fired {
        if f.retry
            && let Some(last) = &self.last_fire
            && last.version == f.version
            && last.armed_slot == f.armed_slot
        {
            return self.replay(last);
        }
        let task = &self.record;
        if task.version != f.version
            || task.state != TaskState::Active
            || task.next_run_at != Some(f.armed_slot)
        {
            return Fired::Stale;
        }
        if f.ahead && (!self.runs.is_empty() || self.owed.total() > 0) {
            return Fired::NotAhead;
        }
        if self.last_claimed.is_some_and(|claimed| f.slot <= claimed) {
            self.advance(f.next, f.now);
            // Its retry is answered the same way: a lost reply must not
            // leave the task unarmed (a Stale answer arms nothing).
            self.last_fire = Some(LastFire {
                version: self.record.version,
                armed_slot: f.armed_slot,
                run: 0,
                skipped: false,
                passed_over: false,
                passed: 0,
                claimed_before: true,
                cancel: Vec::new(),
                dropped: Vec::new(),
                ended: self.ended(),
                node: String::new(),
            });
            self.record.version += 1;
            return Fired::AlreadyClaimed(Fire {
                task: self.view(),
                dispatch: Dispatch::None,
                passed: 0,
                cancel: Vec::new(),
                dropped: Vec::new(),
                ended: self.ended(),
            });
        }
        self.last_claimed = Some(f.slot);
        if f.passed > 0 {
            // The one catch-up result the caller records for them.
            self.owed.add(1);
        }
        let task = &mut self.record;
        task.skipped_count = task.skipped_count.saturating_add(f.passed);
        // Before advancing: runs CANCEL_RUNNING drops stop counting toward
        // max_runs, which decides whether this slot completes the task.
        let (mut dispatch, cancel, dropped) = if f.run {
            self.dispatch_slot(f.task_id, f.slot, f.occurrence_id)
        } else {
            // Passed over by catch-up (counted in `passed`): claimed above,
            // so it never starts, and no run record changes.
            (Dispatch::PassedOver, Vec::new(), Vec::new())
        };
        self.advance(f.next, f.now);
        // Retries stop at the slot after this one, known only now.
        let deadline = self.retry_deadline();
        // Started in this step when the caller has a slot for it.
        let phase = if f.start {
            RunPhase::Running
        } else {
            RunPhase::Queued
        };
        let new_run = match &mut dispatch {
            Dispatch::Start(start) => {
                start.record.retry_deadline = deadline;
                start.record.phase = phase;
                true
            }
            Dispatch::Buffered => true,
            Dispatch::Skipped | Dispatch::PassedOver | Dispatch::None => false,
        };
        if new_run && let Some(record) = self.runs.last_mut() {
            record.retry_deadline = deadline;
            if matches!(dispatch, Dispatch::Start(_)) {
                record.phase = phase;
            }
        }
        self.last_fire = Some(LastFire {
            version: self.record.version,
            armed_slot: f.armed_slot,
            run: if new_run { self.record.run_count } else { 0 },
            skipped: matches!(dispatch, Dispatch::Skipped),
            passed_over: matches!(dispatch, Dispatch::PassedOver),
            passed: f.passed,
            claimed_before: false,
            cancel: cancel.clone(),
            dropped: dropped.clone(),
            ended: self.ended(),
            node: String::new(),
        });
        self.record.version += 1;
        Fired::Done(Fire {
            task: self.view(),
            dispatch,
            passed: f.passed,
            cancel,
            dropped,
            ended: self.ended(),
        })
    }
}

