//! `recur task apply -f FILE`: makes a file of tasks true on the server,
//! like `kubectl apply`. Plans first ([`super::plan`]), then carries the
//! plan out, one line per change; `--dry-run` prints the plan only. A
//! failure part-way (another writer raced us) stops and says what was
//! already applied.

use std::collections::HashMap;

use clap::Args;
use recur::client::Client;

use super::{
    control,
    errors::{CliError, exit},
    output,
    plan::{self, Change, Counts},
    selector,
    spec_file::{self, Entry},
};

/// `apply --help` examples.
pub const EXAMPLES: &str = "\
Examples:
  recur task apply -f tasks.yaml --dry-run
  recur task apply -f tasks.yaml
  recur task apply -f tasks.yaml --prune --selector team=pricing

The file: a top-level `tasks:` list, each entry {task_id, spec}, the spec a
TaskSpec in the proto3 JSON mapping (field names or their camelCase forms):

  tasks:
    - task_id: fetch-prices
      spec:
        schedule: {every: 60s}
        action: {http: {url: \"https://api.example.com/prices\"}}
        labels: {team: pricing}

Plan lines: `+ id` create, `~ id (changed paths)` update, `- id` delete;
unchanged tasks print nothing.";

/// `recur task apply`.
#[derive(Args)]
pub struct ApplyArgs {
    /// The tasks file (YAML or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    file: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete (cancelling first) the tasks under --selector that the
    /// file does not have.
    #[arg(long, requires = "selector")]
    prune: bool,
    /// The tasks --prune may delete: labels key=value,key=value (equality
    /// only).
    #[arg(long, short = 'l', value_name = "KEY=VALUE,...", value_parser = selector::selector, requires = "prune")]
    selector: Option<HashMap<String, String>>,
}

/// The file's name for messages and its entries, read before connecting.
pub struct Prepared {
    /// The path as given, or `stdin`.
    name: String,
    /// Its entries.
    entries: Vec<Entry>,
}

impl ApplyArgs {
    /// Reads and checks the file.
    pub fn read(&self) -> Result<Prepared, CliError> {
        let source = spec_file::read(&self.file)?;
        let entries = spec_file::tasks(&source)?;
        Ok(Prepared {
            name: source.name,
            entries,
        })
    }

    /// Plans, then prints the plan (--dry-run) or carries it out.
    pub async fn run(self, client: &mut Client, file: Prepared) -> Result<u8, CliError> {
        let prune = if self.prune {
            self.selector.as_ref()
        } else {
            None
        };
        let plan = plan::make(client, &file.name, file.entries, prune).await?;
        if self.dry_run {
            for change in &plan.changes {
                output::line(&change.line())?;
            }
            output::line(&format!(
                "{} (dry run: nothing was changed)",
                plan.summary()
            ))?;
            return Ok(exit::SUCCESS);
        }
        let mut done = Counts::default();
        for change in &plan.changes {
            if let Err(error) = execute(client, &file.name, change).await {
                error.report();
                eprintln!(
                    "recur: apply stopped at {}: {} before it; the rest of the plan was not applied",
                    change.line(),
                    done.describe(["created", "updated", "replaced", "deleted"]),
                );
                return Ok(error.exit_code());
            }
            output::line(&change.line())?;
            done.add(change);
        }
        output::line(&format!(
            "applied: {}, {} unchanged",
            done.describe(["created", "updated", "replaced", "deleted"]),
            plan.unchanged
        ))?;
        Ok(exit::SUCCESS)
    }
}

/// A server's refusal of `entry` of `file`, naming both.
fn about(file: &str, entry: &Entry, status: tonic::Status) -> CliError {
    CliError::about(format!("{file}: {}", entry.name()), status)
}

/// Carries out one change.
async fn execute(client: &mut Client, file: &str, change: &Change) -> Result<(), CliError> {
    match change {
        Change::Create { entry } => {
            plan::register(client, &entry.task_id, entry, false)
                .await
                .map_err(|s| about(file, entry, s))?;
        }
        Change::Update { entry, paths } => {
            plan::update(client, entry, paths, false)
                .await
                .map_err(|s| about(file, entry, s))?;
        }
        Change::Replace { entry, .. } => {
            control::delete_one(client, &entry.task_id).await?;
            plan::register(client, &entry.task_id, entry, false)
                .await
                .map_err(|s| about(file, entry, s))?;
        }
        Change::Delete { task_id, live } => {
            if *live {
                control::cancel_one(client, task_id, "pruned by recur task apply").await?;
            }
            control::delete_one(client, task_id).await?;
        }
    }
    Ok(())
}
