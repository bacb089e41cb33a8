//! The one place where gRPC status codes are chosen.

use tonic::{Status, metadata::MetadataValue};

use crate::{results::stream::StreamEnd, scheduler::Error, store::StoreError};

/// Trailer carrying the cursor a stream can be resumed from.
pub const RESUME_CURSOR_TRAILER: &str = "recur-resume-cursor";
/// Trailer naming the oldest cursor still held (with DATA_LOSS).
pub const OLDEST_CURSOR_TRAILER: &str = "recur-oldest-cursor";

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument { .. } => Status::invalid_argument(message),
            Error::Unsupported { .. } => Status::failed_precondition(message),
            Error::NotFound { .. } => Status::not_found(message),
            Error::AlreadyExists { .. } => Status::already_exists(message),
            Error::WrongState {
                state, operation, ..
            } if operation == "delete" && !state.is_terminal() => {
                // Deleting is only for finished tasks, so that a live one is
                // never dropped by a typo; tell the caller the way out.
                Status::failed_precondition(format!(
                    "{message}; cancel it first with CancelTask, then delete it"
                ))
            }
            Error::WrongState { .. } | Error::Busy { .. } => Status::failed_precondition(message),
            Error::TooManyTasks { .. } | Error::TooManyStreams { .. } => {
                Status::resource_exhausted(message)
            }
            Error::ShuttingDown => Status::unavailable(message),
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
                    Status::invalid_argument(format!("after_cursor: {message}"))
                }
                StoreError::CursorExpired { oldest, resume, .. } => {
                    let mut status = Status::data_loss(message);
                    insert(&mut status, OLDEST_CURSOR_TRAILER, &oldest);
                    insert(&mut status, RESUME_CURSOR_TRAILER, &resume);
                    status
                }
                StoreError::Unavailable { .. } => Status::unavailable(message),
                StoreError::Corrupt { .. } | StoreError::Format { .. } => {
                    Status::internal(message)
                }
            },
        }
    }
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
        Some(delay) => {
            use tonic_types::{ErrorDetails, StatusExt};
            Status::with_error_details(
                tonic::Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            )
        }
        None => Status::resource_exhausted(message),
    }
}

/// The status a stream ends with; None for a clean end (OK).
pub fn stream_end(end: StreamEnd) -> Option<Status> {
    let (mut status, resume) = match end {
        StreamEnd::Finished => return None,
        StreamEnd::Lagged { resume } => (
            Status::resource_exhausted(
                "the reader fell behind its buffer; resume from the cursor in the recur-resume-cursor trailer",
            ),
            resume,
        ),
        StreamEnd::ShuttingDown { resume } => (
            Status::unavailable(
                "the server is shutting down; resume from the cursor in the recur-resume-cursor trailer",
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
