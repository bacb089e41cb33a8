//! The embedded in-memory store: the default when no Redis URL is given.
//! Nothing survives a restart; each log gets a random epoch so a cursor from
//! an earlier process is recognised as lost rather than silently reused.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Inserted, Store, StoreError, TaskFilter};
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
    tasks: BTreeMap<TaskId, TaskRecord>,
    request_ids: HashMap<String, TaskId>,
    last_claimed: HashMap<TaskId, DateTime<Utc>>,
    log: BTreeMap<u64, TaskResult>,
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
            return Ok(Inserted::SameRequest(earlier.clone()));
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
        inner.tasks.insert(record.id.clone(), record.clone());
        Ok(Inserted::Created(record))
    }

    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .request_ids
            .get(request_id)
            .and_then(|id| inner.tasks.get(id))
            .cloned())
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.lock().tasks.get(id).cloned())
    }

    async fn update_task(&self, mut record: TaskRecord) -> Result<TaskRecord, StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.tasks.get_mut(&record.id) else {
            return Err(StoreError::Conflict { task_id: record.id });
        };
        if stored.version != record.version {
            return Err(StoreError::Conflict { task_id: record.id });
        }
        record.version += 1;
        *stored = record.clone();
        Ok(record)
    }

    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.tasks.get(id) {
            Some(stored) if stored.version == version => {}
            _ => {
                return Err(StoreError::Conflict {
                    task_id: id.clone(),
                });
            }
        }
        inner.tasks.remove(id);
        inner.request_ids.retain(|_, task| task != id);
        inner.last_claimed.remove(id);
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
                .tasks
                .range::<TaskId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => inner.tasks.range::<TaskId, _>(..),
        };
        Ok(range
            .map(|(_, task)| task)
            .filter(|task| filter.matches(task))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count_tasks(&self) -> Result<usize, StoreError> {
        Ok(self.lock().tasks.len())
    }

    async fn claim_slot(&self, task: &TaskId, slot: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let last = inner
            .last_claimed
            .entry(task.clone())
            .or_insert(DateTime::<Utc>::MIN_UTC);
        if slot <= *last {
            return Ok(false);
        }
        *last = slot;
        Ok(true)
    }

    async fn append_result(&self, mut result: TaskResult) -> Result<TaskResult, StoreError> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        result.cursor = self.cursor(seq);
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
            Self::evict(&mut inner, old);
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
            Self::evict(&mut inner, oldest);
        }
        Ok(result)
    }

    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<TaskResult>, StoreError> {
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
        Ok(inner
            .log
            .range(from..)
            .map(|(_, r)| r)
            .filter(|r| tasks.is_empty() || tasks.contains(&r.task_id))
            .take(limit)
            .cloned()
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
    inner
        .log
        .iter()
        .find(|(_, r)| tasks.is_empty() || tasks.contains(&r.task_id))
        .map(|(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::task::{Outcome, Trigger};

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
        }
    }

    #[tokio::test]
    async fn retention_by_count_per_task_and_bytes_is_detected_as_loss() {
        let store = MemoryStore::new(Retention {
            per_task: 3,
            total: 100,
            max_bytes: 1000,
        });
        let first = store.append_result(result("a", 10)).await.unwrap();
        for _ in 0..3 {
            store.append_result(result("a", 10)).await.unwrap();
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
            store.append_result(result("b", 400)).await.unwrap();
        }
        let held = store.results_after(None, &[], 100).await.unwrap();
        let bytes: usize = held.iter().map(|r| r.output.len()).sum();
        assert!(bytes <= 1000, "{bytes} bytes held");
        assert_eq!(held.iter().filter(|r| r.task_id == b).count(), 2);
        // The newest result stays even when it alone is over the budget.
        store.append_result(result("c", 5000)).await.unwrap();
        assert_eq!(store.results_after(None, &[], 100).await.unwrap().len(), 1);
    }
}
