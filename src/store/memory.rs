//! The embedded in-memory store: the default when no Redis URL is given.
//! Nothing survives a restart; each log gets a random epoch so a cursor from
//! an earlier process is recognised as lost rather than silently reused.
//! Every operation takes the one lock, does bounded work and never awaits
//! while holding it; a batch is applied under one acquisition, which is what
//! makes it all or nothing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Decision, Dispatch, Fire, Fired, Firing, Halt, Halted, Inserted, Recorded, Recording, RunPhase,
    RunRecord, RunStart, Store, StoreError, TaskFilter, Triggered, decide,
};
use crate::task::{TaskId, TaskRecord, TaskResult, TaskState, Trigger};

/// Retention bounds of the result log.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Results kept per task.
    pub per_task: usize,
    /// Results kept in total.
    pub total: usize,
    /// Output bytes kept in total: with outputs up to the cap, a count
    /// alone would let memory reach `total` times the cap.
    pub max_bytes: usize,
}

/// The in-memory store.
pub struct MemoryStore {
    /// Random per process: makes cursors of earlier processes detectably foreign.
    epoch: String,
    /// Retention bounds.
    retention: Retention,
    /// Everything else, behind one lock: each operation is short and never
    /// awaits while holding it.
    inner: Mutex<Inner>,
}

/// A task and what the store keeps beside it.
struct Stored {
    /// The record; its derived fields (`last_result`, `active_runs`) are
    /// filled in from the fields below on read.
    record: TaskRecord,
    /// The request id that registered it, so deleting it forgets that id
    /// without scanning every request id.
    request_id: Option<String>,
    /// Latest slot claimed: a slot at or before it is never started again.
    last_claimed: Option<DateTime<Utc>>,
    /// Runs dispatched and not yet recorded, oldest first.
    runs: Vec<RunRecord>,
    /// Results decided but not yet recorded (a skipped slot, a catch-up
    /// decision's, a run dropped before it started): the task has not ended
    /// while any is owed.
    owed: usize,
    /// Result of the most recent run (by run number).
    last_result: Option<Arc<TaskResult>>,
    /// What the last applied firing decided, so that a retry of it (its
    /// caller saw an error, e.g. a lost reply) gets the same answer instead
    /// of a stale one that would orphan the run it dispatched.
    last_fire: Option<LastFire>,
}

/// The decision of an applied firing, kept small (one per task).
struct LastFire {
    /// The version it fired, and the slot it was armed for: its identity.
    version: u64,
    armed_slot: DateTime<Utc>,
    /// The run it dispatched (0: none), and whether it skipped the slot
    /// (overlap) or passed over it (catch-up).
    run: u64,
    skipped: bool,
    passed_over: bool,
    /// Missed slots it passed over.
    passed: u64,
    cancel: Vec<u64>,
    dropped: Vec<RunRecord>,
    ended: bool,
}

impl Stored {
    fn view(&self) -> TaskRecord {
        let mut record = self.record.clone();
        record.last_result = self.last_result.clone();
        record.active_runs = self.runs.len() + self.owed;
        record
    }

    /// Terminal with no run left and no result owed: the moment its end is
    /// announced.
    fn ended(&self) -> bool {
        self.record.state.is_terminal() && self.runs.is_empty() && self.owed == 0
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
        self.owed += dropped.len();
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
                self.owed += 1;
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
    fn retry_deadline(&self) -> Option<DateTime<Utc>> {
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
                Some(run) if run.phase == RunPhase::Queued => Dispatch::Start(RunStart {
                    record: run.clone(),
                    spec: self.record.spec.clone(),
                }),
                Some(run) if run.phase == RunPhase::Buffered => Dispatch::Buffered,
                _ => Dispatch::None,
            }
        };
        Fired::Done(Fire {
            task: self.view(),
            dispatch,
            passed: last.passed,
            cancel: last.cancel.clone(),
            dropped: last.dropped.clone(),
            ended: last.ended,
        })
    }

    /// Fires one due slot; see [`Store::fire`].
    fn fire(&mut self, f: Firing) -> Fired {
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
        if self.last_claimed.is_some_and(|claimed| f.slot <= claimed) {
            self.advance(f.next, f.now);
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
            self.owed += 1;
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
        let new_run = match &mut dispatch {
            Dispatch::Start(start) => {
                start.record.retry_deadline = deadline;
                true
            }
            Dispatch::Buffered => true,
            Dispatch::Skipped | Dispatch::PassedOver | Dispatch::None => false,
        };
        if new_run && let Some(record) = self.runs.last_mut() {
            record.retry_deadline = deadline;
        }
        self.last_fire = Some(LastFire {
            version: self.record.version,
            armed_slot: f.armed_slot,
            run: if new_run { self.record.run_count } else { 0 },
            skipped: matches!(dispatch, Dispatch::Skipped),
            passed_over: matches!(dispatch, Dispatch::PassedOver),
            passed: f.passed,
            cancel: cancel.clone(),
            dropped: dropped.clone(),
            ended: self.ended(),
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
        };
        self.apply(decision, run)
    }
}

#[derive(Default)]
struct Inner {
    /// Tasks by id. Hashed, not ordered: firing, starting and recording
    /// look a task up for every run, and a B-tree of string keys made those
    /// lookups a tenth of the server's CPU at 30,000 runs/s (profiled).
    tasks: HashMap<TaskId, Stored>,
    /// The ids in order, for listing pages.
    order: BTreeSet<TaskId>,
    request_ids: HashMap<String, TaskId>,
    log: BTreeMap<u64, Arc<TaskResult>>,
    per_task: HashMap<TaskId, VecDeque<u64>>,
    /// Highest sequence number dropped by retention, over all tasks and per task:
    /// a reader resuming below it would miss results.
    evicted_max: u64,
    evicted_per_task: HashMap<TaskId, u64>,
    /// Output bytes of the results in `log`.
    bytes: usize,
    next_seq: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(retention: Retention) -> Self {
        Self {
            epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            retention: Retention {
                per_task: retention.per_task.max(1),
                total: retention.total.max(1),
                max_bytes: retention.max_bytes,
            },
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in
        // a way later readers would misinterpret, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cursor(&self, seq: u64) -> String {
        format!("{}-{}", self.epoch, seq)
    }

    fn parse_cursor(&self, cursor: &str) -> Result<u64, StoreError> {
        let invalid = |reason| StoreError::InvalidCursor {
            cursor: cursor.to_string(),
            reason,
        };
        let (epoch, seq) = cursor
            .rsplit_once('-')
            .ok_or_else(|| invalid("not a recur cursor"))?;
        let seq: u64 = seq.parse().map_err(|_| invalid("not a recur cursor"))?;
        if epoch.len() != self.epoch.len() || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("not a recur cursor"));
        }
        if epoch != self.epoch {
            // A well-formed cursor of another log: an earlier process whose
            // results are gone. Report it as lost, not as garbage.
            return Err(StoreError::CursorExpired {
                cursor: cursor.to_string(),
                oldest: String::new(),
                resume: String::new(),
            });
        }
        Ok(seq)
    }

    fn evict(inner: &mut Inner, seq: u64) {
        if let Some(result) = inner.log.remove(&seq) {
            inner.bytes -= result.output.len();
            inner.evicted_max = inner.evicted_max.max(seq);
            let mark = inner
                .evicted_per_task
                .entry(result.task_id.clone())
                .or_default();
            *mark = (*mark).max(seq);
        }
    }

    /// Appends one result and applies retention.
    fn append(&self, inner: &mut Inner, mut result: TaskResult) -> Arc<TaskResult> {
        let seq = inner.next_seq;
        inner.next_seq += 1;
        result.cursor = self.cursor(seq);
        let result = Arc::new(result);
        inner.bytes += result.output.len();
        inner.log.insert(seq, result.clone());
        let task_seqs = inner.per_task.entry(result.task_id.clone()).or_default();
        task_seqs.push_back(seq);
        let over_task = if task_seqs.len() > self.retention.per_task {
            task_seqs.pop_front()
        } else {
            None
        };
        if let Some(old) = over_task {
            Self::evict(inner, old);
        }
        // The newest result always stays, whatever its size.
        while inner.log.len() > 1
            && (inner.log.len() > self.retention.total || inner.bytes > self.retention.max_bytes)
        {
            let Some((&oldest, _)) = inner.log.first_key_value() else {
                break;
            };
            if let Some(task) = inner.log.get(&oldest).map(|r| r.task_id.clone())
                && let Some(seqs) = inner.per_task.get_mut(&task)
                && seqs.front() == Some(&oldest)
            {
                // The log's oldest result is also its task's oldest.
                seqs.pop_front();
            }
            Self::evict(inner, oldest);
        }
        result
    }

    /// Sequence numbers of retained results after `from` (inclusive), in log
    /// order, at most `limit`: through the per-task index when tasks are
    /// named, so a stream of one task never scans the whole log.
    fn seqs_from(inner: &Inner, from: u64, tasks: &[TaskId], limit: usize) -> Vec<u64> {
        if tasks.is_empty() {
            return inner
                .log
                .range(from..)
                .take(limit)
                .map(|(s, _)| *s)
                .collect();
        }
        let mut seqs: Vec<u64> = Vec::new();
        for task in tasks {
            if let Some(held) = inner.per_task.get(task) {
                let start = held.partition_point(|s| *s < from);
                seqs.extend(held.range(start..).take(limit));
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        seqs.truncate(limit);
        seqs
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert_task(
        &self,
        record: TaskRecord,
        request_id: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let mut inner = self.lock();
        if let Some(earlier) = request_id
            .and_then(|r| inner.request_ids.get(r))
            .and_then(|id| inner.tasks.get(id))
        {
            return Ok(Inserted::SameRequest(earlier.view()));
        }
        if inner.tasks.contains_key(&record.id) {
            return Err(StoreError::Exists {
                task_id: record.id.clone(),
            });
        }
        if let Some(request_id) = request_id {
            inner
                .request_ids
                .insert(request_id.to_string(), record.id.clone());
        }
        let stored = Stored {
            record: TaskRecord {
                last_result: None,
                active_runs: 0,
                ..record
            },
            request_id: request_id.map(str::to_string),
            last_claimed: None,
            runs: Vec::new(),
            owed: 0,
            last_result: None,
            last_fire: None,
        };
        let view = stored.view();
        inner.order.insert(view.id.clone());
        inner.tasks.insert(view.id.clone(), stored);
        Ok(Inserted::Created(view))
    }

    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .request_ids
            .get(request_id)
            .and_then(|id| inner.tasks.get(id))
            .map(Stored::view))
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.lock().tasks.get(id).map(Stored::view))
    }

    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.tasks.get_mut(&record.id) else {
            return Err(StoreError::Conflict { task_id: record.id });
        };
        if stored.record.version != record.version {
            return Err(StoreError::Conflict { task_id: record.id });
        }
        stored.record = TaskRecord {
            version: record.version + 1,
            last_result: None,
            active_runs: 0,
            ..record
        };
        Ok(stored.view())
    }

    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let request_id = match inner.tasks.get(id) {
            Some(stored) if stored.record.version == version && stored.runs.is_empty() => {
                stored.request_id.clone()
            }
            _ => {
                return Err(StoreError::Conflict {
                    task_id: id.clone(),
                });
            }
        };
        inner.tasks.remove(id);
        inner.order.remove(id);
        if let Some(request_id) = request_id {
            inner.request_ids.remove(&request_id);
        }
        inner.evicted_per_task.remove(id);
        // Deleting is the client's intent, not a retention loss: the task's
        // results go without raising the eviction mark.
        if let Some(seqs) = inner.per_task.remove(id) {
            for seq in seqs {
                if let Some(result) = inner.log.remove(&seq) {
                    inner.bytes -= result.output.len();
                }
            }
        }
        Ok(())
    }

    async fn list_tasks(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let inner = self.lock();
        let range = match after {
            Some(after) => inner
                .order
                .range::<TaskId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => inner.order.range::<TaskId, _>(..),
        };
        Ok(range
            .filter_map(|id| inner.tasks.get(id))
            .filter(|stored| filter.matches(&stored.record))
            .take(limit)
            .map(Stored::view)
            .collect())
    }

    async fn count_tasks(&self) -> Result<usize, StoreError> {
        Ok(self.lock().tasks.len())
    }

    async fn fire(&self, batch: Vec<Firing>) -> Result<Vec<Fired>, StoreError> {
        let mut inner = self.lock();
        Ok(batch
            .into_iter()
            .map(|firing| match inner.tasks.get_mut(&firing.task_id) {
                Some(stored) => stored.fire(firing),
                None => Fired::Stale,
            })
            .collect())
    }

    async fn trigger(
        &self,
        id: &TaskId,
        occurrence_id: String,
        now: DateTime<Utc>,
    ) -> Result<Triggered, StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.tasks.get_mut(id) else {
            return Ok(Triggered::NotFound);
        };
        if stored.record.state.is_terminal() {
            return Ok(Triggered::Terminal(stored.view()));
        }
        let decision = decide(stored.record.spec.overlap, &stored.runs);
        if decision == Decision::Skip {
            return Ok(Triggered::Busy(stored.view()));
        }
        stored.record.run_count += 1;
        stored.record.version += 1;
        let run = RunRecord {
            task_id: id.clone(),
            run: stored.record.run_count,
            trigger: Trigger::Manual,
            scheduled_at: now,
            occurrence_id,
            retry_deadline: stored.retry_deadline(),
            phase: RunPhase::Queued,
        };
        let (dispatch, cancel, dropped) = stored.apply(decision, run);
        Ok(Triggered::Done(Fire {
            task: stored.view(),
            dispatch,
            passed: 0,
            cancel,
            dropped,
            ended: false,
        }))
    }

    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        now: DateTime<Utc>,
    ) -> Result<Halted, StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.tasks.get_mut(id) else {
            return Ok(Halted::NotFound);
        };
        let (target, reason, drops_manual) = match halt {
            Halt::Pause { reason } => (TaskState::Paused, reason, false),
            Halt::Cancel { reason } => (TaskState::Cancelled, reason, true),
        };
        match (stored.record.state, target) {
            (state, target) if state == target => return Ok(Halted::Unchanged(stored.view())),
            (TaskState::Active, _) | (TaskState::Paused, TaskState::Cancelled) => {}
            _ => return Ok(Halted::Refused(stored.view())),
        }
        let dropped = stored.drop_runs(|run| drops_manual || run.trigger == Trigger::Scheduled);
        let task = &mut stored.record;
        if target == TaskState::Paused {
            task.skipped_count += dropped.len() as u64;
        }
        task.state = target;
        task.next_run_at = None;
        task.reason = reason;
        task.updated_at = now;
        task.version += 1;
        Ok(Halted::Done {
            task: stored.view(),
            dropped,
            ended: stored.ended(),
        })
    }

    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError> {
        let mut inner = self.lock();
        Ok(runs
            .iter()
            .map(|start| {
                let (id, run) = (&start.record.task_id, start.record.run);
                let record = inner
                    .tasks
                    .get_mut(id)
                    .and_then(|stored| stored.runs.iter_mut().find(|r| r.run == run));
                match record {
                    Some(record) if record.phase == RunPhase::Queued => {
                        record.phase = RunPhase::Running;
                        true
                    }
                    _ => false,
                }
            })
            .collect())
    }

    async fn record(&self, batch: &[Recording]) -> Result<Recorded, StoreError> {
        let mut inner = self.lock();
        let mut recorded = Recorded {
            results: Vec::with_capacity(batch.len()),
            ..Recorded::default()
        };
        for Recording {
            result,
            finishes_run,
        } in batch
        {
            let finishes_run = *finishes_run;
            let result = self.append(&mut inner, result.clone());
            if let Some(stored) = inner.tasks.get_mut(&result.task_id) {
                if result.run > 0
                    && stored
                        .last_result
                        .as_ref()
                        .is_none_or(|last| last.run <= result.run)
                {
                    stored.last_result = Some(result.clone());
                }
                let settled = if finishes_run {
                    let before = stored.runs.len();
                    stored.runs.retain(|r| r.run != result.run);
                    let in_flight = stored.runs.iter().any(|r| r.phase != RunPhase::Buffered);
                    if !in_flight
                        && let Some(buffered) = stored
                            .runs
                            .iter_mut()
                            .find(|r| r.phase == RunPhase::Buffered)
                    {
                        // A completed task still owes its buffered run: it
                        // was counted (max_runs) when it was buffered.
                        buffered.phase = RunPhase::Queued;
                        recorded.promoted.push(RunStart {
                            record: buffered.clone(),
                            spec: stored.record.spec.clone(),
                        });
                    }
                    stored.runs.len() < before
                } else {
                    let owed = stored.owed > 0;
                    stored.owed = stored.owed.saturating_sub(1);
                    owed
                };
                // Only a result that settled something can end the task, so
                // its end is reported once.
                if settled && stored.ended() {
                    recorded.ended.push(result.task_id.clone());
                }
            }
            recorded.results.push(result);
        }
        Ok(recorded)
    }

    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        let start = match after {
            Some(cursor) => Some(self.parse_cursor(cursor).map_err(|e| match e {
                StoreError::CursorExpired { cursor, .. } => {
                    let inner = self.lock();
                    StoreError::CursorExpired {
                        cursor,
                        oldest: oldest_held(&inner, tasks)
                            .map(|s| self.cursor(s))
                            .unwrap_or_default(),
                        resume: self.cursor(inner.evicted_max),
                    }
                }
                other => other,
            })?),
            None => None,
        };
        let inner = self.lock();
        if let Some(seq) = start {
            if seq >= inner.next_seq {
                return Err(StoreError::InvalidCursor {
                    cursor: self.cursor(seq),
                    reason: "ahead of the log",
                });
            }
            let lost_up_to = if tasks.is_empty() {
                inner.evicted_max
            } else {
                tasks
                    .iter()
                    .filter_map(|t| inner.evicted_per_task.get(t))
                    .copied()
                    .max()
                    .unwrap_or(0)
            };
            if seq < lost_up_to {
                return Err(StoreError::CursorExpired {
                    cursor: self.cursor(seq),
                    oldest: oldest_held(&inner, tasks)
                        .map(|s| self.cursor(s))
                        .unwrap_or_default(),
                    resume: self.cursor(lost_up_to),
                });
            }
        }
        let from = start.map_or(0, |s| s + 1);
        Ok(Self::seqs_from(&inner, from, tasks, limit)
            .into_iter()
            .filter_map(|seq| inner.log.get(&seq).cloned())
            .collect())
    }

    async fn head_cursor(&self) -> Result<String, StoreError> {
        let inner = self.lock();
        Ok(self.cursor(inner.next_seq - 1))
    }

    fn cursor_seq(&self, cursor: &str) -> Option<u64> {
        self.parse_cursor(cursor).ok()
    }
}

fn oldest_held(inner: &Inner, tasks: &[TaskId]) -> Option<u64> {
    MemoryStore::seqs_from(inner, 0, tasks, 1).first().copied()
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::{
        scheduler::schedule::{Limits, Schedule, ScheduleInput},
        task::{Action, CustomAction, Outcome, OverlapPolicy, RetryPolicy, TaskSpec, Trigger},
    };

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    /// A task every second from t(1), with `overlap`, inserted into `store`.
    async fn task(store: &MemoryStore, id: &str, overlap: OverlapPolicy) -> TaskRecord {
        let schedule = Schedule::from_input(
            ScheduleInput {
                every: Some(Duration::from_secs(1)),
                start_at: Some(t(1)),
                ..ScheduleInput::default()
            },
            &Limits::default(),
        )
        .unwrap();
        let spec = TaskSpec {
            schedule,
            action: Action::Custom(CustomAction {
                kind: "k".into(),
                payload: Bytes::new(),
            }),
            timeout: Duration::from_secs(1),
            overlap,
            retry: RetryPolicy::default(),
            labels: Default::default(),
            catchup_window: None,
        };
        let record = TaskRecord::new(TaskId::parse(id).unwrap(), Arc::new(spec), t(0), t(1));
        match store.insert_task(record, None).await.unwrap() {
            Inserted::Created(task) => task,
            other => panic!("{other:?}"),
        }
    }

    /// The firing of `task`'s next slot as armed now.
    fn firing(task: &TaskRecord, retry: bool) -> Firing {
        let slot = task.next_run_at.unwrap();
        Firing {
            task_id: task.id.clone(),
            version: task.version,
            armed_slot: slot,
            slot,
            run: true,
            passed: 0,
            next: Some(slot + chrono::Duration::seconds(1)),
            occurrence_id: format!("{}@{}", task.id, slot),
            now: slot,
            retry,
        }
    }

    async fn fire_one(store: &MemoryStore, firing: Firing) -> Fired {
        store.fire(vec![firing]).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn only_a_retry_gets_the_answer_of_an_applied_firing_again() {
        let store = MemoryStore::new(Retention {
            per_task: 10,
            total: 10,
            max_bytes: 1000,
        });
        let armed = task(&store, "a", OverlapPolicy::Skip).await;
        let Fired::Done(first) = fire_one(&store, firing(&armed, false)).await else {
            panic!("first firing applies");
        };
        assert!(matches!(first.dispatch, Dispatch::Start(ref s) if s.record.run == 1));
        // The same slot handed out again (not a retry) must not run twice.
        assert!(matches!(
            fire_one(&store, firing(&armed, false)).await,
            Fired::Stale
        ));
        // A retry (its caller never saw the first answer) gets it again.
        let Fired::Done(again) = fire_one(&store, firing(&armed, true)).await else {
            panic!("a retry is answered");
        };
        assert!(matches!(again.dispatch, Dispatch::Start(ref s) if s.record.run == 1));
        assert_eq!(again.task.run_count, 1, "counted once");
    }

    #[tokio::test]
    async fn passed_over_slots_are_counted_once_and_a_retry_repeats_the_count() {
        let store = MemoryStore::new(Retention {
            per_task: 10,
            total: 10,
            max_bytes: 1000,
        });
        let armed = task(&store, "late", OverlapPolicy::Skip).await;
        // Armed for t(1), fired at t(4.5): slots 1 to 3 passed over, 4 runs.
        let late = Firing {
            slot: t(4),
            passed: 3,
            next: Some(t(5)),
            now: t(4) + chrono::Duration::milliseconds(500),
            ..firing(&armed, false)
        };
        let Fired::Done(fire) = fire_one(&store, late.clone()).await else {
            panic!("fires");
        };
        assert_eq!(fire.passed, 3);
        assert!(matches!(fire.dispatch, Dispatch::Start(ref s) if s.record.scheduled_at == t(4)));
        assert_eq!((fire.task.skipped_count, fire.task.run_count), (3, 1));
        assert_eq!(fire.task.active_runs, 2, "the run and the catch-up result");
        // A retry planned later (one more slot passed) gets what was applied.
        let replanned = Firing {
            passed: 4,
            retry: true,
            ..late
        };
        let Fired::Done(again) = fire_one(&store, replanned).await else {
            panic!("a retry is answered");
        };
        assert_eq!(again.passed, 3);
        assert_eq!(again.task.skipped_count, 3, "counted once");
    }

    #[tokio::test]
    async fn a_slot_passed_over_is_claimed_and_advanced_past_without_a_run() {
        let store = MemoryStore::new(Retention {
            per_task: 10,
            total: 10,
            max_bytes: 1000,
        });
        let armed = task(&store, "passed", OverlapPolicy::Skip).await;
        // Slots 1 to 4 missed, none run; the schedule has no slot after 4.
        let passed_over = Firing {
            slot: t(4),
            run: false,
            passed: 4,
            next: None,
            now: t(9),
            ..firing(&armed, false)
        };
        let Fired::Done(fire) = fire_one(&store, passed_over.clone()).await else {
            panic!("applies");
        };
        assert!(matches!(fire.dispatch, Dispatch::PassedOver));
        assert!(fire.cancel.is_empty() && fire.dropped.is_empty());
        let task = &fire.task;
        assert_eq!((task.run_count, task.scheduled_run_count), (0, 0));
        assert_eq!((task.skipped_count, fire.passed), (4, 4));
        assert_eq!((task.state, task.next_run_at), (TaskState::Completed, None));
        assert!(!fire.ended, "the catch-up result is owed");
        let claimed = store
            .lock()
            .tasks
            .get(&armed.id)
            .and_then(|s| s.last_claimed);
        assert_eq!(claimed, Some(t(4)), "so it can never start later");
        // A retry is answered alike; the slot is not handed out again.
        let Fired::Done(again) = fire_one(
            &store,
            Firing {
                retry: true,
                ..passed_over
            },
        )
        .await
        else {
            panic!("a retry is answered");
        };
        assert!(matches!(again.dispatch, Dispatch::PassedOver));
        assert_eq!(again.task.skipped_count, 4);
        let recorded = store
            .record(&[Recording {
                result: TaskResult {
                    task_id: armed.id.clone(),
                    run: 0,
                    outcome: Outcome::Skipped,
                    skipped_slots: 4,
                    ..result("passed", 0)
                },
                finishes_run: false,
            }])
            .await
            .unwrap();
        assert_eq!(recorded.ended, vec![armed.id.clone()], "then it ends");
    }

    #[tokio::test]
    async fn a_task_does_not_end_while_a_dropped_runs_result_is_owed() {
        let store = MemoryStore::new(Retention {
            per_task: 10,
            total: 10,
            max_bytes: 1000,
        });
        let armed = task(&store, "b", OverlapPolicy::Allow).await;
        let Fired::Done(first) = fire_one(&store, firing(&armed, false)).await else {
            panic!("fires");
        };
        let Dispatch::Start(run1) = first.dispatch else {
            panic!("run 1 dispatched");
        };
        assert_eq!(store.start_runs(&[run1]).await.unwrap(), [true]);
        let Fired::Done(second) = fire_one(&store, firing(&first.task, false)).await else {
            panic!("fires");
        };
        assert_eq!(second.task.run_count, 2, "run 2 queued beside running run 1");
        let Halted::Done { dropped, ended, .. } = store
            .halt(&armed.id, Halt::Cancel { reason: String::new() }, t(3))
            .await
            .unwrap()
        else {
            panic!("cancels");
        };
        assert_eq!(dropped.iter().map(|r| r.run).collect::<Vec<_>>(), [2]);
        assert!(!ended, "run 1 still runs");
        let finished = |run: u64, outcome| Recording {
            result: TaskResult {
                run,
                outcome,
                task_id: armed.id.clone(),
                ..result("b", 0)
            },
            finishes_run: run == 1,
        };
        // Run 1 is recorded before the dropped run 2's result: no end yet.
        let recorded = store
            .record(&[finished(1, Outcome::Cancelled)])
            .await
            .unwrap();
        assert!(recorded.ended.is_empty(), "run 2's result is still owed");
        let recorded = store
            .record(&[finished(2, Outcome::Cancelled)])
            .await
            .unwrap();
        assert_eq!(recorded.ended, vec![armed.id.clone()], "then it ends, once");
        let view = store.get_task(&armed.id).await.unwrap().unwrap();
        assert!(view.has_ended());
    }

    fn result(task: &str, output: usize) -> TaskResult {
        TaskResult {
            task_id: TaskId::parse(task).unwrap(),
            run: 1,
            cursor: String::new(),
            scheduled_at: DateTime::<Utc>::UNIX_EPOCH,
            started_at: None,
            finished_at: DateTime::<Utc>::UNIX_EPOCH,
            outcome: Outcome::Succeeded,
            attempts: 1,
            trigger: Trigger::Manual,
            error: String::new(),
            output: Bytes::from(vec![b'x'; output]),
            output_truncated: false,
            http_status: 0,
            occurrence_id: String::new(),
            latency: Duration::ZERO,
            skipped_slots: 0,
            wire: Default::default(),
        }
    }

    async fn append(store: &MemoryStore, result: TaskResult) -> Arc<TaskResult> {
        let recording = Recording {
            result,
            finishes_run: false,
        };
        let mut recorded = store.record(&[recording]).await.unwrap();
        recorded.results.remove(0)
    }

    #[tokio::test]
    async fn retention_by_count_per_task_and_bytes_is_detected_as_loss() {
        let store = MemoryStore::new(Retention {
            per_task: 3,
            total: 100,
            max_bytes: 1000,
        });
        let first = append(&store, result("a", 10)).await;
        for _ in 0..3 {
            append(&store, result("a", 10)).await;
        }
        // a's first result went (per-task cap): resuming from before it is a loss.
        let none: &[TaskId] = &[];
        assert!(matches!(
            store.results_after(Some(&first.cursor), none, 10).await,
            Ok(v) if v.len() == 3
        ));
        let start = format!("{}-0", store.epoch);
        assert!(matches!(
            store.results_after(Some(&start), none, 10).await,
            Err(StoreError::CursorExpired { .. })
        ));
        // Big outputs push older results out by bytes, whatever the count.
        let b = TaskId::parse("b").unwrap();
        for _ in 0..5 {
            append(&store, result("b", 400)).await;
        }
        let held = store.results_after(None, &[], 100).await.unwrap();
        let bytes: usize = held.iter().map(|r| r.output.len()).sum();
        assert!(bytes <= 1000, "{bytes} bytes held");
        assert_eq!(held.iter().filter(|r| r.task_id == b).count(), 2);
        // The newest result stays even when it alone is over the budget.
        append(&store, result("c", 5000)).await;
        assert_eq!(store.results_after(None, &[], 100).await.unwrap().len(), 1);
    }
}
