//! `recur task get ID`: one task, in detail for people or in the JSON
//! mapping for programs. Also how `register` prints the task it made.

use std::fmt::Write as _;

use chrono::Utc;
use clap::{Args, ValueEnum};
use recur::{client::Client, pb::v1 as pb};

use super::{
    errors::{CliError, exit},
    output, proto_json,
};

/// `get --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  recur task get fetch-prices
  recur task get fetch-prices --next 10
  recur task get fetch-prices -o yaml";

/// How one task is printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum DetailFormat {
    /// Labelled lines for people.
    Human,
    /// The Task in the proto3 JSON mapping.
    Json,
    /// The same as YAML.
    Yaml,
}

/// `recur task get`.
#[derive(Args)]
pub struct GetArgs {
    /// The task to show.
    id: String,
    /// How many upcoming fire times to show (at most 10).
    #[arg(long, default_value_t = 3, value_name = "N")]
    next: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DetailFormat::Human)]
    output: DetailFormat,
}

impl GetArgs {
    /// Reads the task and prints it.
    pub async fn run(self, client: &mut Client) -> Result<u8, CliError> {
        let task = client
            .get_task(pb::GetTaskRequest {
                task_id: self.id,
                next_run_count: self.next,
            })
            .await?
            .into_inner();
        print(&task, self.output)?;
        Ok(exit::SUCCESS)
    }
}

/// Prints a task in `format`.
pub fn print(task: &pb::Task, format: DetailFormat) -> Result<(), CliError> {
    match format {
        DetailFormat::Human => output::write_stdout(&detail(task)?),
        DetailFormat::Json => output::print_json(&proto_json::reflect("Task", task)?),
        DetailFormat::Yaml => output::print_yaml(&proto_json::reflect("Task", task)?),
    }
}

/// The human-readable view: one labelled line per fact, then recent runs
/// and the spec as YAML (as the server returns it: header values redacted).
fn detail(task: &pb::Task) -> Result<String, CliError> {
    let now = Utc::now();
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{:<22}{value}", format!("{name}:"));
    };
    field("ID", task.task_id.clone());
    let state = output::state(task.state);
    field(
        "State",
        match task.pause_reason.as_str() {
            "" => state,
            reason => format!("{state} ({reason})"),
        },
    );
    field("Schedule", task.schedule_description.clone());
    field(
        "Next run",
        output::absolute_and_relative(task.next_run_at.as_ref(), now),
    );
    if !task.next_run_times.is_empty() {
        let times: Vec<String> = task
            .next_run_times
            .iter()
            .map(|t| output::absolute(Some(t)))
            .collect();
        field("Next fire times", times.join(", "));
    }
    field(
        "Created",
        output::absolute_and_relative(task.created_at.as_ref(), now),
    );
    field(
        "Updated",
        output::absolute_and_relative(task.updated_at.as_ref(), now),
    );
    field(
        "Runs",
        format!(
            "{} ({} scheduled), {} skipped, {} failed",
            task.run_count, task.scheduled_run_count, task.skipped_count, task.failure_count
        ),
    );
    field(
        "Consecutive failures",
        task.consecutive_failures.to_string(),
    );
    field(
        "Last success",
        output::absolute_and_relative(task.last_success_at.as_ref(), now),
    );
    match &task.last_result {
        None => field("Last result", "-".into()),
        Some(result) => {
            let mut text = format!(
                "{} run #{} at {}",
                output::outcome(result.outcome),
                result.run,
                output::absolute_and_relative(result.finished_at.as_ref(), now)
            );
            if result.http_status != 0 {
                let _ = write!(text, ", HTTP {}", result.http_status);
            }
            field("Last result", text);
            if !result.error.is_empty() {
                field("Last error", result.error.clone());
            }
        }
    }
    if !task.recent_runs.is_empty() {
        let _ = writeln!(out, "Recent runs:");
        for run in &task.recent_runs {
            let _ = writeln!(
                out,
                "  #{:<6} {:<10} {:<10} scheduled {}  finished {}",
                run.run,
                output::outcome(run.outcome),
                output::trigger(run.trigger),
                output::absolute(run.scheduled_at.as_ref()),
                output::absolute(run.finished_at.as_ref()),
            );
        }
    }
    if let Some(spec) = &task.spec {
        let _ = writeln!(out, "Spec:");
        let yaml = output::yaml(&proto_json::reflect("TaskSpec", spec)?)?;
        for line in yaml.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(out)
}
