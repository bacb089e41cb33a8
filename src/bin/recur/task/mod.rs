//! `recur task ...`: the operator's command line over the public API.

use std::process::ExitCode;

use clap::Args;

/// `recur task` and its global connection flags.
#[derive(Args)]
pub struct TaskArgs {}

/// Runs one `recur task` subcommand.
pub async fn run(_args: TaskArgs) -> ExitCode {
    ExitCode::SUCCESS
}
