//! The scheduler: the domain service behind every RPC. This file holds the
//! control calls (register, update, pause, resume, cancel, trigger, delete),
//! start and shutdown; `firing` what happens when a batch of slots is due;
//! `runs` the queue and the cap of runs in flight; `run` a run's attempts;
//! `timer` the one timer queue; `registry` per-task tokens; `retention` the
//! sweep of old terminal tasks; `schedule` the pure schedule maths. It never
//! imports tonic; errors are typed here and mapped to gRPC codes in
//! `api::status`.
//!
//! Every decision is one atomic store step (see `store`): control calls and
//! firing never hold a lock across an await, and race only through the
//! task's version. Results go to the one writer in `results::writer`.

pub mod clock;
mod firing;
mod registry;
mod replicas;
mod retention;
mod run;
mod runs;
pub mod schedule;
mod store_watch;
mod task_count;
mod uncertain;
mod timer;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use self::uncertain::Uncertain;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, instrument, warn, error};

use crate::{
    action::Actions,
    results::{
        fanout::{Hub, Subscription},
        writer::{Writer, WriterHandle},
    },
    stats::Stats,
    store::{self, Halt, Halted, Inserted, RunPhase, RunRecord, RunStart, Store, StoreError, TaskFilter, Triggered},
    task::{Outcome, TaskId, TaskRecord, TaskSpec, TaskState, manual_occurrence_id},
};
use clock::Clock;
use registry::Registry;
use timer::{Armed, TimerHandle};

/// Delay before a firing that failed on the store is tried again.
const FIRING_RETRY: chrono::Duration = chrono::Duration::seconds(1);

/// Tries of a control call that lost a race with firing (the task's version
/// moved between its read and its write) before it gives up with ABORTED.
/// Firing moves a version once per slot, so a second try nearly always wins.
const CONTROL_TRIES: u32 = 5;

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
    /// A control call kept losing the race with firing for the task's
    /// version; the client may retry.
    #[error("task {task_id} kept changing while the call applied; retry")]
    Contended {
        /// The task.
        task_id: TaskId,
    },
    /// A namespace quota would be exceeded, and waiting does not help.
    #[error("quota {quota} of namespace {namespace:?} exceeded: {detail}")]
    QuotaExceeded {
        /// The quota, as the access file names it (`max_tasks`, ...).
        quota: &'static str,
        /// The namespace.
        namespace: String,
        /// What was asked against what is allowed.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fresh identity for a pause or cancel call.
fn call_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// How long stop waits for the log reader to hand over the last results.
const TAIL_DRAIN: Duration = Duration::from_secs(5);

/// When a herd (many tasks due at one instant) is fired ahead of its
/// instant: its store steps are done before it is due, and each of its runs
/// waits for the instant as a task of its own, taking its run slot then.
/// Semantics are those of firing at the instant: a pause or cancel before
/// the instant drops the run (recorded SKIPPED or CANCELLED), a task with a
/// run in flight is fired at its instant (its overlap policy decides then),
/// and shutdown before the instant starts none of them.
#[derive(Debug, Clone, Copy)]
pub struct FireAhead {
    /// How long before its instant.
    pub window: Duration,
    /// Tasks due at one instant from which they are a herd.
    pub min: usize,
    /// Tasks due at one instant beyond which they fire at the instant
    /// (each run fired ahead waits as a task).
    pub max: usize,
}

impl FireAhead {
    /// The server's setting for a cap of `max_runs_in_flight`: herds of 256
    /// tasks and more, up to four times the cap, 250 ms ahead (10,000 tasks
    /// take Redis about 120 ms to fire on 2 cores; benches/README.md).
    pub fn for_cap(max_runs_in_flight: usize) -> FireAhead {
        FireAhead {
            window: Duration::from_millis(250),
            min: firing::HERD,
            max: max_runs_in_flight.saturating_mul(4).max(firing::HERD),
        }
    }
}

/// Task changes queued for a WatchTasks hub that is behind; beyond it the
/// hub is told it lagged and reads every task again.
const TASK_CHANGES_BOUND: usize = 4096;

/// What [`Scheduler::task_changes`] tells.
#[derive(Debug, Clone)]
pub enum TaskChange {
    /// This task changed (or is gone).
    Task(TaskId),
    /// Changes may have been missed: every task is to be read again.
    All,
}

/// Bounds the scheduler enforces.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Most tasks held.
    pub max_tasks: usize,
    /// How long terminal tasks stay readable.
    pub terminal_retention: Duration,
    /// Most results queued for one result subscriber before it is cut off.
    pub subscriber_bound: usize,
    /// Most runs whose action is going at once; more wait in a queue.
    pub max_runs_in_flight: usize,
    /// How often a remote store is checked (reachable, not emptied); None
    /// for the memory store, which is neither.
    pub store_check_interval: Option<Duration>,
    /// Herds fired ahead of their instant; None: every slot at its instant.
    pub fire_ahead: Option<FireAhead>,
    /// This process's name in the results it records
    /// (`TaskResult.executor`): its node id.
    pub executor: Arc<str>,
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
    /// Cancelled first: no slot fires and no run starts after it.
    stopping: CancellationToken,
    /// Runs, the timer, firing, the run dispatcher, the sweeper and the
    /// summary: everything `stop` waits for before results are closed.
    tracker: TaskTracker,
    timer: TimerHandle,
    /// Result subscribers; the writer publishes to it.
    hub: Arc<Hub>,
    /// Ids of tasks changed by a control call here or on another replica,
    /// or removed by retention, for WatchTasks; sent only while someone
    /// listens.
    task_changes: tokio::sync::broadcast::Sender<TaskChange>,
    /// The one result writer.
    writer: WriterHandle,
    /// Dispatched runs on their way to a slot under the cap.
    run_queue: runs::RunQueue,
    /// The run slots (`max_runs_in_flight`): a run holds one while it is
    /// in flight. Taken by firing for the runs it starts at once, and by
    /// the run queue's dispatcher.
    run_slots: Arc<tokio::sync::Semaphore>,
    /// Engine counters for the periodic summary.
    stats: Arc<Stats>,
    /// What `start` spawns, taken once.
    parts: std::sync::Mutex<Option<Parts>>,
    /// The writer's task, awaited at stop after the last run ended.
    writer_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The task cap's count.
    task_count: task_count::TaskCount,
    /// Whether the store answered its last check.
    store_status: watch::Sender<bool>,
    /// The store's log reader, when it has one; drained at stop, after the
    /// writer, before streams are closed.
    tail_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Tells the log reader to hand over what is left and stop.
    tail_drain: CancellationToken,
    /// Control steps the store did not answer: each may or may not have
    /// applied, and is followed up once the store answers again.
    uncertain: std::sync::Mutex<Vec<uncertain::Uncertain>>,
    /// The lease loop of a store shared by replicas, awaited at stop after
    /// the last result was recorded (it leaves the replicas then).
    lease_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Tells the lease loop to leave.
    leave: CancellationToken,
}

/// The receiving ends `start` hands to the tasks it spawns.
struct Parts {
    timer: mpsc::UnboundedReceiver<timer::TimerCmd>,
    runs: runs::RunQueueRx,
    writer: (
        Writer,
        mpsc::UnboundedReceiver<crate::results::writer::Message>,
    ),
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
        let stopping = CancellationToken::new();

        let hub = Hub::new(settings.subscriber_bound);
        let stats = Arc::new(Stats::default());
        // Every store call from here on is timed for /metrics.
        let store: Arc<dyn Store> = Arc::new(crate::store::metered::Metered::new(
            store,
            stats.clone(),
        ));
        let (run_queue, runs_rx) = runs::RunQueue::new(stats.clone());
        let promoted_to = run_queue.clone();
        let (writer, writer_handle, writer_rx) = Writer::new(
            store.clone(),
            hub.clone(),
            stats.clone(),
            Box::new(move |starts: Vec<RunStart>| {
                for start in starts {
                    promoted_to.push(start);
                }
            }),
            stopping.clone(),
            settings.executor.clone(),
        );
        let run_slots = Arc::new(tokio::sync::Semaphore::new(
            settings
                .max_runs_in_flight
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        Scheduler {
            inner: Arc::new(Inner {
                store,
                actions,
                clock,
                settings,
                registry: Registry::new(root.clone()),
                root,
                stopping,
                tracker: TaskTracker::new(),
                timer,
                hub,
                task_changes: tokio::sync::broadcast::Sender::new(TASK_CHANGES_BOUND),
                writer: writer_handle,
                run_queue,
                run_slots,
                stats,
                parts: std::sync::Mutex::new(Some(Parts {
                    timer: timer_rx,
                    runs: runs_rx,
                    writer: (writer, writer_rx),
                })),
                writer_task: std::sync::Mutex::new(None),
                task_count: task_count::TaskCount::new(),
                store_status: watch::Sender::new(true),
                tail_task: std::sync::Mutex::new(None),
                tail_drain: CancellationToken::new(),
                uncertain: Default::default(),
                lease_task: std::sync::Mutex::new(None),
                leave: CancellationToken::new(),
            }),
        }
    }

    /// Arms every active task already in the store, then starts the timer,
    /// firing, the run dispatcher, the result writer, the retention sweeper
    /// and the summary. Reading the store comes first: if it fails, nothing
    /// was spawned.
    pub async fn start(&self) -> Result<(), Error> {
        let inner = &self.inner;
        // Where the log reader starts: results recorded from now on (the
        // abandoned runs below included) reach readers through it.
        let tail_from = if inner.store.tails_log() {
            Some(inner.store.head_cursor().await?)
        } else {
            None
        };
        // Replicas: a runner first, not yet a member, so no shard is
        // handed to this process before it follows changes and arms what
        // it gains (the lease loop's first step joins); the step also
        // tells which replicas are gone, whose runs are given up below.
        let lease_every = inner.store.lease_every();
        if lease_every.is_some() {
            inner.store.lease(store::LeaseMode::Draining).await?;
        }
        inner.rearm_all().await?;
        let parts = inner.parts.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(parts) = parts else { return Ok(()) };
        let (writer, writer_rx) = parts.writer;
        *inner.writer_task.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::spawn(writer.run(writer_rx)));
        if let Some(from) = tail_from {
            let sink: crate::store::LogSink = inner.hub.clone();
            let (store, drain) = (inner.store.clone(), inner.tail_drain.clone());
            *inner.tail_task.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(tokio::spawn(async move { store.tail(from, sink, drain).await }));
        }
        let (due_tx, mut due_rx) = mpsc::unbounded_channel::<timer::Due>();
        let stats = inner.stats.clone();
        inner.tracker.spawn(timer::run(
            parts.timer,
            inner.clock.clone(),
            inner.stopping.clone(),
            inner.settings.fire_ahead,
            move |due| {
                let _ = due_tx.send(due);
            },
            move |soonest| stats.set_next_due(soonest),
        ));
        let firing = inner.clone();
        inner.tracker.spawn(async move {
            loop {
                let due = tokio::select! {
                    biased;
                    _ = firing.stopping.cancelled() => return,
                    due = due_rx.recv() => match due {
                        Some(due) => due,
                        None => return,
                    },
                };
                firing.fire_batch(due.batch, due.ahead).await;
            }
        });
        inner.spawn_run_loops(parts.runs);
        let sweeper = inner.clone();
        inner
            .tracker
            .spawn(async move { sweeper.sweep_loop().await });
        if let Some(every) = inner.settings.store_check_interval {
            let status = inner.store_status.clone();
            inner
                .tracker
                .spawn(inner.clone().watch_store(every, status));
        }
        let stats = inner.stats.clone();
        let stop = inner.stopping.clone();
        inner
            .tracker
            .spawn(async move { stats.summarise(stop).await });
        if let Some(every) = lease_every {
            let moved = Arc::new(tokio::sync::Notify::new());
            let rearm = Arc::new(tokio::sync::Notify::new());
            let (changes_tx, changes_rx) = mpsc::unbounded_channel();
            let (store, stop) = (inner.store.clone(), inner.stopping.clone());
            inner
                .tracker
                .spawn(async move { store.follow_changes(changes_tx, stop).await });
            inner.tracker.spawn(inner.clone().follow_changes(
                changes_rx,
                moved.clone(),
                rearm.clone(),
            ));
            inner
                .tracker
                .spawn(inner.clone().rearm_loop(every, rearm.clone()));
            // Not tracked: it outlives the runs (see `stop`).
            *inner.lease_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::spawn(
                inner.clone().lease_loop(every, moved, rearm, inner.leave.clone()),
            ));
        }
        Ok(())
    }

    /// Whether the store answered its last check (always true for the
    /// memory store); changes as it goes away and comes back.
    pub fn store_status(&self) -> watch::Receiver<bool> {
        self.inner.store_status.subscribe()
    }

    /// The clock the scheduler uses.
    #[cfg(any(test, feature = "internals"))]
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// What the engine counted, for /metrics.
    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// The store (timed for /metrics).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The actions runner (for validation against registered kinds).
    pub fn actions(&self) -> &Actions {
        &self.inner.actions
    }

    /// Follows the results of `tasks` (all when empty) recorded from now on,
    /// and the ends of the named tasks.
    pub fn subscribe(&self, tasks: &[TaskId]) -> Subscription {
        self.inner.hub.subscribe(tasks)
    }

    /// The tasks changed from now on by a control call (here or on
    /// another replica) or removed by retention; runs and their results
    /// are followed through [`Scheduler::subscribe`]. A receiver that falls
    /// behind is told it lagged: read every task again.
    pub fn task_changes(&self) -> tokio::sync::broadcast::Receiver<TaskChange> {
        self.inner.task_changes.subscribe()
    }

    /// Registers a task, or returns the existing one for an identical retry.
    // The API registers through `register_in`; the engine tests call this.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    #[instrument(skip_all, fields(task_id = id.as_ref().map(|i| i.as_str())))]
    pub async fn register(
        &self,
        id: Option<TaskId>,
        spec: TaskSpec,
        request_id: Option<String>,
    ) -> Result<TaskRecord, Error> {
        self.register_in("", id, spec, request_id).await
    }

    /// [`Scheduler::register`], generating the id (when `id` is None)
    /// under `namespace`.
    pub async fn register_in(
        &self,
        namespace: &str,
        id: Option<TaskId>,
        spec: TaskSpec,
        request_id: Option<String>,
    ) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // A request id makes a retry of a registration without a task id
        // idempotent; with a task id, the id itself does.
        let request_id = request_id.filter(|_| id.is_none());
        let id = id.unwrap_or_else(|| TaskId::generate_in(namespace));
        let now = inner.clock.now();
        let next = slot_after(&spec, now, now)?;
        let spec = Arc::new(spec);
        // No lock across the store's round trips: registrations run side
        // by side, and the store's insert is what decides "new" or "taken"
        // (a create only lands where nothing is; one registration of a
        // request id holds its claim, others get its task or UNAVAILABLE).
        let Some(_reserved) = inner.task_count.reserve(&*inner.store, inner.settings.max_tasks).await? else {
            // At the cap, a retry of a registration that landed is still
            // answered with its task.
            if let Some(earlier) = self.earlier(&id, &spec, request_id.as_deref()).await? {
                return Ok(earlier);
            }
            return Err(Error::TooManyTasks {
                limit: inner.settings.max_tasks,
            });
        };
        let record = TaskRecord::new(id.clone(), spec.clone(), now, next);
        let record = match inner.store.insert_task(record, request_id.as_deref()).await {
            Ok(Inserted::Created(record)) => {
                inner.task_count.created();
                record
            }
            Ok(Inserted::SameRequest(earlier)) => return Ok(earlier),
            Err(StoreError::Exists { task_id }) => {
                return match self.earlier(&id, &spec, None).await? {
                    Some(existing) => Ok(existing),
                    None => Err(Error::AlreadyExists { task_id }),
                };
            }
            Err(e) => return Err(e.into()),
        };
        inner.arm(&record);
        inner.touched(&id);
        debug!(task_id = %id, next_run_at = %next.to_rfc3339(), "task registered");
        Ok(record)
    }

    /// What [`Scheduler::register_in`] would answer, storing nothing (a
    /// dry run): the existing task for an identical retry, ALREADY_EXISTS
    /// for a taken id, else the task as it would be created (a generated
    /// id is only an example). The task cap is not checked.
    pub async fn preview_register_in(
        &self,
        namespace: &str,
        id: Option<TaskId>,
        spec: TaskSpec,
        request_id: Option<String>,
    ) -> Result<TaskRecord, Error> {
        let request_id = request_id.filter(|_| id.is_none());
        let id = id.unwrap_or_else(|| TaskId::generate_in(namespace));
        let now = self.inner.clock.now();
        let next = slot_after(&spec, now, now)?;
        if let Some(earlier) = self.earlier(&id, &spec, request_id.as_deref()).await? {
            return Ok(earlier);
        }
        if self.inner.store.get_task(&id).await?.is_some() {
            return Err(Error::AlreadyExists { task_id: id });
        }
        Ok(TaskRecord::new(id, Arc::new(spec), now, next))
    }

    /// The task a registration of `id` with `spec` (or with `request_id`)
    /// already made, for an identical retry.
    async fn earlier(
        &self,
        id: &TaskId,
        spec: &TaskSpec,
        request_id: Option<&str>,
    ) -> Result<Option<TaskRecord>, Error> {
        let store = &self.inner.store;
        if let Some(request_id) = request_id
            && let Some(earlier) = store.task_for_request(request_id).await?
        {
            return Ok(Some(earlier));
        }
        Ok(store.get_task(id).await?.filter(|task| *task.spec == *spec))
    }

    /// Replaces the spec of a live task.
    pub async fn update(&self, id: &TaskId, spec: TaskSpec) -> Result<TaskRecord, Error> {
        self.update_with(id, |_| Ok(spec.clone())).await
    }

    /// Replaces the spec of a live task with `make(stored spec)`. `make`
    /// runs inside the compare-and-set, again if the task changed
    /// meanwhile, so a partial update (a field mask) merges onto what is
    /// stored when it is written, never onto an older read.
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn update_with(
        &self,
        id: &TaskId,
        make: impl Fn(&TaskSpec) -> Result<TaskSpec, Error>,
    ) -> Result<TaskRecord, Error> {
        let task = self.inner.modify(id, "update", respec(make)).await?;
        debug!("task updated");
        Ok(task)
    }

    /// What [`Scheduler::update_with`] would make of the task as stored
    /// now, changing nothing (a dry run).
    pub async fn preview_update_with(
        &self,
        id: &TaskId,
        make: impl Fn(&TaskSpec) -> Result<TaskSpec, Error>,
    ) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let mut task = inner.load(id).await?;
        if task.state.is_terminal() {
            return Err(wrong_state(&task, "update"));
        }
        respec(make)(&mut task, inner.clock.now())?;
        Ok(task)
    }

    /// Resumes a paused task from its next future slot.
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn resume(&self, id: &TaskId) -> Result<TaskRecord, Error> {
        let task = self
            .inner
            .modify(id, "resume", |task, now| {
                if task.state == TaskState::Active {
                    return Ok(false);
                }
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
                Ok(true)
            })
            .await?;
        debug!(next_run_at = ?task.next_run_at.map(|t| t.to_rfc3339()), "task resumed");
        Ok(task)
    }

    /// Removes a terminal task whose last run has reported, and its results.
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn delete(&self, id: &TaskId) -> Result<(), Error> {
        let inner = &self.inner;
        for _ in 0..CONTROL_TRIES {
            let task = inner.load(id).await?;
            if !task.has_ended() {
                // A terminal task whose last run is still going keeps its id
                // until that run has reported.
                return Err(wrong_state(&task, "delete"));
            }
            match inner.store.delete_task(id, task.version).await {
                Ok(()) => {
                    inner.forget(id);
                    debug!("task deleted");
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contended {
            task_id: id.clone(),
        })
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

    /// Pauses a task; once this returns, no scheduled run starts (one still
    /// waiting for a slot under the cap is dropped and recorded SKIPPED).
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn pause(&self, id: &TaskId, reason: String) -> Result<TaskRecord, Error> {
        let task = self
            .inner
            .halt(
                id,
                Halt::Pause {
                    reason,
                    call: call_id(),
                },
                "pause",
                Outcome::Skipped,
            )
            .await?;
        debug!("task paused");
        Ok(task)
    }

    /// Cancels a task for good: runs in flight are aborted, runs waiting for
    /// a slot are dropped; both are recorded CANCELLED.
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn cancel(&self, id: &TaskId, reason: String) -> Result<TaskRecord, Error> {
        let inner = &self.inner;
        let task = inner
            .halt(
                id,
                Halt::Cancel {
                    reason,
                    call: call_id(),
                },
                "cancel",
                Outcome::Cancelled,
            )
            .await?;
        // Its token was cancelled by the halt (`Inner::halted`).
        debug!("task cancelled");
        Ok(task)
    }

    /// Starts a manual run now (or buffers it, under BUFFER_ONE); returns
    /// its run number.
    #[instrument(skip_all, fields(task_id = %id))]
    pub async fn trigger(&self, id: &TaskId) -> Result<u64, Error> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let now = inner.clock.now();
        let occurrence = manual_occurrence_id(id, now);
        let triggered = inner.store.trigger(id, occurrence.clone(), now).await;
        if let Err(e) = &triggered {
            inner.uncertain(e, Uncertain::Trigger(id.clone(), occurrence));
        }
        match triggered? {
            Triggered::NotFound => Err(Error::NotFound {
                task_id: id.to_string(),
            }),
            Triggered::Terminal(task) => Err(wrong_state(&task, "trigger")),
            Triggered::Busy(task) => Err(Error::Busy {
                task_id: id.clone(),
                policy: policy_name(task.spec.overlap),
            }),
            Triggered::Done(fire) => {
                let run = fire.task.run_count;
                inner.apply_fire(fire, None, None, None);
                debug!(run, "task triggered");
                Ok(run)
            }
        }
    }

    /// Stops the scheduler, in order:
    ///
    /// 1. no slot fires and no run starts any more; runs in flight get
    ///    `grace` to finish;
    /// 2. then the root token is cancelled and the remaining runs are
    ///    aborted (reporting CANCELLED);
    /// 3. the writer records every result handed to it, then stops;
    /// 4. every result subscription ends (after what it was sent).
    ///
    /// Returns once all of that is done.
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
        inner.writer.close();
        let writer = inner
            .writer_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer
            && let Err(error) = writer.await
        {
            warn!(%error, "result writer ended abnormally");
        }
        // Every run has reported: no replica needs to give any up.
        inner.leave.cancel();
        let lease = inner
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(lease) = lease {
            let _ = lease.await;
        }
        // What the writer recorded last reaches readers before their
        // streams close.
        inner.tail_drain.cancel();
        let tail = inner
            .tail_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut tail) = tail
            && tokio::time::timeout(TAIL_DRAIN, &mut tail).await.is_err()
        {
            tail.abort();
            warn!("the log reader did not drain in time; streams resume by cursor");
        }
        inner.hub.close();
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

/// The policy's name as the proto spells it, for messages.
fn policy_name(policy: crate::task::OverlapPolicy) -> &'static str {
    use crate::task::OverlapPolicy;
    match policy {
        OverlapPolicy::Skip => "SKIP",
        OverlapPolicy::Allow => "ALLOW",
        OverlapPolicy::CancelRunning => "CANCEL_RUNNING",
        OverlapPolicy::BufferOne => "BUFFER_ONE",
    }
}

/// The change of an update: the spec `make` builds from the stored one,
/// the next slot it gives, and completion when max_runs is already met.
fn respec(
    make: impl Fn(&TaskSpec) -> Result<TaskSpec, Error>,
) -> impl Fn(&mut TaskRecord, DateTime<Utc>) -> Result<bool, Error> {
    move |task, now| {
        let spec = Arc::new(make(&task.spec)?);
        let next = slot_after(&spec, task.created_at, now)?;
        task.spec = spec;
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
        Ok(true)
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

    /// Reports the runs a stopped process left in the store (found at
    /// start): one result each, ABANDONED for a run that was going (it may
    /// have had its effect), SKIPPED for one that never started. Results
    /// that process had decided but not recorded are lost: counted and
    /// logged, never silent.
    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let (mut abandoned, mut never_started, mut lost) = (0usize, 0usize, 0usize);
        for chunk in ids.chunks(1000) {
            for task in self.store.abandon_runs(chunk).await? {
                lost += task.lost_results;
                if let Some(promoted) = task.promoted {
                    self.run_queue.push(promoted);
                }
                for run in &task.runs {
                    let result = if run.phase == RunPhase::Running {
                        abandoned += 1;
                        warn!(task_id = %run.task_id, run = run.run, occurrence_id = %run.occurrence_id, "run abandoned: the process stopped during it");
                        run::dropped(
                            run,
                            Outcome::Abandoned,
                            now,
                            "the process running it stopped during the run; it may have had its effect",
                        )
                    } else {
                        never_started += 1;
                        run::dropped(
                            run,
                            Outcome::Skipped,
                            now,
                            "the process stopped before the run started",
                        )
                    };
                    self.writer.record(result, false);
                }
            }
        }
        if lost > 0 {
            Stats::add(&self.stats.results_lost, lost as u64);
            error!(results = lost, "results lost: decided by a process that stopped before recording them");
        }
        if abandoned + never_started > 0 {
            info!(abandoned, never_started, "runs of a stopped process reported");
        }
        Ok(())
    }
    async fn load(&self, id: &TaskId) -> Result<TaskRecord, Error> {
        self.store
            .get_task(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                task_id: id.to_string(),
            })
    }

    /// Read, change, compare-and-set: `change` edits a live task (false:
    /// nothing to do); a version moved by firing meanwhile is retried.
    async fn modify(
        &self,
        id: &TaskId,
        operation: &'static str,
        change: impl Fn(&mut TaskRecord, DateTime<Utc>) -> Result<bool, Error>,
    ) -> Result<TaskRecord, Error> {
        for _ in 0..CONTROL_TRIES {
            let mut task = self.load(id).await?;
            if task.state.is_terminal() {
                return Err(wrong_state(&task, operation));
            }
            if !change(&mut task, self.clock.now())? {
                // Nothing to change, but an earlier try whose reply was lost
                // may have changed it without arming it.
                self.arm(&task);
                return Ok(task);
            }
            match self.store.update_task(task).await {
                Ok(task) => {
                    self.arm(&task);
                    self.touched(&task.id);
                    if task.has_ended() {
                        self.writer.ended(task.id.clone());
                    }
                    return Ok(task);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    self.uncertain(&e, Uncertain::Change(id.clone()));
                    return Err(e.into());
                }
            }
        }
        Err(Error::Contended {
            task_id: id.clone(),
        })
    }

    /// Pauses or cancels in one store step, then disarms the task and
    /// records the runs it dropped as `dropped_as`.
    async fn halt(
        &self,
        id: &TaskId,
        halt: Halt,
        operation: &'static str,
        dropped_as: Outcome,
    ) -> Result<TaskRecord, Error> {
        let call = match &halt {
            Halt::Pause { call, .. } | Halt::Cancel { call, .. } => call.clone(),
        };
        let halted = self.store.halt(id, halt, self.clock.now()).await;
        if let Err(e) = &halted {
            self.uncertain(e, Uncertain::Halt(id.clone(), call, dropped_as));
        }
        match halted? {
            Halted::NotFound => Err(Error::NotFound {
                task_id: id.to_string(),
            }),
            Halted::Refused(task) => Err(wrong_state(&task, operation)),
            Halted::Unchanged(task) => Ok(task),
            Halted::Done {
                task,
                dropped,
                ended,
            } => {
                self.halted(&task.id, dropped_as);
                self.arm(&task);
                self.touched(&task.id);
                self.report_halt(&task.id, &dropped, ended, dropped_as);
                Ok(task)
            }
        }
    }

    /// Tells the task's runs fired ahead of their instant that a pause or
    /// cancel (`as_` CANCELLED) applied after their firing step: a cancel
    /// cancels the task's token first, so none of them reads it as a pause.
    /// Only once the store has the halt (see `Inner::held_run`).
    fn halted(&self, id: &TaskId, as_: Outcome) {
        if let Some(handle) = self.registry.get(id) {
            if as_ == Outcome::Cancelled {
                handle.token.cancel();
            }
            handle.halted();
        }
    }

    /// Records the runs a pause or cancel dropped (as `dropped_as`), then
    /// the task's end if it ended.
    fn report_halt(&self, id: &TaskId, dropped: &[RunRecord], ended: bool, dropped_as: Outcome) {
        let now = self.clock.now();
        let why = match dropped_as {
            Outcome::Skipped => "the task was paused before the run started",
            _ => "the task was cancelled before the run started",
        };
        for run in dropped {
            self.writer
                .record(run::dropped(run, dropped_as, now, why), false);
        }
        if ended {
            self.writer.ended(id.clone());
        }
    }

    /// Points the timer at the task's next slot, or clears it; with
    /// replicas, only where this process owns the task's shard.
    fn arm(&self, task: &TaskRecord) {
        match (task.state, task.next_run_at) {
            (TaskState::Active, Some(slot)) if self.store.owns(&task.id) => {
                let due = task.spec.schedule.due_at(task.id.as_str(), slot);
                self.timer.set(
                    Armed {
                        id: task.id.clone(),
                        slot,
                        version: task.version,
                        created_at: task.created_at,
                        spec: task.spec.clone(),
                        retry: false,
                        at_instant: false,
                    },
                    due,
                );
            }
            _ => self
                .timer
                .clear(task.id.clone(), task.created_at, task.version),
        }
    }

    /// Forgets a deleted task in this process.
    fn forget(&self, id: &TaskId) {
        self.registry.remove(id);
        self.timer.forget(id.clone());
        self.touched(id);
    }

    /// Tells WatchTasks that `id` changed, if anyone listens.
    fn touched(&self, id: &TaskId) {
        if self.task_changes.receiver_count() > 0 {
            let _ = self.task_changes.send(TaskChange::Task(id.clone()));
        }
    }

    /// Tells WatchTasks that changes may have been missed (another
    /// replica's messages were lost): every task is to be read again.
    fn touched_all(&self) {
        if self.task_changes.receiver_count() > 0 {
            let _ = self.task_changes.send(TaskChange::All);
        }
    }
}
