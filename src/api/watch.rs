//! WatchTasks: task changes as a stream. One hub per process gathers the
//! ids of changed tasks (control calls here and on other replicas, runs'
//! results, retention) for a quarter of a second, reads each of them once
//! and hands the batch to every watcher; a watcher keeps only its caller's
//! tasks and tells what kind of change each was. The hub runs only while
//! someone watches, so an unwatched server pays nothing for it.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use super::{
    convert::{self, TaskView},
    fingerprint::Fingerprints,
};
use crate::{
    access::Caller,
    pb::v1 as pb,
    results::fanout::{Delivery, Subscription},
    scheduler::{Scheduler, TaskChange},
    store::TaskFilter,
    task::{TaskId, TaskRecord, TaskSpec, TaskState},
};

/// The events of one WatchTasks call.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

/// How long changes are gathered before the changed tasks are read: a
/// task that runs every second is read once per round, whatever else
/// happened to it.
const GATHER: Duration = Duration::from_millis(250);
/// Rounds queued for a watcher that is behind; beyond it the watcher sends
/// the whole list again instead.
const ROUNDS_QUEUED: usize = 64;
/// Events queued for the client of one watcher.
const EVENTS_QUEUED: usize = 256;
/// Tasks read at once by the hub.
const READS_AT_ONCE: usize = 64;
/// Tasks per page of a listing.
const LIST_PAGE: usize = 1000;

/// What the hub hands to watchers each round.
enum Round {
    /// The changed tasks as read, None for a task gone.
    Tasks(Vec<(TaskId, Option<TaskRecord>)>),
    /// Changes were lost (the hub fell behind): list every task again.
    Resync,
}

/// Starts the hub at the first watcher; cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    scheduler: Scheduler,
    shutdown: CancellationToken,
    /// The running hub's sender; None while nobody watches.
    rounds: Arc<Mutex<Option<broadcast::Sender<Arc<Round>>>>>,
}

impl WatchHub {
    /// A hub over `scheduler`'s tasks; every stream ends when `shutdown`
    /// is cancelled.
    pub fn new(scheduler: Scheduler, shutdown: CancellationToken) -> WatchHub {
        WatchHub {
            scheduler,
            shutdown,
            rounds: Arc::default(),
        }
    }

    /// The stream of one WatchTasks call: `caller`'s tasks with
    /// `next_runs` fire times each. `held` (the call's stream slots) is
    /// released when the stream ends.
    pub fn open<H: Send + 'static>(
        &self,
        caller: Caller,
        next_runs: usize,
        fingerprints: Arc<Fingerprints>,
        held: H,
    ) -> EventStream {
        // Subscribed before listing, so no change between the two is lost.
        let rounds = self.subscribe();
        let (events, out) = mpsc::channel(EVENTS_QUEUED);
        let watcher = Watcher {
            scheduler: self.scheduler.clone(),
            caller,
            next_runs,
            fingerprints,
            known: HashMap::new(),
            events,
        };
        tokio::spawn(watcher.run(rounds, self.shutdown.clone()));
        Box::pin(futures::stream::unfold((out, held), |(mut out, held)| async move {
            out.recv().await.map(|event| (event, (out, held)))
        }))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Round>> {
        let mut slot = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rounds) = slot.as_ref() {
            return rounds.subscribe();
        }
        let (rounds, receiver) = broadcast::channel(ROUNDS_QUEUED);
        *slot = Some(rounds.clone());
        // The hub's own receivers are made here, before the watcher lists:
        // a change made after its listing is then always seen.
        let changes = self.scheduler.task_changes();
        let results = self.scheduler.subscribe(&[]);
        tokio::spawn(self.clone().run(rounds, changes, results));
        receiver
    }

    /// Gathers changed ids and hands each round's tasks to the watchers,
    /// until the last watcher has gone or the server stops.
    async fn run(
        self,
        rounds: broadcast::Sender<Arc<Round>>,
        mut changes: broadcast::Receiver<TaskChange>,
        mut results: Subscription,
    ) {
        let mut changed: HashSet<TaskId> = HashSet::new();
        let mut tick = tokio::time::interval(GATHER);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                change = changes.recv() => match change {
                    Ok(TaskChange::Task(id)) => {
                        changed.insert(id);
                    }
                    Ok(TaskChange::All) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        changed.clear();
                        let _ = rounds.send(Arc::new(Round::Resync));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                delivery = results.recv() => match delivery {
                    Some(Delivery::Results(batch)) => {
                        changed.extend(batch.iter().map(|r| r.task_id.clone()));
                    }
                    Some(Delivery::Ended(id)) => {
                        changed.insert(id);
                    }
                    Some(Delivery::Lagged | Delivery::Lost { .. }) => {
                        results = self.scheduler.subscribe(&[]);
                        changed.clear();
                        let _ = rounds.send(Arc::new(Round::Resync));
                    }
                    Some(Delivery::Closed) | None => break,
                },
                _ = tick.tick() => {
                    {
                        // Under the lock, so no watcher joins a hub that stops.
                        let mut slot = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
                        if rounds.receiver_count() == 0 {
                            *slot = None;
                            return;
                        }
                    }
                    if changed.is_empty() {
                        continue;
                    }
                    let read = self.read(changed.drain().collect(), &mut changed).await;
                    let _ = rounds.send(Arc::new(Round::Tasks(read)));
                }
            }
        }
        *self.rounds.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Reads `ids`; one that cannot be read now goes back to `retry`.
    async fn read(
        &self,
        ids: Vec<TaskId>,
        retry: &mut HashSet<TaskId>,
    ) -> Vec<(TaskId, Option<TaskRecord>)> {
        let store = self.scheduler.store();
        let reads: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let task = store.get_task(&id).await;
                (id, task)
            })
            .buffer_unordered(READS_AT_ONCE)
            .collect()
            .await;
        let mut out = Vec::with_capacity(reads.len());
        for (id, task) in reads {
            match task {
                Ok(task) => out.push((id, task)),
                Err(error) => {
                    warn!(task_id = %id, %error, "WatchTasks could not read a changed task; trying again");
                    retry.insert(id);
                }
            }
        }
        out
    }
}

/// What a watcher remembers of a task to tell one change from another.
struct Seen {
    spec: Arc<TaskSpec>,
    state: TaskState,
    /// Whatever else a client shows: a change here is COUNTERS.
    moved: (u64, u64, u64, Option<DateTime<Utc>>, usize, Option<String>),
}

impl Seen {
    fn of(task: &TaskRecord) -> Seen {
        Seen {
            spec: task.spec.clone(),
            state: task.state,
            moved: (
                task.version,
                task.run_count,
                task.skipped_count,
                task.next_run_at,
                task.active_runs,
                task.last_result.as_ref().map(|r| r.cursor.clone()),
            ),
        }
    }
}

/// One WatchTasks call.
struct Watcher {
    scheduler: Scheduler,
    caller: Caller,
    next_runs: usize,
    fingerprints: Arc<Fingerprints>,
    known: HashMap<TaskId, Seen>,
    events: mpsc::Sender<Result<pb::TaskEvent, Status>>,
}

/// The client has gone: the watcher stops.
struct Gone;

impl Watcher {
    async fn run(mut self, mut rounds: broadcast::Receiver<Arc<Round>>, shutdown: CancellationToken) {
        if self.list().await.is_err() {
            return;
        }
        loop {
            let round = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.events.send(Err(super::status::shutting_down())).await;
                    return;
                }
                _ = self.events.closed() => return,
                round = rounds.recv() => round,
            };
            let done = match round {
                Ok(round) => match &*round {
                    Round::Tasks(tasks) => self.apply(tasks).await,
                    Round::Resync => self.list().await,
                },
                // Behind: the whole list again, not an error.
                Err(broadcast::error::RecvError::Lagged(_)) => self.list().await,
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = self.events.send(Err(super::status::shutting_down())).await;
                    return;
                }
            };
            if done.is_err() {
                return;
            }
        }
    }

    fn event(&self, kind: pb::TaskEventType, id: &TaskId, task: Option<&TaskRecord>) -> pb::TaskEvent {
        let view = TaskView {
            fingerprints: &self.fingerprints,
            next_runs: self.next_runs,
        };
        pb::TaskEvent {
            r#type: kind as i32,
            task_id: id.to_string(),
            task: task.map(|t| convert::task_to_proto(t, &view)),
        }
    }

    async fn send(&self, event: Result<pb::TaskEvent, Status>) -> Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone)
    }

    /// Sends every task the caller sees (EXISTING), DELETED for those known
    /// and gone, then SYNCED. A store error ends the stream with it.
    async fn list(&mut self) -> Result<(), Gone> {
        let filter = TaskFilter {
            id_prefix: self.caller.namespace.clone(),
            ..TaskFilter::default()
        };
        let mut known = HashMap::with_capacity(self.known.len());
        let mut after: Option<TaskId> = None;
        loop {
            let page = match self.scheduler.list(after.as_ref(), LIST_PAGE, &filter).await {
                Ok((page, _)) => page,
                Err(error) => {
                    let _ = self.send(Err(Status::from(error))).await;
                    return Err(Gone);
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for task in &page {
                self.send(Ok(self.event(pb::TaskEventType::Existing, &task.id, Some(task))))
                    .await?;
                known.insert(task.id.clone(), Seen::of(task));
            }
        }
        let gone: Vec<TaskId> = self
            .known
            .keys()
            .filter(|id| !known.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.send(Ok(self.event(pb::TaskEventType::Deleted, &id, None))).await?;
        }
        self.known = known;
        self.send(Ok(pb::TaskEvent {
            r#type: pb::TaskEventType::Synced as i32,
            ..Default::default()
        }))
        .await
    }

    /// Sends what changed in `tasks` for the caller's tasks.
    async fn apply(&mut self, tasks: &[(TaskId, Option<TaskRecord>)]) -> Result<(), Gone> {
        for (id, task) in tasks {
            if !self.caller.sees(id.as_str()) {
                continue;
            }
            let Some(task) = task else {
                if self.known.remove(id).is_some() {
                    self.send(Ok(self.event(pb::TaskEventType::Deleted, id, None))).await?;
                }
                continue;
            };
            let seen = Seen::of(task);
            let kind = match self.known.get(id) {
                None => pb::TaskEventType::Created,
                Some(old) if !Arc::ptr_eq(&old.spec, &seen.spec) && *old.spec != *seen.spec => {
                    pb::TaskEventType::Updated
                }
                Some(old) if old.state != seen.state => pb::TaskEventType::StateChanged,
                Some(old) if old.moved != seen.moved => pb::TaskEventType::Counters,
                Some(_) => continue,
            };
            self.known.insert(id.clone(), seen);
            self.send(Ok(self.event(kind, id, Some(task)))).await?;
        }
        Ok(())
    }
}
