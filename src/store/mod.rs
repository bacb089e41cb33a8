//! Where tasks and results live. The [`Store`] trait is shaped for a store
//! shared by replicas (Redis, in a later version): every task write is a
//! compare-and-set on its version, each scheduled slot is claimed once, and
//! the result log hands out cursors ordered by append. [`memory`] is the
//! embedded default. This module knows nothing of gRPC or of timers.

pub mod memory;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::task::{TaskId, TaskRecord, TaskResult, TaskState};

/// Failures of a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record changed since it was read; the caller re-reads and retries.
    #[error("task {task_id} was changed concurrently")]
    Conflict {
        /// The task.
        task_id: TaskId,
    },
    /// Insert of an id that exists.
    #[error("task {task_id} already exists")]
    Exists {
        /// The task.
        task_id: TaskId,
    },
    /// A cursor that this log did not hand out, or that is malformed.
    #[error("cursor {cursor:?} is not valid: {reason}")]
    InvalidCursor {
        /// The cursor as given.
        cursor: String,
        /// Why.
        reason: &'static str,
    },
    /// Results after the cursor were dropped by retention (or the log was
    /// restarted); resuming from it would silently skip them.
    #[error(
        "results after cursor {cursor:?} are no longer retained; oldest cursor still held: {oldest:?}"
    )]
    CursorExpired {
        /// The cursor as given.
        cursor: String,
        /// The oldest result still held, empty if none.
        oldest: String,
        /// A cursor that replays everything still held.
        resume: String,
    },
}

/// Which tasks a listing returns.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only tasks carrying all of these labels.
    pub labels: BTreeMap<String, String>,
}

impl TaskFilter {
    /// Whether `task` passes.
    pub fn matches(&self, task: &TaskRecord) -> bool {
        self.state.is_none_or(|s| s == task.state)
            && self
                .labels
                .iter()
                .all(|(k, v)| task.spec.labels.get(k) == Some(v))
    }
}

/// Result of an insert.
#[derive(Debug)]
pub enum Inserted {
    /// The record was stored.
    Created(TaskRecord),
    /// A registration with the same request id made this task earlier.
    SameRequest(TaskRecord),
}

/// Storage of tasks and results.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new task. Fails with [`StoreError::Exists`] when the id is
    /// taken; with a request id seen before, returns that earlier task.
    async fn insert_task(
        &self,
        record: TaskRecord,
        request_id: Option<&str>,
    ) -> Result<Inserted, StoreError>;
    /// The task a registration with this request id created, if it exists.
    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Reads a task.
    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError>;
    /// Replaces a task if its stored version is `record.version`; the stored
    /// copy gets version + 1, which is returned.
    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError>;
    /// Removes a task and its results if its version still matches.
    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError>;
    /// Tasks ordered by id, strictly after `after`, at most `limit`.
    async fn list_tasks(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Number of tasks held.
    async fn count_tasks(&self) -> Result<usize, StoreError>;
    /// Claims the start of `task`'s slot. True for exactly one caller per
    /// (task, slot) across every process sharing the store.
    async fn claim_slot(&self, task: &TaskId, slot: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Appends a result, applying retention; returns it with its cursor set.
    async fn append_result(&self, result: TaskResult) -> Result<TaskResult, StoreError>;
    /// Retained results after `after` (all retained when None), oldest
    /// first, at most `limit`, only of `tasks` when not empty.
    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<TaskResult>, StoreError>;
    /// The cursor of the newest result, or the log's start cursor when it is
    /// empty: resuming from it replays nothing already appended.
    async fn head_cursor(&self) -> Result<String, StoreError>;
    /// Orders two cursors of this log; None when either is not one of its cursors.
    fn cursor_seq(&self, cursor: &str) -> Option<u64>;
}
