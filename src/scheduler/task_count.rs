//! The task cap (`max_tasks`) without a lock across the store's round
//! trips: registrations run side by side, and the store is counted only
//! now and then while far from the cap, at every registration near it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::store::{Store, StoreError};

/// How old a count may be before a registration counts again.
const RECOUNT_AFTER: Duration = Duration::from_secs(1);

/// Within this many tasks of the cap every registration counts the store,
/// so the cap holds exactly: the estimate below can only fall short by the
/// creations that raced a count, far fewer than this in one process.
const NEAR_THE_CAP: usize = 1024;

/// Tasks the store holds, as far as this process knows.
pub(super) struct TaskCount {
    /// The store's count when last taken, plus the tasks created since.
    known: AtomicUsize,
    /// Registrations between their check and the end of their insert:
    /// each may create a task the store does not show yet.
    in_flight: Arc<AtomicUsize>,
    /// When the store was last counted (None: never).
    counted_at: std::sync::Mutex<Option<Instant>>,
}

/// A registration's place under the cap, held until its insert returned.
pub(super) struct Reservation(Arc<AtomicUsize>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl TaskCount {
    pub(super) fn new() -> TaskCount {
        TaskCount {
            known: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            counted_at: std::sync::Mutex::new(None),
        }
    }

    /// A place for one more task under `max`, or None at the cap. Counts
    /// registrations in flight as if each created a task: near the cap,
    /// racing registrations may be refused that one at a time would not
    /// (never more tasks than `max`).
    pub(super) async fn reserve(
        &self,
        store: &dyn Store,
        max: usize,
    ) -> Result<Option<Reservation>, StoreError> {
        let others = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let reservation = Reservation(self.in_flight.clone());
        let stale = self
            .counted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= RECOUNT_AFTER);
        let mut known = self.known.load(Ordering::Acquire);
        if stale || known + others + NEAR_THE_CAP >= max {
            known = store.count_tasks().await?;
            self.known.store(known, Ordering::Release);
            *self.counted_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        Ok((known + others < max).then_some(reservation))
    }

    /// A reserved registration created its task.
    pub(super) fn created(&self) {
        self.known.fetch_add(1, Ordering::AcqRel);
    }
}
