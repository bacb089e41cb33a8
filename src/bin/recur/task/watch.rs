//! `recur task watch [ID...]`: follows StreamResults, one line per result,
//! and resumes after a disconnect from the server's resume cursor (the
//! `recur-resume-cursor` trailer) or else the last cursor printed, so no
//! result is shown twice or skipped. Owns the reconnect policy: which
//! endings are worth resuming and how long to wait between attempts.

use std::{fmt::Write as _, time::Duration};

use clap::{Args, ValueEnum};
use recur::{client::Client, pb::v1 as pb};
use tonic::Code;
use tonic_types::StatusExt;

use super::{
    duration,
    errors::{self, CliError, exit},
    output, proto_json,
};

/// `watch --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  recur task watch                        # every task's results as they come
  recur task watch fetch-prices -o json   # one JSON line per result
  recur task watch --history              # the retained results, then exit
  recur task watch --after 1733108645123-0";

use recur::client::{RESUME_CURSOR_TRAILER, START_CURSOR_HEADER};
/// First wait before reconnecting when the server gave no RetryInfo.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnects (RetryInfo included): a watcher should
/// notice a server that is back within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How each result is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WatchFormat {
    /// One readable line per result.
    Text,
    /// One JSON object per line (the TaskResult in the proto3 JSON mapping).
    Json,
}

/// `recur task watch`.
#[derive(Args)]
pub struct WatchArgs {
    /// Only the results of these tasks (default: every task). The stream
    /// ends once every named task has ended.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Start after this cursor (a result's cursor, from `-o json`): the
    /// retained results after it, then live ones.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Replay the retained results (after --after, if given) and exit
    /// instead of following.
    #[arg(long)]
    history: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = WatchFormat::Text)]
    output: WatchFormat,
}

/// Why one stream stopped.
enum End {
    /// It ended with OK (history replayed, or every named task ended).
    Finished,
    /// Ctrl-C.
    Interrupted,
    /// The server or the connection ended it with this status.
    Failed(tonic::Status),
}

impl WatchArgs {
    /// Streams until OK, Ctrl-C, or an error not worth resuming.
    pub async fn run(self, client: &mut Client) -> Result<u8, CliError> {
        let mut cursor = self.after.clone().unwrap_or_default();
        let mut failures: u32 = 0;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            let end = tokio::select! {
                _ = &mut ctrl_c => End::Interrupted,
                end = self.follow(client, &mut cursor, &mut failures) => end?,
            };
            let status = match end {
                End::Finished | End::Interrupted => return Ok(exit::SUCCESS),
                End::Failed(status) => status,
            };
            if !resumable(&status) {
                return Err(status.into());
            }
            if let Some(resume) = errors::trailer(&status, RESUME_CURSOR_TRAILER) {
                cursor = resume;
            }
            let delay = delay(&status, failures);
            failures = failures.saturating_add(1);
            let from = if cursor.is_empty() {
                "with live results".to_string()
            } else {
                format!("after cursor {cursor}")
            };
            eprintln!(
                "recur: stream interrupted ({}: {}); resuming {from} in {}",
                errors::code_words(status.code()),
                status.message(),
                duration::short(delay)
            );
            tokio::select! {
                _ = &mut ctrl_c => return Ok(exit::SUCCESS),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One StreamResults call: prints every result and moves `cursor` past
    /// it; a result resets the failure count the backoff grows with.
    async fn follow(
        &self,
        client: &mut Client,
        cursor: &mut String,
        failures: &mut u32,
    ) -> Result<End, CliError> {
        let request = pb::StreamResultsRequest {
            task_ids: self.ids.clone(),
            after_cursor: cursor.clone(),
            history_only: self.history,
        };
        let mut stream = match client.stream_results(request).await {
            Ok(response) => {
                // Until a result is printed, the stream's own start is the
                // resume point: a stream lost before its first result then
                // resumes without a gap instead of with live results only.
                if cursor.is_empty()
                    && let Some(start) = response.metadata().get(START_CURSOR_HEADER)
                    && let Ok(start) = start.to_str()
                {
                    *cursor = start.to_string();
                }
                response.into_inner()
            }
            Err(status) => return Ok(End::Failed(status)),
        };
        loop {
            match stream.message().await {
                Ok(Some(result)) => {
                    self.print(&result)?;
                    if !result.cursor.is_empty() {
                        cursor.clone_from(&result.cursor);
                    }
                    *failures = 0;
                }
                Ok(None) => return Ok(End::Finished),
                Err(status) => return Ok(End::Failed(status)),
            }
        }
    }

    /// Prints one result in the chosen format.
    fn print(&self, result: &pb::TaskResult) -> Result<(), CliError> {
        match self.output {
            WatchFormat::Text => output::write_or_closed(&format!("{}\n", line(result))),
            WatchFormat::Json => output::json_line(&proto_json::reflect("TaskResult", result)?),
        }
    }
}

/// Whether a stream that ended with `status` should be reopened: the
/// server going away or shedding readers, or the connection breaking
/// (which tonic reports as UNAVAILABLE, UNKNOWN, CANCELLED or a transport
/// INTERNAL). DATA_LOSS, NOT_FOUND and refusals are for the user.
fn resumable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::Unknown | Code::Cancelled => true,
        Code::Internal => {
            let message = status.message().to_ascii_lowercase();
            ["h2", "connection", "transport", "stream", "body", "reset"]
                .iter()
                .any(|hint| message.contains(hint))
        }
        _ => false,
    }
}

/// How long to wait before reconnecting: the server's RetryInfo if it
/// sent one, else a doubling backoff; both capped.
fn delay(status: &tonic::Status, failures: u32) -> Duration {
    let told = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    let delay = told.unwrap_or_else(|| INITIAL_BACKOFF.saturating_mul(1 << failures.min(10)));
    delay.min(MAX_BACKOFF)
}

/// `2026-12-02T03:04:05.123Z fetch-prices #12 SUCCEEDED 1 attempt HTTP 200
/// 83ms late 2ms`, with the error after a colon, `manual` for triggered
/// runs and `skipped N slots` for a catch-up decision.
fn line(r: &pb::TaskResult) -> String {
    let mut text = format!(
        "{} {} #{}",
        output::absolute_millis(r.finished_at.as_ref()),
        r.task_id,
        r.run
    );
    if r.trigger == pb::Trigger::Manual as i32 {
        text.push_str(" manual");
    }
    let _ = write!(text, " {}", output::outcome(r.outcome));
    if r.skipped_slots > 0 {
        let _ = write!(text, " skipped {} slots", r.skipped_slots);
    }
    if r.attempts > 0 {
        let plural = if r.attempts == 1 { "" } else { "s" };
        let _ = write!(text, " {} attempt{plural}", r.attempts);
    }
    if r.http_status != 0 {
        let _ = write!(text, " HTTP {}", r.http_status);
    }
    if let Some(latency) = &r.latency {
        let _ = write!(text, " {}", duration::short(duration::from_proto(latency)));
    }
    if let (Some(started), Some(scheduled)) = (
        output::time(r.started_at.as_ref()),
        output::time(r.scheduled_at.as_ref()),
    ) {
        let late = (started - scheduled).to_std().unwrap_or_default();
        let _ = write!(text, " late {}", duration::short(late));
    }
    if r.claim_lapsed {
        text.push_str(" (late report: the claim had lapsed)");
    }
    if !r.error.is_empty() {
        let _ = write!(text, ": {}", r.error);
    }
    text
}
