//! Results on their way to readers: the server-wide event broadcast and the
//! per-stream forwarder that joins replay from the store with live events.
//! Knows nothing of gRPC; the API maps a [`StreamEnd`] to a status.

pub mod stream;

use std::sync::Arc;

use crate::task::{TaskId, TaskResult};

/// What the scheduler announces to readers.
#[derive(Debug, Clone)]
pub enum Event {
    /// A result was appended to the log (always announced in append order).
    Result(Arc<TaskResult>),
    /// The task is terminal and its last run has reported.
    TaskEnded(TaskId),
}
