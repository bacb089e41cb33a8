//! The overlap policy as a pure decision over a task's run records, so every
//! store applies it inside its atomic firing step the same way (the Redis
//! store mirrors it in its script).

use super::{RunPhase, RunRecord};
use crate::task::OverlapPolicy;

/// Most runs of one task in flight at once under ALLOW. Without a bound, a
/// task whose runs hang (a target that never answers within a long timeout)
/// would take every slot of the server's cap of runs in flight; beyond it a
/// slot is SKIPPED as under SKIP.
pub const MAX_ALLOW_RUNS_PER_TASK: usize = 16;

/// What the policy makes of a new slot or trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start a run.
    Start,
    /// Cancel the running runs, drop the queued ones, then start.
    CancelThenStart,
    /// Park the run until the ones in flight end.
    Buffer,
    /// Start nothing.
    Skip,
}

/// Decides for a task whose dispatched runs are `runs`.
pub(crate) fn decide(policy: OverlapPolicy, runs: &[RunRecord]) -> Decision {
    let in_flight = runs
        .iter()
        .filter(|r| r.phase != RunPhase::Buffered)
        .count();
    let buffered = runs.len() - in_flight;
    if runs.is_empty() {
        return Decision::Start;
    }
    match policy {
        OverlapPolicy::Skip => Decision::Skip,
        OverlapPolicy::Allow if in_flight < MAX_ALLOW_RUNS_PER_TASK => Decision::Start,
        OverlapPolicy::Allow => Decision::Skip,
        OverlapPolicy::CancelRunning => Decision::CancelThenStart,
        OverlapPolicy::BufferOne if buffered > 0 => Decision::Skip,
        OverlapPolicy::BufferOne => Decision::Buffer,
    }
}
