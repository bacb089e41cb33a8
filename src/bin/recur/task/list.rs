//! `recur task list`: every task (all ListTasks pages), filtered by state
//! and label selector, as an aligned table or the JSON mapping.

use std::collections::HashMap;

use chrono::Utc;
use clap::{Args, ValueEnum};
use recur::{client::Client, pb::v1 as pb};

use super::{
    errors::{CliError, exit},
    output, proto_json, selector,
    table::Table,
};

/// `list --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  recur task list
  recur task list --state paused -o wide
  recur task list --selector team=pricing,env=prod -o json";

/// How the list is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    /// ID, state, schedule, next run, last outcome and counts.
    Table,
    /// The table plus labels, consecutive failures, last success, created.
    Wide,
    /// `{"tasks": [...]}` in the proto3 JSON mapping.
    Json,
    /// The same as YAML.
    Yaml,
}

/// A state to filter by (TaskState without its prefix).
#[derive(Clone, Copy, ValueEnum)]
enum StateFilter {
    /// Running on its schedule.
    Active,
    /// Paused.
    Paused,
    /// Cancelled (terminal).
    Cancelled,
    /// Reached end_at or max_runs (terminal).
    Completed,
}

impl From<StateFilter> for pb::TaskState {
    fn from(state: StateFilter) -> pb::TaskState {
        match state {
            StateFilter::Active => pb::TaskState::Active,
            StateFilter::Paused => pb::TaskState::Paused,
            StateFilter::Cancelled => pb::TaskState::Cancelled,
            StateFilter::Completed => pb::TaskState::Completed,
        }
    }
}

/// `recur task list`.
#[derive(Args)]
pub struct ListArgs {
    /// Only tasks in this state.
    #[arg(long, value_enum, ignore_case = true)]
    state: Option<StateFilter>,
    /// Only tasks with all these labels, key=value,key=value. Only label
    /// equality is supported (no !=, in, or bare keys).
    #[arg(long, short = 'l', value_name = "KEY=VALUE,...", value_parser = selector::selector)]
    selector: Option<HashMap<String, String>>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    output: ListFormat,
}

impl ListArgs {
    /// Lists and prints. An empty table prints `No tasks.` to stderr and
    /// nothing to stdout; JSON and YAML print an empty list.
    pub async fn run(self, client: &mut Client) -> Result<u8, CliError> {
        let state = self.state.map_or(pb::TaskState::Unspecified, Into::into);
        let tasks = all(client, state, self.selector.unwrap_or_default()).await?;
        match self.output {
            ListFormat::Json | ListFormat::Yaml => {
                // The empty list still shows as `tasks: []` (the mapping
                // would leave the empty field out): a program needs the key.
                let empty = serde_json::json!({"tasks": []});
                let list = pb::ListTasksResponse {
                    tasks,
                    next_page_token: String::new(),
                };
                let reflected = proto_json::reflect("ListTasksResponse", &list)?;
                match (self.output, list.tasks.is_empty()) {
                    (ListFormat::Json, true) => output::print_json(&empty)?,
                    (ListFormat::Json, false) => output::print_json(&reflected)?,
                    (_, true) => output::print_yaml(&empty)?,
                    (_, false) => output::print_yaml(&reflected)?,
                }
            }
            ListFormat::Table | ListFormat::Wide if tasks.is_empty() => eprintln!("No tasks."),
            ListFormat::Table | ListFormat::Wide => {
                output::write_stdout(&render(&tasks, self.output == ListFormat::Wide))?;
            }
        }
        Ok(exit::SUCCESS)
    }
}

/// Every task matching the filters, page after page.
pub async fn all(
    client: &mut Client,
    state: pb::TaskState,
    labels: HashMap<String, String>,
) -> Result<Vec<pb::Task>, tonic::Status> {
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_size: 0,
                page_token,
                state: state as i32,
                labels: labels.clone(),
                next_run_count: 0,
            })
            .await?
            .into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Ok(tasks);
        }
        page_token = page.next_page_token;
    }
}

/// The table, `wide` with four more columns.
fn render(tasks: &[pb::Task], wide: bool) -> String {
    let now = Utc::now();
    let mut header = vec![
        "ID", "STATE", "SCHEDULE", "NEXT RUN", "LAST", "RUNS", "SKIPS", "FAILS",
    ];
    if wide {
        header.extend(["CONSEC", "LAST SUCCESS", "CREATED", "LABELS"]);
    }
    let mut table = Table::new(&header);
    for task in tasks {
        let last = task
            .last_result
            .as_ref()
            .map_or_else(|| "-".to_string(), |r| output::outcome(r.outcome));
        let mut row = vec![
            task.task_id.clone(),
            output::state(task.state),
            task.schedule_description.clone(),
            output::relative(task.next_run_at.as_ref(), now),
            last,
            task.run_count.to_string(),
            task.skipped_count.to_string(),
            task.failure_count.to_string(),
        ];
        if wide {
            let labels = task.spec.as_ref().map(|s| output::labels(&s.labels));
            row.extend([
                task.consecutive_failures.to_string(),
                output::relative(task.last_success_at.as_ref(), now),
                output::absolute(task.created_at.as_ref()),
                labels.unwrap_or_else(|| "-".into()),
            ]);
        }
        table.row(row);
    }
    table.render()
}
