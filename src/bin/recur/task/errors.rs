//! What can go wrong in `recur task`, how it reads on stderr, and the one
//! mapping from an error (a gRPC code above all) to the process's exit
//! code. Nothing else in the command line picks an exit code.

use std::process::ExitCode;

use recur::client::{ConnectError, OLDEST_CURSOR_TRAILER, SettingsError};
use tonic::Code;
use tonic_types::StatusExt;

/// Exit codes, as `recur task --help` documents them.
pub mod exit {
    /// The command did what it was asked.
    pub const SUCCESS: u8 = 0;
    /// The server failed or could not be reached.
    pub const SERVER: u8 = 1;
    /// The command line, a task file or a spec was wrong.
    pub const USAGE: u8 = 2;
    /// A task does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// The server understood and said no.
    pub const REFUSED: u8 = 4;
}

/// Why a `recur task` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A mistake on the command line or in a file, found before (or
    /// without) asking the server.
    #[error("{0}")]
    Usage(String),
    /// The connection flags do not fit together.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The server could not be reached, or a file for TLS was unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server answered a call with an error; `context` says which part
    /// of the command made the call when that is not obvious (an entry of
    /// a task file).
    #[error("{}", status_line(context.as_deref(), status))]
    Status {
        /// What the call was about, such as `tasks.yaml: tasks[2] (x)`.
        context: Option<String>,
        /// The server's answer.
        status: tonic::Status,
    },
    /// Writing the output failed, or the program's own data was unusable.
    #[error("{0}")]
    Internal(String),
    /// Whoever read stdout went away (`| head -1`): stop, quietly and
    /// successfully, as a Unix filter does.
    #[error("stdout was closed")]
    StdoutClosed,
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> CliError {
        CliError::Status {
            context: None,
            status,
        }
    }
}

impl CliError {
    /// A server error about one named thing (a task file entry).
    pub fn about(context: impl Into<String>, status: tonic::Status) -> CliError {
        CliError::Status {
            context: Some(context.into()),
            status,
        }
    }

    /// The process exit code this error stands for.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Settings(_) => exit::USAGE,
            // A named file that cannot be used is the caller's mistake.
            CliError::Connect(ConnectError::File { .. }) => exit::USAGE,
            CliError::Connect(_) | CliError::Internal(_) => exit::SERVER,
            CliError::Status { status, .. } => exit_code(status.code()),
            CliError::StdoutClosed => exit::SUCCESS,
        }
    }

    /// Prints the error to stderr: one `recur: ...` line, then the
    /// status details a person can act on, indented.
    pub fn report(&self) {
        if matches!(self, CliError::StdoutClosed) {
            return;
        }
        eprintln!("recur: {self}");
        if let CliError::Status { status, .. } = self {
            for line in detail_lines(status) {
                eprintln!("  {line}");
            }
        }
    }
}

/// The exit code of a gRPC status code: the single place this is decided.
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => exit::SUCCESS,
        Code::InvalidArgument | Code::OutOfRange => exit::USAGE,
        Code::NotFound => exit::NOT_FOUND,
        Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::Aborted => exit::REFUSED,
        Code::Unavailable
        | Code::Internal
        | Code::DeadlineExceeded
        | Code::DataLoss
        | Code::Unknown
        | Code::Cancelled
        | Code::Unimplemented => exit::SERVER,
    }
}

/// Of several failures (one command on several tasks), the one to exit
/// with: a server error (the outcome is unknown) before a refusal, before
/// not found, before a usage error.
pub fn worst(a: u8, b: u8) -> u8 {
    let rank = |code: u8| match code {
        exit::SERVER => 4,
        exit::REFUSED => 3,
        exit::NOT_FOUND => 2,
        exit::USAGE => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The exit code as the process returns it.
pub fn to_exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// A gRPC code as words, `NOT_FOUND` -> `not found`.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `<code in words>: [<context>: ]<message>`.
fn status_line(context: Option<&str>, status: &tonic::Status) -> String {
    let message = match status.message() {
        "" => "(no message)",
        message => message,
    };
    match context {
        Some(context) => format!("{}: {context}: {message}", code_words(status.code())),
        None => format!("{}: {message}", code_words(status.code())),
    }
}

/// The google.rpc details of a status, one line each, for people: field
/// violations, precondition failures, how long to wait, and the oldest
/// cursor a DATA_LOSS names.
pub fn detail_lines(status: &tonic::Status) -> Vec<String> {
    let details = status.get_error_details();
    let mut lines = Vec::new();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            lines.push(format!("{}: {}", v.field, v.description));
        }
    }
    if let Some(failure) = details.precondition_failure() {
        for v in &failure.violations {
            lines.push(format!("{} {}: {}", v.r#type, v.subject, v.description));
        }
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        lines.push(format!(
            "retry after {}s",
            delay.as_secs_f64().ceil() as u64
        ));
    }
    if let Some(oldest) = trailer(status, OLDEST_CURSOR_TRAILER) {
        lines.push(format!("oldest cursor still held: {oldest}"));
    }
    lines
}

/// A text trailer of a status, if present and readable.
pub fn trailer(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_maps_as_the_help_says() {
        assert_eq!(exit_code(Code::Unavailable), 1);
        assert_eq!(exit_code(Code::DataLoss), 1);
        assert_eq!(exit_code(Code::InvalidArgument), 2);
        assert_eq!(exit_code(Code::NotFound), 3);
        assert_eq!(exit_code(Code::FailedPrecondition), 4);
        assert_eq!(exit_code(Code::Unauthenticated), 4);
        assert_eq!(worst(3, 4), 4);
        assert_eq!(worst(1, 4), 1);
        assert_eq!(worst(0, 2), 2);
    }
}
