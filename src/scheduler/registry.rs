//! The live side of each task in this process: its cancellation token and
//! the tokens of its runs going here. What decides anything (state, run
//! records, overlap) lives in the store; tokens cannot, so they live here.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
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
    /// so CANCEL_RUNNING can cancel exactly the runs the store names; and
    /// the runs cancelled before they had a token here.
    runs: Mutex<RunTokens>,
    /// Pauses and cancels applied to the task: a run fired ahead compares
    /// it at its instant with its value when it was fired.
    halts: AtomicU64,
}

/// The tokens of a task's runs.
#[derive(Debug, Default)]
struct RunTokens {
    going: HashMap<u64, CancellationToken>,
    /// Runs a CANCEL_RUNNING named before their token was made: a run the
    /// store started in a firing step gets its token only after that step,
    /// and a trigger racing it may cancel it in between. Few and short
    /// lived; bounded, oldest dropped (a cancel of a run that already
    /// ended here lands here too).
    cancelled_early: std::collections::VecDeque<u64>,
}

/// Most early cancels kept per task.
const EARLY_CANCELS: usize = 16;

impl TaskHandle {
    fn runs(&self) -> MutexGuard<'_, RunTokens> {
        // A map of tokens stays consistent even if a holder panicked.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for run `run`, a child of the task's; cancelled already if
    /// the run was cancelled before it got here.
    pub fn start_run(&self, run: u64) -> CancellationToken {
        let token = self.token.child_token();
        let mut runs = self.runs();
        if let Some(i) = runs.cancelled_early.iter().position(|r| *r == run) {
            runs.cancelled_early.remove(i);
            token.cancel();
        }
        runs.going.insert(run, token.clone());
        token
    }

    /// Counts a pause or cancel of the task.
    pub fn halted(&self) {
        self.halts.fetch_add(1, Ordering::AcqRel);
    }

    /// Pauses and cancels of the task so far.
    pub fn halts(&self) -> u64 {
        self.halts.load(Ordering::Acquire)
    }

    /// Forgets run `run` once it has ended.
    pub fn end_run(&self, run: u64) {
        self.runs().going.remove(&run);
    }

    /// Cancels run `run`: at once if it is going here, else when it starts.
    pub fn cancel_run(&self, run: u64) {
        let mut runs = self.runs();
        match runs.going.get(&run) {
            Some(token) => token.cancel(),
            None => {
                if runs.cancelled_early.len() == EARLY_CANCELS {
                    runs.cancelled_early.pop_front();
                }
                runs.cancelled_early.push_back(run);
            }
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
                    runs: Mutex::new(RunTokens::default()),
                    halts: AtomicU64::new(0),
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
            .is_some_and(|h| Arc::strong_count(h) == 1 && h.runs().going.is_empty())
        {
            handles.remove(id);
        }
    }

    /// Forgets a deleted task.
    pub fn remove(&self, id: &TaskId) {
        self.handles().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_cancelled_before_its_token_starts_cancelled() {
        let registry = Registry::new(CancellationToken::new());
        let id = TaskId::parse("t").expect("valid id");
        let handle = registry.handle(&id);
        // CANCEL_RUNNING names run 7 before firing made its token.
        handle.cancel_run(7);
        assert!(handle.start_run(7).is_cancelled());
        // Only that run, and only once.
        assert!(!handle.start_run(8).is_cancelled());
        handle.end_run(7);
        assert!(!handle.start_run(7).is_cancelled());
    }

    #[test]
    fn early_cancels_are_bounded() {
        let registry = Registry::new(CancellationToken::new());
        let handle = registry.handle(&TaskId::parse("t").expect("valid id"));
        for run in 0..(EARLY_CANCELS as u64 + 1) {
            handle.cancel_run(run);
        }
        assert!(!handle.start_run(0).is_cancelled(), "the oldest was dropped");
        assert!(handle.start_run(EARLY_CANCELS as u64).is_cancelled());
    }
}
