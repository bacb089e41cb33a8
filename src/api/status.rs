//! The one place where gRPC status codes are chosen, with the
//! `google.rpc` details a program acts on (tonic-types): BadRequest field
//! violations for INVALID_ARGUMENT, RetryInfo where waiting helps,
//! PreconditionFailure for FAILED_PRECONDITION. The message stays for
//! people.

use std::time::Duration;

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{results::stream::StreamEnd, scheduler::Error, store::StoreError};

pub use crate::client::{OLDEST_CURSOR_TRAILER, RESUME_CURSOR_TRAILER, START_CURSOR_HEADER};

/// How long a client is told to wait before retrying a call refused
/// because the store could not be reached (the store check runs every few
/// seconds; a retry sooner mostly fails again).
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How long a client is told to wait after a refusal at shutdown: another
/// replica (or this one restarted) is usually there by then.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(1);
/// How long a client is told to wait when every result stream is open.
const STREAMS_RETRY: Duration = Duration::from_secs(1);

/// INVALID_ARGUMENT naming `field` (its proto path) in the message and in
/// a `google.rpc.BadRequest` field violation.
pub fn bad_request(field: &str, message: String, reason: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// `code` with a `google.rpc.RetryInfo` saying how long to wait.
pub fn retry_after(code: Code, message: String, delay: Duration) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
}

/// FAILED_PRECONDITION with a `google.rpc.PreconditionFailure` violation:
/// `kind` is what failed (`STATE`, `OVERLAP`, `SERVER`), `subject` what it
/// is about (`task/<id>`, or the field the server cannot serve).
fn precondition(message: String, kind: &str, subject: &str, description: &str) -> Status {
    Status::with_error_details(
        Code::FailedPrecondition,
        message,
        ErrorDetails::with_precondition_failure_violation(kind, subject, description),
    )
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument { field, reason } => bad_request(&field, message, &reason),
            Error::Unsupported { field, reason } => precondition(message, "SERVER", &field, &reason),
            Error::NotFound { .. } => Status::not_found(message),
            Error::AlreadyExists { .. } => Status::already_exists(message),
            Error::WrongState {
                task_id,
                state,
                operation,
            } => {
                let subject = format!("task/{task_id}");
                let description = format!("the task is {}", state.name());
                // Deleting is only for finished tasks, so that a live one is
                // never dropped by a typo; tell the caller the way out.
                let message = if operation == "delete" && !state.is_terminal() {
                    format!("{message}; cancel it first with CancelTask, then delete it")
                } else {
                    message
                };
                precondition(message, "STATE", &subject, &description)
            }
            Error::Busy { task_id, policy } => precondition(
                message,
                "OVERLAP",
                &format!("task/{task_id}"),
                &format!("a run is in flight and the overlap policy is {policy}"),
            ),
            // Waiting does not free a task slot: no RetryInfo.
            Error::TooManyTasks { .. } => Status::resource_exhausted(message),
            Error::TooManyStreams { .. } => {
                retry_after(Code::ResourceExhausted, message, STREAMS_RETRY)
            }
            Error::ShuttingDown => retry_after(Code::Unavailable, message, SHUTDOWN_RETRY),
            Error::QuotaExceeded {
                quota,
                namespace,
                detail,
            } => quota_exceeded(quota, &namespace, &detail, None),
            Error::Contended { .. } => Status::aborted(message),
            Error::Store(store) => match store {
                StoreError::Conflict { .. } => Status::aborted(message),
                StoreError::Exists { .. } => Status::already_exists(message),
                StoreError::InvalidCursor { .. } => {
                    bad_request("after_cursor", format!("after_cursor: {message}"), &message)
                }
                StoreError::CursorExpired { oldest, resume, .. } => {
                    let mut status = Status::data_loss(message);
                    insert(&mut status, OLDEST_CURSOR_TRAILER, &oldest);
                    insert(&mut status, RESUME_CURSOR_TRAILER, &resume);
                    status
                }
                StoreError::Unavailable { .. } => {
                    retry_after(Code::Unavailable, message, STORE_RETRY)
                }
                StoreError::Corrupt { .. } | StoreError::Format { .. } => {
                    Status::internal(message)
                }
            },
        }
    }
}

/// A stream ended by shutdown, where no cursor applies (WatchTasks: a
/// client starts again with the list).
pub fn shutting_down() -> Status {
    retry_after(
        Code::Unavailable,
        "the server is shutting down".into(),
        SHUTDOWN_RETRY,
    )
}

/// The system gave no random bytes (for the spec fingerprint key).
pub fn no_randomness() -> Status {
    Status::internal("the system gave no random bytes for the spec fingerprint key")
}

/// A call that reached a handler without passing the access layer.
pub fn no_caller() -> Status {
    Status::unauthenticated("no credentials were checked for this call")
}

/// A task id the caller's namespace does not cover, where the caller is
/// naming a new task (for an existing one the answer is NOT_FOUND).
pub fn outside_namespace(caller: &crate::access::Caller, field: &str) -> Status {
    Status::permission_denied(format!(
        "{field}: must start with {:?}, the namespace of {:?}",
        caller.namespace.as_deref().unwrap_or(""),
        &*caller.name
    ))
}

/// A namespace quota that a call would exceed: RESOURCE_EXHAUSTED naming
/// the quota, with a `google.rpc.RetryInfo` detail when waiting helps.
pub fn quota_exceeded(
    quota: &str,
    namespace: &str,
    detail: &str,
    retry_after: Option<std::time::Duration>,
) -> Status {
    let message = format!("quota {quota} of namespace {namespace:?} exceeded: {detail}");
    match retry_after {
        Some(delay) => self::retry_after(Code::ResourceExhausted, message, delay),
        None => Status::resource_exhausted(message),
    }
}

/// The status a stream ends with; None for a clean end (OK).
pub fn stream_end(end: StreamEnd) -> Option<Status> {
    let (mut status, resume) = match end {
        StreamEnd::Finished => return None,
        // Resuming at once is right: the buffer is empty again.
        StreamEnd::Lagged { resume } => (
            retry_after(
                Code::ResourceExhausted,
                "the reader fell behind its buffer; resume from the cursor in the recur-resume-cursor trailer".into(),
                Duration::ZERO,
            ),
            resume,
        ),
        StreamEnd::ShuttingDown { resume } => (
            retry_after(
                Code::Unavailable,
                "the server is shutting down; resume from the cursor in the recur-resume-cursor trailer".into(),
                SHUTDOWN_RETRY,
            ),
            resume,
        ),
        StreamEnd::Failed { error, resume } => (Status::from(error), resume),
    };
    insert(&mut status, RESUME_CURSOR_TRAILER, &resume);
    Some(status)
}

fn insert(status: &mut Status, key: &'static str, value: &str) {
    // Cursors are ASCII we made; a value that would not fit a header is left out.
    if let Ok(v) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes() {
        let e = Error::InvalidArgument {
            field: "spec.schedule.every".into(),
            reason: "must be at least 1s".into(),
        };
        let s = Status::from(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("spec.schedule.every"));
        let s = stream_end(StreamEnd::Lagged {
            resume: "abc-1".into(),
        })
        .unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RESUME_CURSOR_TRAILER).unwrap(), "abc-1");
        assert!(stream_end(StreamEnd::Finished).is_none());
    }
}
