//! Runs the client walkthrough against a running `recur serve`:
//!
//! ```text
//! cargo run --example client -- [ENDPOINT] [TARGET_URL]
//! ```
//!
//! ENDPOINT defaults to `http://127.0.0.1:50051` (a bare `host:port` gets
//! `http://` prepended); TARGET_URL, the URL the task GETs, defaults to
//! `http://127.0.0.1:8080/`.

#[path = "walkthrough.rs"]
mod walkthrough;

use std::process::ExitCode;

/// Where `recur serve` listens by default.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";
/// A local web server the task calls; anything answering 2xx makes the
/// triggered run SUCCEEDED, anything else shows how a failure is reported.
const DEFAULT_TARGET: &str = "http://127.0.0.1:8080/";

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };
    let target = args.next().unwrap_or_else(|| DEFAULT_TARGET.into());

    let summary = match walkthrough::walkthrough(endpoint.clone(), target).await {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("walkthrough against {endpoint} failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = &summary.triggered_result;
    println!("task id:          {}", summary.task_id);
    println!("registered:       {:?}", summary.registered_state);
    println!(
        "paused:           {:?} (reason {:?})",
        summary.paused_state, summary.pause_reason
    );
    println!("resumed:          {:?}", summary.resumed_state);
    println!("triggered run:    {}", summary.triggered_run);
    println!(
        "its result:       run {} {:?} {:?} attempts={} http_status={} error={:?}",
        run.run,
        run.trigger(),
        run.outcome(),
        run.attempts,
        run.http_status,
        run.error
    );
    println!("cancelled:        {:?}", summary.cancelled_state);
    println!("read back:        {:?}", summary.final_state);
    ExitCode::SUCCESS
}
