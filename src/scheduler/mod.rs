//! The scheduler: the domain service behind every RPC. This file holds the
//! control calls (register, update, pause, resume, cancel, trigger, delete)
//! and shutdown; `firing` what happens when a slot is due and how runs are
//! recorded; `timer` the one timer queue; `run` a run's attempts;
//! `registry` per-task tokens and runs in flight; `retention` the sweep of
//! old terminal tasks; `schedule` the pure schedule maths. It never imports
//! tonic; errors are typed here and mapped to gRPC codes in `api::status`.

pub mod clock;
mod firing;
mod registry;
mod retention;
mod run;
pub mod schedule;
mod timer;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    action::Actions,
    results::Event,
    store::{Inserted, Store, StoreError, TaskFilter},
    task::{TaskId, TaskRecord, TaskSpec, TaskState, Trigger},
};
use clock::Clock;
use firing::{Decision, overlap_decision, policy_name};
use registry::{Registry, TaskHandle};
use timer::TimerHandle;

/// Delay before a firing that failed on the store is tried again.
const FIRING_RETRY: chrono::Duration = chrono::Duration::seconds(1);

/// Errors of scheduler operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Proto path of the field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A request needs something this server lacks.
    #[error("{field}: {reason}")]
    Unsupported {
        /// Proto path of the field.
        field: String,
        /// Why.
        reason: String,
    },
    /// No such task.
    #[error("task {task_id} not found")]
    NotFound {
        /// The id asked for.
        task_id: String,
    },
    /// The id is taken by a task with another spec.
    #[error("task {task_id} already exists with a different spec")]
    AlreadyExists {
        /// The id.
        task_id: TaskId,
    },
    /// The task's state forbids the operation.
    #[error("cannot {operation} task {task_id}: it is {}", state.name())]
    WrongState {
        /// The task.
        task_id: TaskId,
        /// Its state.
        state: TaskState,
        /// What was asked.
        operation: &'static str,
    },
    /// A manual trigger refused by the overlap policy.
    #[error("task {task_id} has a run in flight and its overlap policy is {policy}")]
    Busy {
        /// The task.
        task_id: TaskId,
        /// The policy.
        policy: &'static str,
    },
    /// The cap of open result streams is reached.
    #[error("the server has its maximum of {limit} result streams open")]
    TooManyStreams {
        /// The cap.
        limit: usize,
    },
    /// The task cap is reached.
    #[error("the server holds its maximum of {limit} tasks")]
    TooManyTasks {
        /// The cap.
        limit: usize,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Bounds the scheduler enforces.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Most tasks held.
    pub max_tasks: usize,
    /// How long terminal tasks stay readable.
    pub terminal_retention: Duration,
    /// Events buffered per reader in the broadcast before it must re-read
    /// the store.
    pub event_buffer: usize,
}

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    actions: Actions,
    clock: Clock,
    settings: SchedulerSettings,
    registry: Registry,
    /// Cancelled last: aborts every run still going.
    root: CancellationToken,
    /// Cancelled first: no run starts after it.
    stopping: CancellationToken,
    /// Runs, firings, the timer and the sweeper.
    tracker: TaskTracker,
    timer: TimerHandle,
    /// Receivers of the timer, taken by `start`.
    timer_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<timer::TimerCmd>>>,
    events: broadcast::Sender<Event>,
    /// Held while a result is appended and announced, so announcements come
    /// in cursor order and readers can de-duplicate by cursor.
    log_lock: tokio::sync::Mutex<()>,
    /// Serialises registrations so the task cap holds exactly.
    register_lock: tokio::sync::Mutex<()>,
}

impl Scheduler {
    /// A scheduler over `store`; call [`Scheduler::start`] to arm timers.
    pub fn new(
        store: Arc<dyn Store>,
        actions: Actions,
        clock: Clock,
        settings: SchedulerSettings,
        root: CancellationToken,
    ) -> Self {
        let (timer, timer_rx) = TimerHandle::new();
        let (events, _) = broadcast::channel(settings.event_buffer.max(16));
        Scheduler {
            inner: Arc::new(Inner {
                store,
                actions,
                clock,
                settings,
                registry: Registry::new(root.clone()),
                root,
                stopping: CancellationToken::new(),
                tracker: TaskTracker::new(),
                timer,
                timer_rx: std::sync::Mutex::new(Some(timer_rx)),
                events,
                log_lock: tokio::sync::Mutex::new(()),
                register_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Starts the timer and the retention sweeper, and arms every active
    /// task already in the store.
    pub async fn start(&self) -> Result<(), Error> {
        let rx = self
            .inner
            .timer_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(rx) = rx else { return Ok(()) };
        let inner = self.inner.clone();
        self.inner.tracker.spawn(timer::run(
            rx,
            self.inner.clock.clone(),
            self.inner.stopping.clone(),
            move |id, slot| {
                let inner = inner.clone();
                inner
                    .tracker
                    .clone()
                    .spawn(async move { inner.fire(id, slot).await });
            },
        ));
        let inner = self.inner.clone();
        self.inner
            .tracker
            .spawn(async move { inner.sweep_loop().await });
        let mut after: Option<TaskId> = None;
        loop {
            let page = self
                .inner
                .store
                .list_tasks(after.as_ref(), 1000, &TaskFilter::default())
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for task in &page {
                self.inner.arm(task);
            }
        }
        Ok(())
    }

    /// The clock the scheduler uses.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The actions runner (for validation against registered kinds).
    pub fn actions(&self) -> &Actions {
        &self.inner.actions
    }

    /// Subscribes to results and task ends from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Whether `task` is terminal and its last run has reported.
    pub fn is_finished(&self, task: &TaskRecord) -> bool {
        task.state.is_terminal() && !self.inner.registry.get(&task.id).is_some_and(|h| h.busy())
    }

    /// Registers a task, or returns the existing one for an identical retry.
    pub async fn register(
        &self,
        id: Option<TaskId>,
        spec: TaskSpec,
        request_id: Option<String>,
    ) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _serial = inner.register_lock.lock().await;
        // A request id makes a retry of a registration without a task id
        // idempotent; with a task id, the id itself does.
        let request_id = request_id.filter(|_| id.is_none());
        if let Some(request_id) = &request_id
            && let Some(earlier) = inner.store.task_for_request(request_id).await?
        {
            return Ok(earlier);
        }
        let id = id.unwrap_or_else(TaskId::generate);
        if let Some(existing) = inner.store.get_task(&id).await? {
            return if *existing.spec == spec {
                Ok(existing)
            } else {
                Err(Error::AlreadyExists { task_id: id })
            };
        }
        if inner.store.count_tasks().await? >= inner.settings.max_tasks {
            return Err(Error::TooManyTasks {
                limit: inner.settings.max_tasks,
            });
        }
        let now = inner.clock.now();
        let next = slot_after(&spec, now, now)?;
        let record = TaskRecord {
            id: id.clone(),
            spec: Arc::new(spec),
            state: TaskState::Active,
            created_at: now,
            updated_at: now,
            next_run_at: Some(next),
            run_count: 0,
            scheduled_run_count: 0,
            skipped_count: 0,
            last_result: None,
            reason: String::new(),
            version: 0,
        };
        let record = match inner.store.insert_task(record, request_id.as_deref()).await {
            Ok(Inserted::Created(record)) => record,
            Ok(Inserted::SameRequest(earlier)) => return Ok(earlier),
            Err(StoreError::Exists { task_id }) => return Err(Error::AlreadyExists { task_id }),
            Err(e) => return Err(e.into()),
        };
        inner.registry.handle(&id);
        inner.arm(&record);
        info!(task_id = %id, next_run_at = %next, "task registered");
        Ok(record)
    }

    /// Replaces the spec of a live task.
    pub async fn update(&self, id: &TaskId, spec: TaskSpec) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let mut task = inner.load(id).await?;
        if task.state.is_terminal() {
            return Err(wrong_state(&task, "update"));
        }
        let now = inner.clock.now();
        let next = slot_after(&spec, task.created_at, now)?;
        task.spec = Arc::new(spec);
        task.updated_at = now;
        if task.state == TaskState::Active {
            task.next_run_at = Some(next);
        }
        if task
            .spec
            .schedule
            .max_runs
            .is_some_and(|max| task.scheduled_run_count >= max)
        {
            task.state = TaskState::Completed;
            task.next_run_at = None;
        }
        let task = inner.store.update_task(task).await?;
        inner.arm(&task);
        inner.announce_if_finished(&task, &handle);
        info!(task_id = %id, "task updated");
        Ok(task)
    }

    /// Removes a terminal task and its results.
    pub async fn delete(&self, id: &TaskId) -> Result<(), Error> {
        let inner = &self.inner;
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let task = inner.load(id).await?;
        if !task.state.is_terminal() || handle.busy() {
            // A terminal task whose last run is still going keeps its id
            // until that run has reported.
            return Err(wrong_state(&task, "delete"));
        }
        inner.store.delete_task(id, task.version).await?;
        inner.registry.remove(id);
        info!(task_id = %id, "task deleted");
        Ok(())
    }

    /// Reads a task.
    pub async fn get(&self, id: &TaskId) -> Result<TaskRecord, Error> {
        self.inner.load(id).await
    }

    /// A page of tasks after `after`, and whether more may follow.
    pub async fn list(
        &self,
        after: Option<&TaskId>,
        limit: usize,
        filter: &TaskFilter,
    ) -> Result<(Vec<TaskRecord>, bool), Error> {
        let mut page = self
            .inner
            .store
            .list_tasks(after, limit + 1, filter)
            .await?;
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    /// Pauses a task; once this returns, no scheduled run starts.
    pub async fn pause(&self, id: &TaskId, reason: String) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let mut task = inner.load(id).await?;
        match task.state {
            TaskState::Paused => return Ok(task),
            TaskState::Cancelled | TaskState::Completed => {
                return Err(wrong_state(&task, "pause"));
            }
            TaskState::Active => {}
        }
        inner.timer.clear(id.clone());
        {
            let mut runs = handle.runs();
            if runs
                .pending
                .as_ref()
                .is_some_and(|p| p.trigger == Trigger::Scheduled)
            {
                runs.pending = None;
                task.skipped_count += 1;
                // It was counted when buffered but never starts: uncount it,
                // so max_runs still means runs started. Nothing can be
                // numbered after a pending run, so its number is reused.
                task.run_count = task.run_count.saturating_sub(1);
                task.scheduled_run_count = task.scheduled_run_count.saturating_sub(1);
            }
        }
        task.state = TaskState::Paused;
        task.next_run_at = None;
        task.reason = reason;
        task.updated_at = inner.clock.now();
        let task = inner.store.update_task(task).await?;
        info!(task_id = %id, "task paused");
        Ok(task)
    }

    /// Resumes a paused task from its next future slot.
    pub async fn resume(&self, id: &TaskId) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let mut task = inner.load(id).await?;
        match task.state {
            TaskState::Active => return Ok(task),
            TaskState::Cancelled | TaskState::Completed => {
                return Err(wrong_state(&task, "resume"));
            }
            TaskState::Paused => {}
        }
        let now = inner.clock.now();
        match task.spec.schedule.next_slot_after(task.created_at, now) {
            Some(next) => {
                task.state = TaskState::Active;
                task.next_run_at = Some(next);
            }
            None => {
                task.state = TaskState::Completed;
                task.next_run_at = None;
            }
        }
        task.reason.clear();
        task.updated_at = now;
        let task = inner.store.update_task(task).await?;
        inner.arm(&task);
        inner.announce_if_finished(&task, &handle);
        info!(task_id = %id, next_run_at = ?task.next_run_at, "task resumed");
        Ok(task)
    }

    /// Cancels a task for good, aborting its runs in flight.
    pub async fn cancel(&self, id: &TaskId, reason: String) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let mut task = inner.load(id).await?;
        match task.state {
            TaskState::Cancelled => return Ok(task),
            TaskState::Completed => {
                return Err(wrong_state(&task, "cancel"));
            }
            TaskState::Active | TaskState::Paused => {}
        }
        inner.timer.clear(id.clone());
        task.state = TaskState::Cancelled;
        task.next_run_at = None;
        task.reason = reason;
        task.updated_at = inner.clock.now();
        if let Some(pending) = handle.runs().pending.take() {
            // Counted when buffered, never started: as in pause, uncount it.
            task.run_count = task.run_count.saturating_sub(1);
            if pending.trigger == Trigger::Scheduled {
                task.scheduled_run_count = task.scheduled_run_count.saturating_sub(1);
            }
        }
        let task = inner.store.update_task(task).await?;
        handle.token.cancel();
        inner.announce_if_finished(&task, &handle);
        info!(task_id = %id, "task cancelled");
        Ok(task)
    }

    /// Starts a manual run now; returns its run number.
    pub async fn trigger(&self, id: &TaskId) -> Result<u64, Error> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let handle = inner.handle_of_existing(id).await?;
        let _op = handle.op.lock().await;
        let mut task = inner.load(id).await?;
        if task.state.is_terminal() {
            return Err(wrong_state(&task, "trigger"));
        }
        let decision = overlap_decision(&handle, task.spec.overlap);
        if decision == Decision::Skip {
            return Err(Error::Busy {
                task_id: id.clone(),
                policy: policy_name(task.spec.overlap),
            });
        }
        let now = inner.clock.now();
        task.run_count += 1;
        let run = task.run_count;
        let task = inner.store.update_task(task).await?;
        inner.start_or_buffer(&handle, &task, decision, run, Trigger::Manual, now);
        info!(task_id = %id, run, "task triggered");
        Ok(run)
    }

    /// Stops the scheduler in two signals: first no run starts any more and
    /// runs in flight get `grace` to finish; then the root token is
    /// cancelled and the remaining runs are aborted (reporting CANCELLED).
    /// Returns once every run, firing, timer and sweeper has ended.
    pub async fn stop(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stopping.cancel();
        inner.tracker.close();
        if tokio::time::timeout(grace, inner.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                grace_ms = grace.as_millis() as u64,
                runs = inner.tracker.len(),
                "runs still going after the grace period, cancelling them"
            );
            inner.root.cancel();
            inner.tracker.wait().await;
        }
        info!("scheduler stopped");
    }
}

/// FAILED_PRECONDITION for `operation` on `task` in its current state.
fn wrong_state(task: &TaskRecord, operation: &'static str) -> Error {
    Error::WrongState {
        task_id: task.id.clone(),
        state: task.state,
        operation,
    }
}

fn slot_after(
    spec: &TaskSpec,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Error> {
    // Just before now, so a start_at equal to now is itself the first slot.
    let after = now - chrono::Duration::nanoseconds(1);
    spec.schedule
        .next_slot_after(created_at, after)
        .ok_or_else(|| Error::InvalidArgument {
            field: "spec.schedule".into(),
            reason: "has no slot in the future (end_at passed, or beyond representable time)"
                .into(),
        })
}

impl Inner {
    /// The handle of a task the store knows; NOT_FOUND otherwise, so ids a
    /// client merely names never get a handle (and a token) of their own.
    async fn handle_of_existing(&self, id: &TaskId) -> Result<Arc<TaskHandle>, Error> {
        if let Some(handle) = self.registry.get(id) {
            return Ok(handle);
        }
        self.load(id).await?;
        Ok(self.registry.handle(id))
    }

    async fn load(&self, id: &TaskId) -> Result<TaskRecord, Error> {
        self.store
            .get_task(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                task_id: id.to_string(),
            })
    }

    /// Points the timer at the task's next slot, or clears it.
    fn arm(&self, task: &TaskRecord) {
        match (task.state, task.next_run_at) {
            (TaskState::Active, Some(slot)) => {
                let jitter = task.spec.schedule.jitter_for(task.id.as_str(), slot);
                let due = chrono::Duration::from_std(jitter)
                    .ok()
                    .and_then(|j| slot.checked_add_signed(j))
                    .unwrap_or(slot);
                self.timer.set(task.id.clone(), slot, due);
            }
            _ => self.timer.clear(task.id.clone()),
        }
    }

    fn announce_if_finished(&self, task: &TaskRecord, handle: &TaskHandle) {
        if task.state.is_terminal() && !handle.busy() {
            let _ = self.events.send(Event::TaskEnded(task.id.clone()));
        }
    }
}
