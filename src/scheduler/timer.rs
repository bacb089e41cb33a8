//! One timer for all tasks: a queue ordered by due time and a single sleep
//! until its head; everything due at once is handed out as one batch, so a
//! herd costs one wake-up and one store call per batch rather than a task
//! and a store round trip per slot (see benches/).
//!
//! Entries carry the task's version: arming is monotonic in it, so an
//! out-of-date arm (a firing that finished after a control call re-armed the
//! task) can never overwrite a newer one.
//!
//! A herd (many tasks due at one instant) is handed out ahead of its
//! instant (see [`FireAhead`]): its store steps are then done before it is
//! due and its runs start at the instant, instead of after a store step
//! per chunk of it (10,000 due at once on Redis: the last run began 124 ms
//! late, the firing steps taking Redis about 10 ms per 1,024 tasks;
//! benches/README.md).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{FireAhead, clock::Clock};
use crate::task::{TaskId, TaskSpec};

/// A task as armed: what firing needs to plan its slot without reading the
/// store first.
#[derive(Debug, Clone)]
pub(crate) struct Armed {
    /// The task.
    pub id: TaskId,
    /// Its next nominal slot.
    pub slot: DateTime<Utc>,
    /// Its version when armed; the store fires only that version.
    pub version: u64,
    /// Its schedule's anchor.
    pub created_at: DateTime<Utc>,
    /// Its spec, shared with the record.
    pub spec: Arc<TaskSpec>,
    /// Set when this is the retry of a firing whose store call failed: the
    /// store then answers as it did if that call did apply after all.
    pub retry: bool,
    /// Never handed out ahead of its instant, even in a herd: set on a task
    /// a firing ahead did not apply to (it had a run in flight) and on a
    /// retry.
    pub at_instant: bool,
}

/// A batch of entries handed out: due now, or a herd due at `ahead`.
pub(crate) struct Due {
    pub batch: Vec<Armed>,
    /// The instant a herd handed out ahead is due at; None when due now.
    pub ahead: Option<DateTime<Utc>>,
}

/// A change to the timer queue.
#[derive(Debug)]
pub(crate) enum TimerCmd {
    /// (Re)arms a task to fire at `due` (slot plus jitter).
    Set { armed: Armed, due: DateTime<Utc> },
    /// Disarms a task at `version`.
    Clear {
        id: TaskId,
        created_at: DateTime<Utc>,
        version: u64,
    },
    /// Forgets a deleted task.
    Forget { id: TaskId },
    /// Disarms every task `keep` rejects (shards this replica no longer
    /// owns), but a retry of a failed firing; their stamps stay, so an
    /// older arming still loses.
    Retain { keep: Keep },
}

/// Which tasks stay armed, for [`TimerCmd::Retain`].
#[derive(Clone)]
pub(crate) struct Keep(pub Arc<dyn Fn(&TaskId) -> bool + Send + Sync>);

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep")
    }
}

/// Sends changes to the timer. Unbounded: each task has at most one entry,
/// so the queue is bounded by the task cap, and control calls never wait on it.
#[derive(Debug, Clone)]
pub(crate) struct TimerHandle {
    tx: mpsc::UnboundedSender<TimerCmd>,
}

impl TimerHandle {
    pub(crate) fn new() -> (TimerHandle, mpsc::UnboundedReceiver<TimerCmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (TimerHandle { tx }, rx)
    }

    pub(crate) fn set(&self, armed: Armed, due: DateTime<Utc>) {
        // The receiver lives until shutdown, when arming no longer matters.
        let _ = self.tx.send(TimerCmd::Set { armed, due });
    }

    pub(crate) fn clear(&self, id: TaskId, created_at: DateTime<Utc>, version: u64) {
        let _ = self.tx.send(TimerCmd::Clear {
            id,
            created_at,
            version,
        });
    }

    pub(crate) fn forget(&self, id: TaskId) {
        let _ = self.tx.send(TimerCmd::Forget { id });
    }

    pub(crate) fn retain(&self, keep: Keep) {
        let _ = self.tx.send(TimerCmd::Retain { keep });
    }
}

/// A task's entry: the newest stamp seen, and its arming if armed.
struct Entry {
    stamp: Stamp,
    armed: Option<(Key, Armed)>,
}

/// Orders the changes of one task id: registration time, then version. The
/// registration time tells a task apart from an earlier one deleted under
/// the same id, whose late disarming must not touch the new one.
type Stamp = (DateTime<Utc>, u64);

/// Position in the due queue: due time, then arming order. Not the task id:
/// in a herd every due time is equal, and ordering by id string made
/// comparisons a visible share of a herd's cost (profiled).
type Key = (DateTime<Utc>, u64);

#[derive(Default)]
struct Queue {
    due: BTreeMap<Key, TaskId>,
    entries: HashMap<TaskId, Entry>,
    /// Next arming number.
    next_seq: u64,
    /// None: nothing is handed out ahead.
    ahead: Option<FireAhead>,
    /// Entries that may be handed out ahead, by due instant.
    at: BTreeMap<DateTime<Utc>, usize>,
    /// The instants at which they are a herd (between `min` and `max`).
    herds: BTreeSet<DateTime<Utc>>,
}

impl Queue {
    fn new(ahead: Option<FireAhead>) -> Queue {
        Queue {
            ahead,
            ..Queue::default()
        }
    }

    fn apply(&mut self, cmd: TimerCmd) {
        let (id, stamp, armed) = match cmd {
            TimerCmd::Set { armed, due } => (
                armed.id.clone(),
                (armed.created_at, armed.version),
                Some((due, armed)),
            ),
            TimerCmd::Clear {
                id,
                created_at,
                version,
            } => (id, (created_at, version), None),
            TimerCmd::Forget { id } => {
                if let Some(Entry {
                    armed: Some((key, armed)),
                    ..
                }) = self.entries.remove(&id)
                {
                    self.due.remove(&key);
                    self.uncount(key.0, &armed);
                }
                return;
            }
            TimerCmd::Retain { keep } => {
                let mut dropped = Vec::new();
                for (id, entry) in &mut self.entries {
                    // A retry stays: its firing may have applied with its
                    // reply lost, and only the retry hands out the run it
                    // claimed (answered whoever owns the shard now).
                    let retry = entry.armed.as_ref().is_some_and(|(_, armed)| armed.retry);
                    if entry.armed.is_some() && !retry && !(keep.0)(id) {
                        dropped.extend(entry.armed.take());
                    }
                }
                for (key, armed) in dropped {
                    self.due.remove(&key);
                    self.uncount(key.0, &armed);
                }
                return;
            }
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.stamp > stamp {
                return;
            }
            if let Some((key, old)) = entry.armed.take() {
                self.due.remove(&key);
                self.uncount(key.0, &old);
            }
        }
        let armed = armed.map(|(due, armed)| {
            let key = (due, self.next_seq);
            self.next_seq += 1;
            self.due.insert(key, id.clone());
            self.count(due, &armed);
            (key, armed)
        });
        self.entries.insert(id, Entry { stamp, armed });
    }

    /// Counts an entry due at `due` toward a herd there.
    fn count(&mut self, due: DateTime<Utc>, armed: &Armed) {
        if self.ahead.is_none() || armed.at_instant {
            return;
        }
        let n = self.at.entry(due).or_default();
        *n += 1;
        let n = *n;
        self.mark(due, n);
    }

    /// Takes back what [`Queue::count`] counted.
    fn uncount(&mut self, due: DateTime<Utc>, armed: &Armed) {
        if self.ahead.is_none() || armed.at_instant {
            return;
        }
        let Some(n) = self.at.get_mut(&due) else { return };
        *n = n.saturating_sub(1);
        let n = *n;
        if n == 0 {
            self.at.remove(&due);
        }
        self.mark(due, n);
    }

    fn mark(&mut self, due: DateTime<Utc>, n: usize) {
        let Some(ahead) = self.ahead else { return };
        // Never an instant with no entry, whatever the settings.
        if n > 0 && (ahead.min..=ahead.max).contains(&n) {
            self.herds.insert(due);
        } else {
            self.herds.remove(&due);
        }
    }

    /// Takes every entry due at `now`.
    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Armed> {
        let mut batch = Vec::new();
        while let Some(((due, _), _)) = self.due.first_key_value()
            && *due <= now
        {
            if let Some(((due, _), id)) = self.due.pop_first()
                && let Some(entry) = self.entries.get_mut(&id)
                && let Some((_, armed)) = entry.armed.take()
            {
                self.uncount(due, &armed);
                batch.push(armed);
            }
        }
        batch
    }

    /// The next herd whose window has begun at `now` (and whose instant
    /// has not come: [`Queue::take_due`] takes that), with its instant.
    fn take_ahead(&mut self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Vec<Armed>)> {
        let ahead = self.ahead?;
        let window = chrono::Duration::from_std(ahead.window).ok()?;
        let instant = *self.herds.first()?;
        if instant - window > now || instant <= now {
            return None;
        }
        self.herds.remove(&instant);
        self.at.remove(&instant);
        let keys: Vec<Key> = self
            .due
            .range((instant, 0)..=(instant, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        let mut batch = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(id) = self.due.get(&key) else { continue };
            let Some(entry) = self.entries.get_mut(id) else { continue };
            if entry.armed.as_ref().is_some_and(|(_, armed)| !armed.at_instant)
                && let Some((_, armed)) = entry.armed.take()
            {
                self.due.remove(&key);
                batch.push(armed);
            }
        }
        Some((instant, batch))
    }

    /// When the soonest entry is due.
    fn soonest(&self) -> Option<DateTime<Utc>> {
        self.due.first_key_value().map(|((due, _), _)| *due)
    }

    /// When the next entry is due or the next herd's window begins.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        let head = self.soonest();
        let herd = self.ahead.and_then(|ahead| {
            let window = chrono::Duration::from_std(ahead.window).ok()?;
            Some(*self.herds.first()? - window)
        });
        match (head, herd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs the timer until `stopping` is cancelled, handing each batch of due
/// entries, and each herd whose window has begun, to `on_due`, which must
/// not block; `on_soonest` is told the soonest due time before each wait
/// (for /metrics).
pub(crate) async fn run(
    mut commands: mpsc::UnboundedReceiver<TimerCmd>,
    clock: Clock,
    stopping: CancellationToken,
    ahead: Option<FireAhead>,
    mut on_due: impl FnMut(Due),
    on_soonest: impl Fn(Option<DateTime<Utc>>),
) {
    let mut queue = Queue::new(ahead);
    loop {
        let now = clock.now();
        let batch = queue.take_due(now);
        if !batch.is_empty() {
            on_due(Due { batch, ahead: None });
        }
        while let Some((instant, batch)) = queue.take_ahead(now) {
            on_due(Due {
                batch,
                ahead: Some(instant),
            });
        }
        on_soonest(queue.soonest());
        let wake = queue.next_wake().map(|at| clock.wake_at(at));
        tokio::select! {
            biased;
            _ = stopping.cancelled() => return,
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                queue.apply(cmd);
                while let Ok(cmd) = commands.try_recv() {
                    queue.apply(cmd);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Action, CustomAction, OverlapPolicy, RetryPolicy};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    fn armed(created: i64, version: u64) -> Armed {
        let schedule = crate::scheduler::schedule::Schedule::from_input(
            crate::scheduler::schedule::ScheduleInput {
                every: Some(std::time::Duration::from_secs(60)),
                ..Default::default()
            },
            &Default::default(),
        )
        .unwrap();
        Armed {
            id: TaskId::parse("t").unwrap(),
            slot: at(100),
            version,
            created_at: at(created),
            spec: Arc::new(TaskSpec {
                schedule,
                action: Action::Custom(CustomAction {
                    kind: "k".into(),
                    payload: Default::default(),
                }),
                timeout: std::time::Duration::from_secs(1),
                overlap: OverlapPolicy::Skip,
                retry: RetryPolicy::default(),
                labels: Default::default(),
                catchup_window: None,
            }),
            retry: false,
            at_instant: false,
        }
    }

    #[test]
    fn older_changes_never_overwrite_newer_ones() {
        let mut queue = Queue::default();
        let id = TaskId::parse("t").unwrap();
        queue.apply(TimerCmd::Set {
            armed: armed(0, 5),
            due: at(100),
        });
        // A late arming of version 4 is ignored.
        queue.apply(TimerCmd::Set {
            armed: armed(0, 4),
            due: at(50),
        });
        assert!(queue.take_due(at(60)).is_empty());
        // Deleted, then registered again under the same id: a late
        // disarming of the old task leaves the new one armed.
        queue.apply(TimerCmd::Forget { id: id.clone() });
        queue.apply(TimerCmd::Set {
            armed: armed(10, 0),
            due: at(100),
        });
        queue.apply(TimerCmd::Clear {
            id,
            created_at: at(0),
            version: 7,
        });
        let due = queue.take_due(at(100));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].created_at, due[0].version), (at(10), 0));
    }

    fn armed_as(raw: &str, at_instant: bool) -> Armed {
        Armed {
            id: TaskId::parse(raw).unwrap(),
            at_instant,
            ..armed(0, 1)
        }
    }

    #[test]
    fn a_herd_is_handed_out_when_its_window_begins() {
        let mut queue = Queue::new(Some(FireAhead {
            window: std::time::Duration::from_secs(10),
            min: 3,
            max: 4,
        }));
        let set = |queue: &mut Queue, raw: &str, due: i64, at_instant: bool| {
            queue.apply(TimerCmd::Set {
                armed: armed_as(raw, at_instant),
                due: at(due),
            })
        };
        // A herd of 3 at 100 s (and one that must wait for the instant),
        // a pair at 105 s, a crowd above the maximum at 110 s.
        for raw in ["a", "b", "c"] {
            set(&mut queue, raw, 100, false);
        }
        set(&mut queue, "late", 100, true);
        for raw in ["p", "q"] {
            set(&mut queue, raw, 105, false);
        }
        for raw in ["v", "w", "x", "y", "z"] {
            set(&mut queue, raw, 110, false);
        }
        assert_eq!(queue.next_wake(), Some(at(90)));
        assert!(queue.take_ahead(at(89)).is_none(), "before its window");
        let (instant, herd) = queue.take_ahead(at(90)).expect("the herd");
        assert_eq!(instant, at(100));
        let mut ids: Vec<&str> = herd.iter().map(|a| a.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c"]);
        // Neither the pair nor the crowd is a herd to fire ahead.
        assert!(queue.take_ahead(at(109)).is_none());
        assert_eq!(queue.next_wake(), Some(at(100)), "the one left at 100 s");
        // A herd that shrinks below the minimum is no longer one.
        for raw in ["d", "e", "f"] {
            set(&mut queue, raw, 200, false);
        }
        queue.apply(TimerCmd::Forget {
            id: TaskId::parse("f").unwrap(),
        });
        assert!(queue.take_ahead(at(195)).is_none());
        // Everything is still handed out at its instant.
        assert_eq!(queue.take_due(at(110)).len(), 1 + 2 + 5);
        assert_eq!(queue.take_due(at(200)).len(), 2);
        assert_eq!(queue.next_wake(), None);
    }
}
