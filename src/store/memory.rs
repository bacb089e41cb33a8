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
    Abandoned, Fire, RunRecord, Fired, Firing, Halt, Halted, Inserted, Recorded, Recording, RunStart, Store, StoreError, TaskFilter,
    Triggered, stored::Stored,
};
use crate::task::{TaskId, TaskRecord, TaskResult};

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

#[derive(Default)]
struct Inner {
    /// Tasks by id. Hashed, not ordered: firing, starting and recording
    /// look a task up for every run, and a B-tree of string keys made those
    /// lookups a tenth of the server's CPU at 30,000 runs/s (profiled).
    tasks: HashMap<TaskId, Stored>,
    /// The ids in order, for listing pages.
    order: BTreeSet<TaskId>,
    request_ids: HashMap<String, TaskId>,
    /// The key of spec fingerprints, made at first use.
    fingerprint_key: Option<[u8; 32]>,
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
        let stored = Stored::new(record, request_id);
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
        let id = record.id.clone();
        inner
            .tasks
            .get_mut(&id)
            .and_then(|stored| stored.update(record))
            .ok_or(StoreError::Conflict { task_id: id })
    }

    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let request_id = match inner.tasks.get(id) {
            Some(stored) if stored.deletable(version) => {
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

    async fn count_tasks_in(&self, prefix: &str) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .tasks
            .keys()
            .filter(|id| id.as_str().starts_with(prefix))
            .count())
    }

    async fn fingerprint_key(&self, candidate: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        // One process holds the tasks: its key is the store's.
        Ok(self.lock().fingerprint_key.get_or_insert(candidate).to_vec())
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
        Ok(match inner.tasks.get_mut(id) {
            Some(stored) => stored.trigger(occurrence_id, now),
            None => Triggered::NotFound,
        })
    }

    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        now: DateTime<Utc>,
    ) -> Result<Halted, StoreError> {
        let mut inner = self.lock();
        Ok(match inner.tasks.get_mut(id) {
            Some(stored) => stored.halt(halt, now),
            None => Halted::NotFound,
        })
    }

    async fn halt_dropped(
        &self,
        id: &TaskId,
        call: &str,
    ) -> Result<Option<(Vec<RunRecord>, bool)>, StoreError> {
        Ok(self
            .lock()
            .tasks
            .get(id)
            .and_then(|stored| stored.halt_dropped(call)))
    }

    async fn applied_trigger(
        &self,
        id: &TaskId,
        occurrence_id: &str,
    ) -> Result<Option<Fire>, StoreError> {
        Ok(self
            .lock()
            .tasks
            .get(id)
            .and_then(|stored| stored.applied_trigger(occurrence_id)))
    }

    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<Vec<Abandoned>, StoreError> {
        let mut inner = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| {
                let (runs, lost_results, promoted) =
                    inner.tasks.get_mut(id)?.abandon(|_| true);
                Some(Abandoned {
                    task_id: id.clone(),
                    runs,
                    lost_results,
                    promoted,
                })
            })
            .collect())
    }

    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError> {
        let mut inner = self.lock();
        Ok(runs
            .iter()
            .map(|start| {
                inner
                    .tasks
                    .get_mut(&start.record.task_id)
                    .is_some_and(|stored| stored.start(start.record.run))
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
            ..
        } in batch
        {
            let result = self.append(&mut inner, result.clone());
            if let Some(stored) = inner.tasks.get_mut(&result.task_id) {
                let (promoted, ended) = stored.settle(&result, *finishes_run, "");
                recorded.promoted.extend(promoted);
                if ended {
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
        store::{Dispatch, RunPhase},
        task::TaskState,
    };
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
            start: false,
            ahead: false,
        }
    }

    async fn fire_one(store: &MemoryStore, firing: Firing) -> Fired {
        store.fire(vec![firing]).await.unwrap().remove(0)
    }

    /// A store keeping 10 results per task and in total.
    fn small_store() -> MemoryStore {
        MemoryStore::new(Retention {
            per_task: 10,
            total: 10,
            max_bytes: 1000,
        })
    }

    #[tokio::test]
    async fn only_a_retry_gets_the_answer_of_an_applied_firing_again() {
        let store = small_store();
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
    async fn a_firing_with_a_free_run_slot_starts_its_run_in_the_same_step() {
        let store = small_store();
        let armed = task(&store, "now", OverlapPolicy::Skip).await;
        let started = Firing {
            start: true,
            ..firing(&armed, false)
        };
        let Fired::Done(first) = fire_one(&store, started.clone()).await else {
            panic!("fires");
        };
        let Dispatch::Start(run) = first.dispatch else {
            panic!("dispatches its run");
        };
        assert_eq!(run.record.phase, RunPhase::Running);
        // Already running: no second start step takes it.
        assert_eq!(store.start_runs(std::slice::from_ref(&run)).await.unwrap(), [false]);
        // The retry of a firing whose reply was lost hands the run out
        // again: nobody ran it, since nobody saw that reply.
        let Fired::Done(again) = fire_one(&store, Firing { retry: true, ..started }).await else {
            panic!("a retry is answered");
        };
        assert!(matches!(
            again.dispatch,
            Dispatch::Start(ref s) if s.record.run == 1 && s.record.phase == RunPhase::Running
        ));
        assert_eq!(again.task.run_count, 1, "counted once");
    }

    #[tokio::test]
    async fn passed_over_slots_are_counted_once_and_a_retry_repeats_the_count() {
        let store = small_store();
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
        let store = small_store();
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
                    claim_lapsed: false,
                    ..result("passed", 0)
                },
                finishes_run: false,
            fence: 0,
        }])
            .await
            .unwrap();
        assert_eq!(recorded.ended, vec![armed.id.clone()], "then it ends");
    }

    #[tokio::test]
    async fn a_firing_ahead_is_applied_only_to_a_task_with_no_run_in_flight() {
        let store = small_store();
        let armed = task(&store, "ahead", OverlapPolicy::Allow).await;
        let ahead = |task: &TaskRecord| Firing {
            ahead: true,
            start: true,
            ..firing(task, false)
        };
        let Fired::Done(first) = fire_one(&store, ahead(&armed)).await else {
            panic!("an idle task is fired ahead");
        };
        assert_eq!(first.task.run_count, 1);
        // Its run is in flight: the next slot's overlap decision waits for
        // its instant, and nothing changes meanwhile.
        let before = store.get_task(&armed.id).await.unwrap().unwrap();
        assert!(matches!(fire_one(&store, ahead(&first.task)).await, Fired::NotAhead));
        let after = store.get_task(&armed.id).await.unwrap().unwrap();
        assert_eq!((after.version, after.run_count), (before.version, before.run_count));
        // At its instant the same slot fires as usual.
        let Fired::Done(second) = fire_one(&store, firing(&first.task, false)).await else {
            panic!("fires at its instant");
        };
        assert_eq!(second.task.run_count, 2);
    }

    #[tokio::test]
    async fn a_task_does_not_end_while_a_dropped_runs_result_is_owed() {
        let store = small_store();
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
            .halt(
                &armed.id,
                Halt::Cancel {
                    reason: String::new(),
                    call: "c1".into(),
                },
                t(3),
            )
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
        fence: 0,
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
            claim_lapsed: false,
            executor: Default::default(),
            wire: Default::default(),
        }
    }

    async fn append(store: &MemoryStore, result: TaskResult) -> Arc<TaskResult> {
        let recording = Recording {
            result,
            finishes_run: false,
        fence: 0,
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
