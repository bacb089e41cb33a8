//! The live side of each task in this process: its cancellation token and
//! the tokens of its runs going here. What decides anything (state, run
//! records, overlap) lives in the store; tokens cannot, so they live here.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio_util::sync::CancellationToken;

use crate::task::TaskId;

/// Per-task live state.
#[derive(Debug)]
pub(crate) struct TaskHandle {
    /// Child of the server's root token: cancelling it aborts every run of
    /// the task; cancelling the root aborts every run of every task.
    pub token: CancellationToken,
    /// Token of each run of the task going in this process, by run number,
    /// so CANCEL_RUNNING can cancel exactly the runs the store names.
    runs: Mutex<HashMap<u64, CancellationToken>>,
}

impl TaskHandle {
    fn runs(&self) -> MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // A map of tokens stays consistent even if a holder panicked.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for run `run`, a child of the task's.
    pub fn start_run(&self, run: u64) -> CancellationToken {
        let token = self.token.child_token();
        self.runs().insert(run, token.clone());
        token
    }

    /// Forgets run `run` once it has ended.
    pub fn end_run(&self, run: u64) {
        self.runs().remove(&run);
    }

    /// Cancels run `run` if it is going here.
    pub fn cancel_run(&self, run: u64) {
        if let Some(token) = self.runs().get(&run) {
            token.cancel();
        }
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

    /// The task's handle, made on first use.
    pub fn handle(&self, id: &TaskId) -> Arc<TaskHandle> {
        self.handles()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(TaskHandle {
                    token: self.root.child_token(),
                    runs: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// The handle if one exists.
    pub fn get(&self, id: &TaskId) -> Option<Arc<TaskHandle>> {
        self.handles().get(id).cloned()
    }

    /// Forgets the task's handle if nothing of it runs here and nobody else
    /// holds it: a run that was dropped before it started may belong to a
    /// task since deleted, whose handle must not stay behind. Nothing is
    /// lost by forgetting an idle handle: no run holds a child of its token.
    pub fn forget_if_idle(&self, id: &TaskId) {
        let mut handles = self.handles();
        if handles
            .get(id)
            .is_some_and(|h| Arc::strong_count(h) == 1 && h.runs().is_empty())
        {
            handles.remove(id);
        }
    }

    /// Forgets a deleted task.
    pub fn remove(&self, id: &TaskId) {
        self.handles().remove(id);
    }
}
