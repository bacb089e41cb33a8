//! The live side of each task: its cancellation token, the lock that orders
//! control calls against firing, and the runs in flight. What survives a
//! restart lives in the store; this is only what a running process needs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::task::{TaskId, Trigger};

/// A run waiting for the one in flight to end (overlap BUFFER_ONE).
#[derive(Debug, Clone)]
pub(crate) struct PendingRun {
    pub run: u64,
    pub trigger: Trigger,
    pub scheduled_at: DateTime<Utc>,
}

/// Runs of one task.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    /// Run number and token of each run in flight.
    pub active: Vec<(u64, CancellationToken)>,
    /// The buffered run, if any.
    pub pending: Option<PendingRun>,
}

/// Per-task live state.
#[derive(Debug)]
pub(crate) struct TaskHandle {
    /// Child of the server's root token: cancelling it aborts every run of
    /// the task; cancelling the root aborts every run of every task.
    pub token: CancellationToken,
    /// Held by every control call and by firing while they read, decide and
    /// write the task, so "PauseTask returned" really means "nothing starts".
    pub op: tokio::sync::Mutex<()>,
    runs: Mutex<Runs>,
}

impl TaskHandle {
    /// The task's runs. Never held across an await.
    pub fn runs(&self) -> MutexGuard<'_, Runs> {
        // The guarded data stays consistent even if a holder panicked.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a run is in flight or buffered.
    pub fn busy(&self) -> bool {
        let runs = self.runs();
        !runs.active.is_empty() || runs.pending.is_some()
    }
}

/// All handles of this process.
#[derive(Debug)]
pub(crate) struct Registry {
    root: CancellationToken,
    handles: Mutex<HashMap<TaskId, Arc<TaskHandle>>>,
}

impl Registry {
    pub fn new(root: CancellationToken) -> Self {
        Self {
            root,
            handles: Mutex::new(HashMap::new()),
        }
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<TaskHandle>>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task's handle, made on first use (a task the store knows but this
    /// process has not touched yet).
    pub fn handle(&self, id: &TaskId) -> Arc<TaskHandle> {
        self.handles()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(TaskHandle {
                    token: self.root.child_token(),
                    op: tokio::sync::Mutex::new(()),
                    runs: Mutex::new(Runs::default()),
                })
            })
            .clone()
    }

    /// The handle if one exists.
    pub fn get(&self, id: &TaskId) -> Option<Arc<TaskHandle>> {
        self.handles().get(id).cloned()
    }

    /// Forgets a deleted task.
    pub fn remove(&self, id: &TaskId) {
        self.handles().remove(id);
    }
}
