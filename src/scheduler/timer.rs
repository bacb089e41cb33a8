//! One timer for all tasks: a queue ordered by due time and a single sleep
//! until its head; everything due at once is handed out as one batch, so a
//! herd costs one wake-up and one store call per batch rather than a task
//! and a store round trip per slot (see benches/).
//!
//! Entries carry the task's version: arming is monotonic in it, so an
//! out-of-date arm (a firing that finished after a control call re-armed the
//! task) can never overwrite a newer one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
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
}

impl Queue {
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
                    armed: Some((key, _)),
                    ..
                }) = self.entries.remove(&id)
                {
                    self.due.remove(&key);
                }
                return;
            }
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            if entry.stamp > stamp {
                return;
            }
            if let Some((key, _)) = entry.armed.take() {
                self.due.remove(&key);
            }
        }
        let armed = armed.map(|(due, armed)| {
            let key = (due, self.next_seq);
            self.next_seq += 1;
            self.due.insert(key, id.clone());
            (key, armed)
        });
        self.entries.insert(id, Entry { stamp, armed });
    }

    /// Takes every entry due at `now`.
    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Armed> {
        let mut batch = Vec::new();
        while let Some(((due, _), _)) = self.due.first_key_value()
            && *due <= now
        {
            if let Some((_, id)) = self.due.pop_first()
                && let Some(entry) = self.entries.get_mut(&id)
                && let Some((_, armed)) = entry.armed.take()
            {
                batch.push(armed);
            }
        }
        batch
    }
}

/// Runs the timer until `stopping` is cancelled, handing each batch of due
/// entries to `on_due`, which must not block.
pub(crate) async fn run(
    mut commands: mpsc::UnboundedReceiver<TimerCmd>,
    clock: Clock,
    stopping: CancellationToken,
    mut on_due: impl FnMut(Vec<Armed>),
) {
    let mut queue = Queue::default();
    loop {
        let batch = queue.take_due(clock.now());
        if !batch.is_empty() {
            on_due(batch);
        }
        let wake = queue
            .due
            .first_key_value()
            .map(|((due, _), _)| clock.wake_at(*due));
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
}
