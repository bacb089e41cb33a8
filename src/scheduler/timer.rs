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
}

/// A change to the timer queue.
#[derive(Debug)]
pub(crate) enum TimerCmd {
    /// (Re)arms a task to fire at `due` (slot plus jitter).
    Set { armed: Armed, due: DateTime<Utc> },
    /// Disarms a task at `version`.
    Clear { id: TaskId, version: u64 },
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

    pub(crate) fn clear(&self, id: TaskId, version: u64) {
        let _ = self.tx.send(TimerCmd::Clear { id, version });
    }

    pub(crate) fn forget(&self, id: TaskId) {
        let _ = self.tx.send(TimerCmd::Forget { id });
    }
}

/// A task's entry: the newest version seen, and its arming if armed.
struct Entry {
    version: u64,
    armed: Option<(Key, Armed)>,
}

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
        let (id, version, armed) = match cmd {
            TimerCmd::Set { armed, due } => (armed.id.clone(), armed.version, Some((due, armed))),
            TimerCmd::Clear { id, version } => (id, version, None),
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
            if entry.version > version {
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
        self.entries.insert(id, Entry { version, armed });
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
