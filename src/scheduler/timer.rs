//! One timer for all tasks: a queue ordered by due time and a single sleep
//! until its head. A sleeping tokio task per schedule would work too, but a
//! herd of 100,000 tasks due at one instant then means 100,000 wakers in
//! tokio's wheel plus as many tasks contending for the store; one queue
//! hands the herd out in one pass (see benches/).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use crate::task::TaskId;

/// A change to the timer queue.
#[derive(Debug)]
pub(crate) enum TimerCmd {
    /// (Re)arms the task for `slot`, firing at `due` (slot plus jitter).
    Set {
        id: TaskId,
        slot: DateTime<Utc>,
        due: DateTime<Utc>,
    },
    /// Disarms the task.
    Clear { id: TaskId },
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

    pub(crate) fn set(&self, id: TaskId, slot: DateTime<Utc>, due: DateTime<Utc>) {
        // The receiver lives until shutdown, when arming no longer matters.
        let _ = self.tx.send(TimerCmd::Set { id, slot, due });
    }

    pub(crate) fn clear(&self, id: TaskId) {
        let _ = self.tx.send(TimerCmd::Clear { id });
    }
}

/// Runs the timer until `stopping` is cancelled, calling `on_due(task, slot)`
/// for each entry whose due time has come. `on_due` must not block.
pub(crate) async fn run(
    mut commands: mpsc::UnboundedReceiver<TimerCmd>,
    clock: Clock,
    stopping: CancellationToken,
    mut on_due: impl FnMut(TaskId, DateTime<Utc>),
) {
    let mut queue: BTreeSet<(DateTime<Utc>, TaskId)> = BTreeSet::new();
    let mut armed: HashMap<TaskId, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    let apply = |cmd: TimerCmd, queue: &mut BTreeSet<_>, armed: &mut HashMap<_, _>| match cmd {
        TimerCmd::Set { id, slot, due } => {
            if let Some((old_due, _)) = armed.insert(id.clone(), (due, slot)) {
                queue.remove(&(old_due, id.clone()));
            }
            queue.insert((due, id));
        }
        TimerCmd::Clear { id } => {
            if let Some((old_due, _)) = armed.remove(&id) {
                queue.remove(&(old_due, id));
            }
        }
    };
    loop {
        let now = clock.now();
        while let Some((due, _)) = queue.first()
            && *due <= now
        {
            if let Some((_, id)) = queue.pop_first()
                && let Some((_, slot)) = armed.remove(&id)
            {
                on_due(id, slot);
            }
        }
        let wake = queue.first().map(|(due, _)| clock.wake_at(*due));
        tokio::select! {
            biased;
            _ = stopping.cancelled() => return,
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                apply(cmd, &mut queue, &mut armed);
                while let Ok(cmd) = commands.try_recv() {
                    apply(cmd, &mut queue, &mut armed);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
        }
    }
}
