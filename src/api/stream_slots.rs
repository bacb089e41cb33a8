//! A namespace's open result streams (its `max_streams` quota), counted in
//! the store when the store is shared, so the quota holds across replicas:
//! each stream holds a slot that its process keeps alive and gives back
//! when the stream ends; a replica that dies has its slots lapse. A store
//! of one process is counted here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{STREAM_SLOT_TTL, Store, StoreError};

/// What the open streams of this process hold.
#[derive(Default)]
struct Slots {
    /// Streams per namespace, for a store that does not count them.
    local: HashMap<Arc<str>, usize>,
    /// Slots in the store, by holder id: kept alive while their stream is open.
    open: HashMap<String, Arc<str>>,
    /// Slots whose streams ended, to give back.
    released: Vec<(Arc<str>, String)>,
}

/// The open-stream slots of this process.
#[derive(Clone)]
pub struct StreamSlots {
    store: Arc<dyn Store>,
    /// Held for a few map operations, never across an await.
    slots: Arc<Mutex<Slots>>,
    /// Wakes the keeper when a slot is released.
    released: Arc<Notify>,
}

/// A stream's slot, given back when dropped (the stream ended).
pub struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    released: Arc<Notify>,
    namespace: Arc<str>,
    /// The slot's holder id in the store; `None` when counted here.
    holder: Option<String>,
}

impl StreamSlots {
    /// Slots on `store`, kept alive until `stop`.
    pub fn new(store: Arc<dyn Store>, stop: CancellationToken) -> StreamSlots {
        let slots = StreamSlots {
            store,
            slots: Arc::default(),
            released: Arc::default(),
        };
        tokio::spawn(slots.clone().keep(stop));
        slots
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot of `namespace`'s `max`, or `None` when all are taken.
    pub async fn take(&self, namespace: &Arc<str>, max: usize) -> Result<Option<SlotGuard>, StoreError> {
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let guard = |holder| SlotGuard {
            slots: self.slots.clone(),
            released: self.released.clone(),
            namespace: namespace.clone(),
            holder,
        };
        match self.store.take_stream_slot(namespace, &holder, max).await? {
            Some(false) => Ok(None),
            Some(true) => {
                self.lock().open.insert(holder.clone(), namespace.clone());
                Ok(Some(guard(Some(holder))))
            }
            None => {
                let mut slots = self.lock();
                let open = slots.local.entry(namespace.clone()).or_default();
                if *open >= max {
                    return Ok(None);
                }
                *open += 1;
                Ok(Some(guard(None)))
            }
        }
    }

    /// Keeps open slots alive and gives released ones back, until `stop`;
    /// then gives back what was released by then.
    async fn keep(self, stop: CancellationToken) {
        let every = STREAM_SLOT_TTL / 3;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(every) => false,
                _ = self.released.notified() => false,
            };
            let (released, open) = {
                let mut slots = self.lock();
                let released = std::mem::take(&mut slots.released);
                let open: Vec<(Arc<str>, String)> = slots
                    .open
                    .iter()
                    .map(|(holder, ns)| (ns.clone(), holder.clone()))
                    .collect();
                (released, open)
            };
            if let Err(e) = self.store.release_stream_slots(&released).await {
                // They lapse by themselves within STREAM_SLOT_TTL.
                tracing::warn!(error = %e, slots = released.len(), "giving back stream slots failed");
            }
            if stopping {
                return;
            }
            if let Err(e) = self.store.keep_stream_slots(&open).await {
                tracing::warn!(error = %e, slots = open.len(), "keeping stream slots alive failed");
            }
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match self.holder.take() {
            Some(holder) => {
                slots.open.remove(&holder);
                slots.released.push((self.namespace.clone(), holder));
                drop(slots);
                self.released.notify_one();
            }
            None => {
                if let Some(n) = slots.local.get_mut(&self.namespace) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        slots.local.remove(&self.namespace);
                    }
                }
            }
        }
    }
}
