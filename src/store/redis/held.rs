//! Every task as this process last wrote or read it, decoded, with the
//! `rev` Redis had for it then.
//!
//! Two uses. A step (fire, start, record, a control call) starts from the
//! held state and writes with a compare-and-set on the held `rev`, so while
//! nothing else writes a task it costs no read, no decode and no spec
//! validation (a quarter of the server's CPU while firing when every step
//! read its task; benches/README.md). Anything else that wrote the task in
//! between makes the compare-and-set lose; the held state is then in doubt
//! and the step reads Redis, so no write is ever decided from a stale
//! state. A step that would write nothing (a refusal, nothing to do) reads
//! Redis before it answers, since no compare-and-set checks it.
//! And a Redis that came back empty gets the held tasks written back
//! (restore.rs): they are this process's newest knowledge of each task.
//!
//! A std mutex, held only to look up, copy or replace one entry; never
//! across an await.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    store::stored::Stored,
    task::{TaskId, TaskSpec},
};

/// One held task. Shared (`Arc`) so a lookup copies a pointer under the
/// lock, not the task.
pub(super) struct Held {
    /// The `rev` Redis had when this was written or read.
    pub(super) rev: u64,
    pub(super) stored: Stored,
    /// The stored form of its spec (the record's spec field, encoded):
    /// written again unchanged while the spec is the same `Arc`, and
    /// compared with a spec read back to reuse the validated one.
    pub(super) spec_field: Arc<[u8]>,
    /// A compare-and-set from this state lost, or a write from it failed
    /// or found an emptied Redis: the next step reads Redis instead. Kept
    /// meanwhile for a restore (the loss may be Redis having come back
    /// empty, and then this is the newest state there is).
    pub(super) doubted: AtomicBool,
}

impl Held {
    pub(super) fn new(rev: u64, stored: Stored, spec_field: Arc<[u8]>) -> Arc<Held> {
        Arc::new(Held {
            rev,
            stored,
            spec_field,
            doubted: AtomicBool::new(false),
        })
    }
}

/// The held tasks, by id, and the tombstones of tasks deleted lately.
#[derive(Default)]
pub(super) struct HeldTasks {
    tasks: Mutex<HashMap<TaskId, Arc<Held>>>,
    /// Tasks seen deleted, with the stamp of their deletion (registration
    /// ms, last version plus one) and when: written back with the held
    /// tasks by a restore, so a replica that missed a delete cannot bring
    /// the task back. Kept for [`super::TOMBSTONE_TTL`].
    tombs: Mutex<HashMap<TaskId, Tomb>>,
}

/// A deleted task's tombstone.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tomb {
    pub(super) stamp: (i64, u64),
    at: std::time::Instant,
}

impl HeldTasks {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<Held>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The held state of `id`, to decide a step on (on a copy), unless it
    /// is in doubt.
    pub(super) fn get(&self, id: &TaskId) -> Option<Arc<Held>> {
        let held = self.lock().get(id).cloned()?;
        (!held.doubted.load(Ordering::Acquire)).then_some(held)
    }

    /// Keeps `held` as the task's state unless a newer one (by `rev`) is
    /// already held: a read or write that completes late never replaces a
    /// newer state.
    pub(super) fn keep(&self, id: &TaskId, held: Arc<Held>) {
        let mut tasks = self.lock();
        match tasks.get(id) {
            Some(newer) if newer.rev > held.rev => {}
            _ => {
                tasks.insert(id.clone(), held);
            }
        }
    }

    /// Holds `held` as the task's state whatever is held: the state a
    /// create just wrote (an older incarnation of the id, held from before
    /// Redis came back empty, must not outlive it).
    pub(super) fn put(&self, id: &TaskId, held: Arc<Held>) {
        self.lock().insert(id.clone(), held);
    }

    /// Forgets `id`: it was deleted; its tombstone is kept.
    pub(super) fn forget(&self, id: &TaskId) {
        let removed = self.lock().remove(id);
        if let Some(held) = removed {
            self.bury(id, &held);
        }
    }

    /// Keeps the tombstone of `held`, deleted.
    fn bury(&self, id: &TaskId, held: &Held) {
        let task = &held.stored.record;
        let stamp = (task.created_at.timestamp_millis(), task.version + 1);
        let mut tombs = self.tombs.lock().unwrap_or_else(|e| e.into_inner());
        // Pruned as they are added: a map of recent deletes stays small.
        if tombs.len() % 1024 == 1023 {
            tombs.retain(|_, tomb| tomb.at.elapsed() < super::TOMBSTONE_TTL);
        }
        tombs.insert(
            id.clone(),
            Tomb {
                stamp,
                at: std::time::Instant::now(),
            },
        );
    }

    /// The tombstones kept, for a restore.
    pub(super) fn tombs(&self) -> Vec<(TaskId, Tomb)> {
        let tombs = self.tombs.lock().unwrap_or_else(|e| e.into_inner());
        tombs
            .iter()
            .filter(|(_, tomb)| tomb.at.elapsed() < super::TOMBSTONE_TTL)
            .map(|(id, tomb)| (id.clone(), *tomb))
            .collect()
    }

    /// Forgets `id` without a tombstone, to hold it again as next read.
    pub(super) fn drop_for_read(&self, id: &TaskId) {
        self.lock().remove(id);
    }

    /// Marks `id` in doubt whatever its rev: another replica changed it.
    pub(super) fn doubt_any(&self, id: &TaskId) {
        if let Some(held) = self.lock().get(id) {
            held.doubted.store(true, Ordering::Release);
        }
    }

    /// Forgets `id` if its state is in doubt: Redis (with the store's
    /// epoch) no longer has it, so it was deleted by a step whose reply was
    /// lost, and a restore must not bring it back.
    pub(super) fn forget_doubted(&self, id: &TaskId) {
        let removed = {
            let mut tasks = self.lock();
            if tasks
                .get(id)
                .is_some_and(|held| held.doubted.load(Ordering::Acquire))
            {
                tasks.remove(id)
            } else {
                None
            }
        };
        if let Some(held) = removed {
            self.bury(id, &held);
        }
    }

    /// A write from `rev` of `id` lost its compare-and-set: unless a newer
    /// state is held already, the next step reads Redis.
    pub(super) fn doubt(&self, id: &TaskId, rev: u64) {
        if let Some(held) = self.lock().get(id)
            && held.rev <= rev
        {
            held.doubted.store(true, Ordering::Release);
        }
    }

    /// The validated spec held for `id` if its stored form is `field`.
    pub(super) fn spec_of_field(&self, id: &TaskId, field: &[u8]) -> Option<Arc<TaskSpec>> {
        self.lock()
            .get(id)
            .filter(|held| *held.spec_field == *field)
            .map(|held| held.stored.record.spec.clone())
    }

    /// Copies of every held task, for a restore.
    pub(super) fn all(&self) -> Vec<(TaskId, Arc<Held>)> {
        self.lock()
            .iter()
            .map(|(id, held)| (id.clone(), held.clone()))
            .collect()
    }
}
