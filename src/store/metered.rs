//! A [`Store`] that times every operation of the store it wraps, for the
//! `recur_store_operation_seconds` histogram: the scheduler wraps its store
//! in one, so each call site is measured without knowing it. Every method
//! of the trait is forwarded, the provided ones too (a default left in
//! place would silently stand in for the inner store's own).

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{
    Abandoned, Change, Checked, Fire, Fired, Firing, Halt, Halted, Inserted, LeaseChange,
    LeaseMode, LogSink, Recorded, Recording, RunRecord, RunStart, Store, StoreError, TaskFilter,
    Triggered,
};
use crate::{
    stats::{Stats, StoreOp},
    task::{TaskId, TaskRecord, TaskResult},
};

/// `inner`, timed into `stats`.
pub(crate) struct Metered {
    inner: Arc<dyn Store>,
    stats: Arc<Stats>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn Store>, stats: Arc<Stats>) -> Metered {
        Metered { inner, stats }
    }

    /// Runs `call`, counting its time (and its error, if any) under `op`.
    async fn timed<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let began = Instant::now();
        let result = call.await;
        crate::stats::observe(&self.stats.store_ops[op as usize], began.elapsed());
        if let Err(
            StoreError::Unavailable { .. } | StoreError::Corrupt { .. } | StoreError::Format { .. },
        ) = &result
        {
            Stats::add(&self.stats.store_errors[op as usize], 1);
        }
        result
    }
}

#[async_trait]
impl Store for Metered {
    async fn insert_task(
        &self,
        record: TaskRecord,
        request_id: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        self.timed(StoreOp::InsertTask, self.inner.insert_task(record, request_id))
            .await
    }

    async fn task_for_request(&self, request_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.timed(StoreOp::TaskForRequest, self.inner.task_for_request(request_id))
            .await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.timed(StoreOp::GetTask, self.inner.get_task(id)).await
    }

    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError> {
        self.timed(StoreOp::UpdateTask, self.inner.update_task(record))
            .await
    }

    async fn delete_task(&self, id: &TaskId, version: u64) -> Result<(), StoreError> {
        self.timed(StoreOp::DeleteTask, self.inner.delete_task(id, version))
            .await
    }

    async fn list_tasks(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        self.timed(StoreOp::ListTasks, self.inner.list_tasks(after, limit, filter))
            .await
    }

    async fn count_tasks(&self) -> Result<usize, StoreError> {
        self.timed(StoreOp::CountTasks, self.inner.count_tasks())
            .await
    }

    async fn count_tasks_in(&self, prefix: &str) -> Result<usize, StoreError> {
        self.timed(StoreOp::CountTasks, self.inner.count_tasks_in(prefix))
            .await
    }

    async fn fingerprint_key(&self, candidate: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        // Read once per process; not worth a series.
        self.inner.fingerprint_key(candidate).await
    }

    async fn fire(&self, batch: Vec<Firing>) -> Result<Vec<Fired>, StoreError> {
        self.timed(StoreOp::Fire, self.inner.fire(batch)).await
    }

    async fn trigger(
        &self,
        id: &TaskId,
        occurrence_id: String,
        now: DateTime<Utc>,
    ) -> Result<Triggered, StoreError> {
        self.timed(StoreOp::Trigger, self.inner.trigger(id, occurrence_id, now))
            .await
    }

    async fn applied_trigger(
        &self,
        id: &TaskId,
        occurrence_id: &str,
    ) -> Result<Option<Fire>, StoreError> {
        self.timed(
            StoreOp::AppliedTrigger,
            self.inner.applied_trigger(id, occurrence_id),
        )
        .await
    }

    async fn halt_dropped(
        &self,
        id: &TaskId,
        call: &str,
    ) -> Result<Option<(Vec<RunRecord>, bool)>, StoreError> {
        self.timed(StoreOp::HaltDropped, self.inner.halt_dropped(id, call))
            .await
    }

    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        now: DateTime<Utc>,
    ) -> Result<Halted, StoreError> {
        self.timed(StoreOp::Halt, self.inner.halt(id, halt, now))
            .await
    }

    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<Vec<Abandoned>, StoreError> {
        self.timed(StoreOp::AbandonRuns, self.inner.abandon_runs(ids))
            .await
    }

    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError> {
        self.timed(StoreOp::StartRuns, self.inner.start_runs(runs))
            .await
    }

    async fn record(&self, batch: &[Recording]) -> Result<Recorded, StoreError> {
        self.timed(StoreOp::Record, self.inner.record(batch)).await
    }

    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError> {
        self.timed(
            StoreOp::ResultsAfter,
            self.inner.results_after(after, tasks, limit),
        )
        .await
    }

    async fn head_cursor(&self) -> Result<String, StoreError> {
        self.timed(StoreOp::HeadCursor, self.inner.head_cursor())
            .await
    }

    fn cursor_seq(&self, cursor: &str) -> Option<u64> {
        self.inner.cursor_seq(cursor)
    }

    async fn check(&self) -> Result<Checked, StoreError> {
        self.timed(StoreOp::Check, self.inner.check()).await
    }

    async fn server_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.timed(StoreOp::ServerTime, self.inner.server_time())
            .await
    }

    fn tails_log(&self) -> bool {
        self.inner.tails_log()
    }

    async fn append_ends(&self, ends: &[TaskId]) -> Result<(), StoreError> {
        self.timed(StoreOp::AppendEnds, self.inner.append_ends(ends))
            .await
    }

    async fn tail(&self, after: String, sink: LogSink, drain: CancellationToken) {
        // Runs for the life of the store: not an operation to time.
        self.inner.tail(after, sink, drain).await
    }

    fn lease_every(&self) -> Option<std::time::Duration> {
        self.inner.lease_every()
    }

    async fn lease(&self, mode: LeaseMode) -> Result<Option<LeaseChange>, StoreError> {
        self.timed(StoreOp::Lease, self.inner.lease(mode)).await
    }

    fn owns(&self, id: &TaskId) -> bool {
        self.inner.owns(id)
    }

    async fn follow_changes(
        &self,
        sink: tokio::sync::mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) {
        self.inner.follow_changes(sink, stop).await
    }

    async fn take_stream_slot(
        &self,
        namespace: &str,
        holder: &str,
        max: usize,
    ) -> Result<Option<bool>, StoreError> {
        self.timed(
            StoreOp::StreamSlots,
            self.inner.take_stream_slot(namespace, holder, max),
        )
        .await
    }

    async fn keep_stream_slots(&self, slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        self.timed(StoreOp::StreamSlots, self.inner.keep_stream_slots(slots))
            .await
    }

    async fn release_stream_slots(&self, slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        self.timed(
            StoreOp::StreamSlots,
            self.inner.release_stream_slots(slots),
        )
        .await
    }
}
