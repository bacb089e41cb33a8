//! Where tasks, runs and results live. The [`Store`] trait is the contract a
//! store shared by replicas (Redis) implements too, so every operation that
//! decides something is one atomic step:
//!
//! - a task write is a compare-and-set on its version;
//! - firing a due slot ([`Store::fire`]) checks the version and state,
//!   claims the slot, applies the overlap policy to the task's run records,
//!   counts, and advances the task to its next slot (or completes it), all
//!   or nothing, for a whole batch of due slots in one call. What to do
//!   about missed slots (catch-up: which slot, whether it runs, how many
//!   were passed over) is the caller's decision, planned from the schedule
//!   and the task's catch-up window and carried in the [`Firing`]; the store
//!   only applies it, so every store implements the same policy;
//! - runs are records keyed by (task, run number) that the store holds, so
//!   overlap policies and CancelTask hold across processes; cancellation
//!   tokens stay in the process that runs the run;
//! - recording a batch of results ([`Store::record`]) appends them to the
//!   log, assigns cursors, keeps each task's last result, retires the runs
//!   they finish and promotes a buffered run, in one step.
//!
//! [`memory`] is the embedded default. This module knows nothing of gRPC,
//! timers or tokens.

pub mod memory;
pub(crate) mod metered;
mod overlap;
pub mod redis;
mod stored;

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::task::{TaskId, TaskRecord, TaskResult, TaskSpec, TaskState, Trigger};
#[cfg(feature = "internals")]
pub use overlap::MAX_ALLOW_RUNS_PER_TASK;
pub(crate) use overlap::{Decision, decide};

/// Failures of a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record changed since it was read; the caller re-reads and retries.
    #[error("task {task_id} was changed concurrently")]
    Conflict {
        /// The task whose version moved.
        task_id: TaskId,
    },
    /// Insert of an id that exists.
    #[error("task {task_id} already exists")]
    Exists {
        /// The id that is taken.
        task_id: TaskId,
    },
    /// A cursor that this log did not hand out, or that is malformed.
    #[error("cursor {cursor:?} is not valid: {reason}")]
    InvalidCursor {
        /// The cursor as the client gave it.
        cursor: String,
        /// What is wrong with it, for the client.
        reason: &'static str,
    },
    /// Results after the cursor were dropped by retention (or the log was
    /// restarted); resuming from it would silently skip them.
    #[error(
        "results after cursor {cursor:?} are no longer retained; oldest cursor still held: {oldest:?}"
    )]
    CursorExpired {
        /// The cursor as the client gave it.
        cursor: String,
        /// The oldest result still held, empty if none.
        oldest: String,
        /// A cursor that replays everything still held.
        resume: String,
    },
    /// A stored record that does not decode: written by a newer format or
    /// damaged. The operation was not applied.
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt {
        /// The Redis key (and entry) that holds it.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written by another store format than this build's.
    #[error(
        "the store has format {found:?}, this build reads format {supported}{}",
        if *newer { "; upgrade recur before pointing it at this store" } else { "" }
    )]
    Format {
        /// The format found.
        found: String,
        /// The format this build reads and writes.
        supported: u32,
        /// Whether the format found is newer than this build's.
        newer: bool,
    },
    /// The store could not be reached or refused the operation; nothing of
    /// the operation was applied.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What failed, for logs.
        reason: String,
    },
}

/// Which tasks a listing returns.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks carrying all of these labels.
    pub labels: BTreeMap<String, String>,
    /// Only tasks whose id starts with this (a caller's namespace).
    pub id_prefix: Option<Arc<str>>,
}

impl TaskFilter {
    /// Whether `task` passes.
    pub fn matches(&self, task: &TaskRecord) -> bool {
        self.state.is_none_or(|s| s == task.state)
            && self
                .id_prefix
                .as_deref()
                .is_none_or(|p| task.id.as_str().starts_with(p))
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

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Dispatched, waiting for a slot under the cap of runs in flight. Not
    /// yet in flight: pause and cancel drop it.
    Queued,
    /// Its action has started.
    Running,
    /// Parked by BUFFER_ONE until the task's runs in flight end.
    Buffered,
}

/// A run the store knows of: dispatched by a firing or a trigger and not
/// yet recorded as finished.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The task it belongs to.
    pub task_id: TaskId,
    /// Its number within the task, never reused.
    pub run: u64,
    /// The schedule or a TriggerTask call.
    pub trigger: Trigger,
    /// Nominal slot (scheduled) or the time of the call (manual).
    pub scheduled_at: DateTime<Utc>,
    /// Unique per run; what targets deduplicate on.
    pub occurrence_id: String,
    /// Retries stop before this instant: the next slot, or `end_at` for the
    /// last one, so a failing run never overlaps the next through retries.
    pub retry_deadline: Option<DateTime<Utc>>,
    /// Where it stands.
    pub phase: RunPhase,
    /// The fencing value of the claim that dispatched it: the task's
    /// version after that step, which only grows. Its result carries it in
    /// the log; a result whose run record is gone when it is recorded (its
    /// claim lapsed: the run was given up as abandoned) is still recorded,
    /// marked as such.
    pub fence: u64,
    /// The node id of the replica that runs it (a shared store), empty
    /// until a replica's step claims it; the replicas give it up
    /// (ABANDONED) once that replica's lease lapsed.
    pub runner: String,
}

/// A run to start, with the spec it runs (shared with the task record).
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The run.
    pub record: RunRecord,
    /// The task's spec when the run was dispatched.
    pub spec: Arc<TaskSpec>,
}

/// One due slot for [`Store::fire`], planned by the caller from the task as
/// it was armed (the schedule maths runs outside the store).
#[derive(Debug, Clone)]
pub struct Firing {
    /// The task.
    pub task_id: TaskId,
    /// Version the timer was armed with; a task changed since is not fired.
    pub version: u64,
    /// The slot the timer was armed for; must still be the task's next slot.
    pub armed_slot: DateTime<Utc>,
    /// The slot this firing claims: the armed one, or after a stall the
    /// latest passed. Claimed whether or not it runs, so a slot at or before
    /// it never starts again.
    pub slot: DateTime<Utc>,
    /// Whether `slot` runs (under the overlap policy). False when catch-up
    /// passes over it too (it was missed and is older than the task's
    /// catch-up window): the store then claims it, counts it in `passed`,
    /// advances the task to `next` and dispatches nothing
    /// ([`Dispatch::PassedOver`]). The store never decides this itself.
    pub run: bool,
    /// Missed slots passed over without a run: those between the armed one
    /// and `slot`, plus `slot` itself when `run` is false. The store adds
    /// them to the skipped count and owes one SKIPPED result for all of
    /// them (see [`Fire::passed`]).
    pub passed: u64,
    /// The slot after `slot`; None when the schedule has no more.
    pub next: Option<DateTime<Utc>>,
    /// Occurrence id of `slot`.
    pub occurrence_id: String,
    /// When the firing happens.
    pub now: DateTime<Utc>,
    /// The retry of a firing whose store call reported an error: if that
    /// call did apply (a reply lost on the way), the store answers exactly
    /// as it did then, so the run it dispatched is not orphaned. Only a
    /// retry gets that answer, so a slot is never handed out twice.
    pub retry: bool,
    /// The caller holds a free run slot for this firing: a run it
    /// dispatches is started in the same step (phase Running, as
    /// [`Store::start_runs`] would make it) and runs at once, one store
    /// step instead of two. False: a dispatched run is queued.
    pub start: bool,
    /// Fired ahead of its instant (`now` is that instant), as part of a
    /// herd: applied only if the task has no run in flight and no result
    /// owed, since the overlap policy must decide at the instant what it
    /// would decide then; else nothing is done ([`Fired::NotAhead`]).
    pub ahead: bool,
}

/// What [`Store::fire`] did with one due slot.
#[derive(Debug)]
pub enum Fired {
    /// The task is gone, not active, or changed since it was armed: nothing
    /// was done (whoever changed it armed it).
    Stale,
    /// The slot was claimed before (another process, or a clock that stepped
    /// back); the task was only advanced.
    AlreadyClaimed(Fire),
    /// The slot was fired.
    Done(Fire),
    /// A firing ahead of its instant found a run in flight (or a result
    /// owed): nothing was done; the caller fires it at its instant.
    NotAhead,
}

/// The effects of one applied firing.
#[derive(Debug)]
pub struct Fire {
    /// The task after the firing (advanced or completed, version bumped).
    pub task: TaskRecord,
    /// What the overlap policy decided.
    pub dispatch: Dispatch,
    /// Missed slots this firing passed over without a run, as applied (a
    /// retry's replay repeats the first answer's). When not 0 the caller
    /// records one SKIPPED result for them, with `skipped_slots` set and the
    /// armed slot (the first passed over) as its slot; the store counts it
    /// as owed until recorded.
    pub passed: u64,
    /// Running runs the caller cancels (CANCEL_RUNNING); their records stay
    /// until their results are recorded.
    pub cancel: Vec<u64>,
    /// Runs dropped before they started (CANCEL_RUNNING); the caller
    /// records them as CANCELLED. The store counts their results, and a
    /// SKIPPED slot's and the catch-up result's, as owed until recorded, so
    /// a task's end is never announced before them.
    pub dropped: Vec<RunRecord>,
    /// The task became terminal with no run and no result owed: announce
    /// its end.
    pub ended: bool,
}

/// What the overlap policy made of a slot or a trigger.
#[derive(Debug)]
pub enum Dispatch {
    /// A new run, queued to start.
    Start(RunStart),
    /// A new run, parked behind the ones in flight (BUFFER_ONE).
    Buffered,
    /// No run: a run is in flight (SKIP, or BUFFER_ONE with one parked).
    Skipped,
    /// No run: catch-up passed over the slot ([`Firing::run`] was false);
    /// it is counted in [`Fire::passed`] and reported with the others.
    PassedOver,
    /// Nothing to decide (an already-claimed slot).
    None,
}

/// What [`Store::trigger`] did.
#[derive(Debug)]
pub enum Triggered {
    /// No such task.
    NotFound,
    /// The task is terminal.
    Terminal(TaskRecord),
    /// Refused by the overlap policy.
    Busy(TaskRecord),
    /// A manual run was dispatched.
    Done(Fire),
}

/// A control change that also drops runs not yet in flight.
#[derive(Debug, Clone)]
pub enum Halt {
    /// ACTIVE -> PAUSED; drops queued and buffered scheduled runs (each
    /// still gets a result: SKIPPED).
    Pause {
        /// Why, as the client gave it.
        reason: String,
        /// Identifies the call, unique per call: the store keeps the runs
        /// the last halt dropped under it, so a call whose reply was lost
        /// can still record them ([`Store::halt_dropped`]).
        call: String,
    },
    /// ACTIVE or PAUSED -> CANCELLED; drops every queued and buffered run.
    Cancel {
        /// Why, as the client gave it.
        reason: String,
        /// As for [`Halt::Pause`].
        call: String,
    },
}

/// What [`Store::halt`] did.
#[derive(Debug)]
pub enum Halted {
    /// No such task.
    NotFound,
    /// Already in the target state: nothing changed.
    Unchanged(TaskRecord),
    /// The task's state forbids it (a terminal task).
    Refused(TaskRecord),
    /// Applied.
    Done {
        /// The task after the change.
        task: TaskRecord,
        /// Queued runs dropped: recorded as SKIPPED (pause) or CANCELLED.
        dropped: Vec<RunRecord>,
        /// The task became terminal with no run left: announce its end.
        ended: bool,
    },
}

/// Runs of one task given up by [`Store::abandon_runs`].
#[derive(Debug)]
pub struct Abandoned {
    /// The task.
    pub task_id: TaskId,
    /// Its runs: queued or buffered ones never started, running ones may
    /// have had their effect.
    pub runs: Vec<RunRecord>,
    /// Results it was owed (decided before the stop, never recorded): lost.
    pub lost_results: usize,
    /// A run buffered (BUFFER_ONE) behind the runs given up, promoted: the
    /// caller starts it.
    pub promoted: Option<RunStart>,
}

/// One result for [`Store::record`].
#[derive(Debug, Clone)]
pub struct Recording {
    /// The result; its cursor is set by the store.
    pub result: TaskResult,
    /// Whether it finishes a run record (a run that was started), as
    /// opposed to settling a result the store counted as owed: a skipped
    /// slot, or a run dropped before it started.
    pub finishes_run: bool,
    /// For a result that finishes a run: the fencing value of the claim
    /// that dispatched it ([`RunRecord::fence`]); 0 otherwise.
    pub fence: u64,
}

/// What [`Store::record`] did with a batch.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The results in log order, with their cursors.
    pub results: Vec<Arc<TaskResult>>,
    /// Buffered runs promoted because their task's runs in flight ended.
    pub promoted: Vec<RunStart>,
    /// Tasks that became terminal with no run left, in the order of the
    /// results that ended them.
    pub ended: Vec<TaskId>,
}

/// Storage of tasks, runs and results.
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
    /// Reads a task, with its last result and runs in flight filled in.
    async fn get_task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError>;
    /// Replaces a task's spec and schedule fields if its stored version is
    /// `record.version`; the stored copy gets version + 1, which is returned.
    async fn update_task(&self, record: TaskRecord) -> Result<TaskRecord, StoreError>;
    /// Removes a task and its results if its version still matches and it
    /// has no run left.
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
    /// Number of tasks held whose id starts with `prefix` (a namespace's),
    /// as the store holds them, so a quota holds across replicas.
    async fn count_tasks_in(&self, prefix: &str) -> Result<usize, StoreError>;
    /// The key of spec fingerprints: random, made once and shared by every
    /// process on this store (`candidate` is what this process offers if
    /// none exists yet), so fingerprints compare across replicas.
    async fn fingerprint_key(&self, candidate: [u8; 32]) -> Result<Vec<u8>, StoreError>;
    /// Fires a batch of due slots, each all or nothing; one outcome per
    /// firing, in order. An error means none of the batch was applied.
    async fn fire(&self, batch: Vec<Firing>) -> Result<Vec<Fired>, StoreError>;
    /// Dispatches a manual run of a live task under its overlap policy.
    async fn trigger(
        &self,
        id: &TaskId,
        occurrence_id: String,
        now: DateTime<Utc>,
    ) -> Result<Triggered, StoreError>;
    /// What the trigger with `occurrence_id` did, if it applied: its run
    /// if still queued, and the runs its overlap policy cancelled or
    /// dropped (while it is the task's last trigger), as the task is now.
    /// How a trigger whose reply was lost is followed up without
    /// dispatching anything new; None when there is nothing to follow up.
    async fn applied_trigger(
        &self,
        id: &TaskId,
        occurrence_id: &str,
    ) -> Result<Option<Fire>, StoreError>;
    /// What the halt identified by `call` dropped, if it is the task's last
    /// halt and applied: its dropped runs and whether the task ended. For a
    /// halt whose reply was lost; nothing changes.
    async fn halt_dropped(
        &self,
        id: &TaskId,
        call: &str,
    ) -> Result<Option<(Vec<RunRecord>, bool)>, StoreError>;
    /// Pauses or cancels a task, dropping its runs not yet in flight.
    async fn halt(&self, id: &TaskId, halt: Halt, now: DateTime<Utc>)
    -> Result<Halted, StoreError>;
    /// Takes the run records of tasks whose runs belonged to a process that
    /// stopped (called at start for the tasks that have runs, and by a
    /// replica told that another's lease lapsed): with replicas, only runs
    /// of a replica whose lease lapsed. Each run is then owed a result,
    /// which the caller records (`finishes_run: false`). Answers per task
    /// found: its runs, and how many results it was owed and never got.
    async fn abandon_runs(&self, ids: &[TaskId]) -> Result<Vec<Abandoned>, StoreError>;
    /// Moves queued runs to running;
    /// one answer per run, in order: false when it was dropped meanwhile
    /// (pause, cancel) and must not start. A batch, so a wave of runs costs
    /// one store step (one round trip, for a remote store).
    async fn start_runs(&self, runs: &[RunStart]) -> Result<Vec<bool>, StoreError>;
    /// Appends a batch of results in order, applying retention, and retires
    /// the runs they finish. An error means none of it was applied.
    async fn record(&self, batch: &[Recording]) -> Result<Recorded, StoreError>;
    /// Retained results after `after` (all retained when None), oldest
    /// first, at most `limit`, only of `tasks` when not empty.
    async fn results_after(
        &self,
        after: Option<&str>,
        tasks: &[TaskId],
        limit: usize,
    ) -> Result<Vec<Arc<TaskResult>>, StoreError>;
    /// The cursor of the newest result, or the log's start cursor when it is
    /// empty: resuming from it replays nothing already appended.
    async fn head_cursor(&self) -> Result<String, StoreError>;
    /// Orders two cursors of this log; None when either is not one of its cursors.
    fn cursor_seq(&self, cursor: &str) -> Option<u64>;
    /// Checks that the store is reachable and still the one it was: a
    /// remote store that came back empty is detected here (by its epoch)
    /// and given back the task definitions this process holds.
    async fn check(&self) -> Result<Checked, StoreError> {
        Ok(Checked::Same)
    }
    /// The store's own clock, for a remote store whose clock may differ
    /// from this process's; None for one that has none of its own.
    async fn server_time(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(None)
    }
    /// Whether readers learn of new results and task ends from the log
    /// itself ([`Store::tail`]) rather than from this process's writer:
    /// true for a store other processes may append to.
    fn tails_log(&self) -> bool {
        false
    }
    /// Appends an end entry per task to the log, after everything recorded
    /// before (for a store that [tails its log](Store::tails_log)).
    async fn append_ends(&self, _ends: &[TaskId]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Follows the log from `after` on, handing every result and task end
    /// to `sink` in log order, until `drain` is cancelled and everything
    /// appended before that was handed over. Returns at once for a store
    /// that does not [tail its log](Store::tails_log).
    async fn tail(&self, _after: String, _sink: LogSink, _drain: CancellationToken) {}
    /// How often a store shared by replicas wants [`Store::lease`] taken;
    /// None for a store one process owns whole.
    fn lease_every(&self) -> Option<std::time::Duration> {
        None
    }
    /// Takes this process's lease step in `mode` (membership, and the
    /// shards it owns); None for a store one process owns whole.
    async fn lease(&self, _mode: LeaseMode) -> Result<Option<LeaseChange>, StoreError> {
        Ok(None)
    }
    /// Whether this process owns task `id`'s firing: its shard's lease.
    /// Firing steps of a task it does not own are refused
    /// ([`Fired::Stale`]).
    fn owns(&self, _id: &TaskId) -> bool {
        true
    }
    /// Sends what other processes change to `sink` until `stop` (for a
    /// store shared by replicas); returns at once for one that is not.
    async fn follow_changes(&self, _sink: tokio::sync::mpsc::UnboundedSender<Change>, _stop: CancellationToken) {}
    /// Takes one of `namespace`'s `max` open-stream slots for `holder` (a
    /// stream's unique id), counted across every process on the store:
    /// `Some(false)` when all are taken. `None`: this store is one
    /// process's, which counts its streams itself. A slot lapses after
    /// [`STREAM_SLOT_TTL`] unless kept, so a replica that died gives its
    /// slots back.
    async fn take_stream_slot(
        &self,
        _namespace: &str,
        _holder: &str,
        _max: usize,
    ) -> Result<Option<bool>, StoreError> {
        Ok(None)
    }
    /// Keeps the slots of streams still open; called more often than
    /// [`STREAM_SLOT_TTL`].
    async fn keep_stream_slots(&self, _slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Gives slots back when their streams end.
    async fn release_stream_slots(&self, _slots: &[(Arc<str>, String)]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How long an open-stream slot lasts unless kept (see
/// [`Store::take_stream_slot`]).
pub const STREAM_SLOT_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How a replica takes part, in [`Store::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseMode {
    /// Owns its share of the shards.
    Member,
    /// Stopping: owns no shard (they move to the others at once), and its
    /// runs still going are not given up.
    Draining,
    /// Gone: its runs are given up by the others.
    Leave,
}

/// What a lease step changed for this process.
#[derive(Debug, Default)]
pub struct LeaseChange {
    /// Shards it now owns and did not (or owns under a new fence): arm
    /// their tasks.
    pub gained: Vec<u32>,
    /// Shards it no longer owns: disarm their tasks.
    pub lost: Vec<u32>,
    /// Replicas whose lease lapsed (killed, cut off), told to this process
    /// alone: their runs are to be given up.
    pub dead: Vec<String>,
    /// Replicas that stopped and left, told to this process alone: any run
    /// they left behind (claimed as they stopped) is to be given up.
    pub left: Vec<String>,
}

/// A change made by another process sharing the store.
#[derive(Debug)]
pub enum Change {
    /// Task `id` was written by a control call (or deleted): read it again.
    Task {
        /// The task.
        id: TaskId,
        /// Runs of it the write cancelled (CANCEL_RUNNING), wherever they run.
        cancel: Vec<u64>,
    },
    /// Membership or shard ownership moved: take a lease step now.
    Moved,
    /// Changes may have been missed (the follower (re)connected): read
    /// every task again.
    Resync,
}

/// Receives what [`Store::tail`] reads, in log order.
pub trait LogReader: Send + Sync {
    /// Results, then the tasks that ended after them.
    fn publish(&self, results: &[Arc<TaskResult>], ended: &[TaskId]);
    /// The log was lost (a Redis that came back empty): what was read
    /// before is gone, and reading goes on from `resume`, the new log's
    /// start. Told before anything of the new log.
    fn lost(&self, resume: &str);
}

/// What [`Store::tail`] hands its reads to.
pub type LogSink = Arc<dyn LogReader>;

/// What [`Store::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Reachable, with everything it held.
    Same,
    /// It had lost everything (a Redis restarted without persistence, or
    /// flushed): the definitions this process held were written back, and a
    /// new epoch makes every earlier cursor DATA_LOSS.
    Restored {
        /// Task definitions written back.
        tasks: usize,
        /// The epoch before.
        lost_epoch: String,
        /// The new epoch.
        epoch: String,
    },
}
