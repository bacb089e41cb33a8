//! Runs the client walkthrough against a running `recur serve`:
//!
//! ```text
//! cargo run --example client -- [--server ADDR] [--token TOKEN] [--ca FILE]
//!     [--cert FILE --key FILE] [--target URL] [SERVER] [TARGET_URL]
//! ```
//!
//! The server defaults to `http://127.0.0.1:50051` (a bare `host:port` is
//! plaintext, `https://` means TLS); the task GETs `http://127.0.0.1:8080/`
//! unless told otherwise. Every connection option also comes from its
//! environment variable (`RECUR_SERVER`, `RECUR_TOKEN`, `RECUR_CA`,
//! `RECUR_CERT`, `RECUR_KEY`); `--help` lists them.

#[path = "options.rs"]
mod options;
#[path = "walkthrough.rs"]
mod walkthrough;

use std::process::ExitCode;

use options::Parsed;

#[tokio::main]
async fn main() -> ExitCode {
    // args_os: a non-UTF-8 argument is a usage error here, not a panic.
    let args = match std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("client: argument {arg:?} is not valid UTF-8");
            return ExitCode::from(2);
        }
    };
    let options = match options::parse(args, |name| std::env::var(name)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            print!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("client: {e}\n\n{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    let server = options.connection.server().to_string();

    let client = match options.connection.connect().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = match walkthrough::walkthrough(client, options.target).await {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!(
                "walkthrough against {server} failed: {}",
                recur::client::causes(&*e)
            );
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
