//! `pause`, `resume`, `trigger`, `cancel` and `delete` on one or more
//! tasks: one line per task, going on past a failure (reported on stderr
//! as it happens), exiting with the worst failure's code.

use clap::Args;
use recur::{client::Client, pb::v1 as pb};

use super::{
    errors::{self, CliError, exit},
    output,
};

/// `pause --help` examples.
pub const PAUSE_EXAMPLES: &str = "\
Examples:
  recur task pause fetch-prices --reason 'supplier maintenance'
  recur task pause fetch-prices fetch-rates";
/// `resume --help` examples.
pub const RESUME_EXAMPLES: &str = "\
Example:
  recur task resume fetch-prices fetch-rates";
/// `trigger --help` examples.
pub const TRIGGER_EXAMPLES: &str = "\
Example:
  recur task trigger fetch-prices";
/// `cancel --help` examples.
pub const CANCEL_EXAMPLES: &str = "\
Example:
  recur task cancel fetch-prices --reason 'replaced by fetch-prices-v2'";
/// `delete --help` examples.
pub const DELETE_EXAMPLES: &str = "\
Examples:
  recur task delete fetch-prices
  recur task delete --cancel fetch-prices fetch-rates";

/// Task ids for a command without options.
#[derive(Args)]
pub struct IdsArgs {
    /// The tasks.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

/// Task ids and a reason kept on the task.
#[derive(Args)]
pub struct ReasonArgs {
    /// The tasks.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    /// Why; kept on the task (shown by get) while paused or once cancelled.
    #[arg(long)]
    reason: Option<String>,
}

/// `delete`'s ids and whether to cancel live tasks first.
#[derive(Args)]
pub struct DeleteArgs {
    /// The tasks.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    /// Cancel each task first if it is live (ACTIVE or PAUSED); without
    /// it, deleting a live task is refused.
    #[arg(long)]
    cancel: bool,
}

/// Runs `one` on every id, printing its line or reporting its error, and
/// returns the exit code.
async fn each<F>(ids: Vec<String>, mut one: F) -> u8
where
    F: AsyncFnMut(&str) -> Result<String, CliError>,
{
    let mut code = exit::SUCCESS;
    for id in ids {
        let result = match one(&id).await {
            Ok(line) => output::line(&line),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            error.report();
            code = errors::worst(code, error.exit_code());
        }
    }
    code
}

/// `recur task pause`.
pub async fn pause(client: &mut Client, args: ReasonArgs) -> u8 {
    let reason = args.reason.unwrap_or_default();
    each(args.ids, async |id| {
        client
            .pause_task(pb::PauseTaskRequest {
                task_id: id.to_string(),
                reason: reason.clone(),
            })
            .await?;
        Ok(format!("paused {id}"))
    })
    .await
}

/// `recur task resume`.
pub async fn resume(client: &mut Client, args: IdsArgs) -> u8 {
    each(args.ids, async |id| {
        client
            .resume_task(pb::ResumeTaskRequest {
                task_id: id.to_string(),
            })
            .await?;
        Ok(format!("resumed {id}"))
    })
    .await
}

/// `recur task trigger`: prints the run number each trigger got.
pub async fn trigger(client: &mut Client, args: IdsArgs) -> u8 {
    each(args.ids, async |id| {
        let run = client
            .trigger_task(pb::TriggerTaskRequest {
                task_id: id.to_string(),
            })
            .await?
            .into_inner()
            .run;
        Ok(format!("triggered {id} run #{run}"))
    })
    .await
}

/// `recur task cancel`.
pub async fn cancel(client: &mut Client, args: ReasonArgs) -> u8 {
    let reason = args.reason.unwrap_or_default();
    each(args.ids, async |id| {
        cancel_one(client, id, &reason).await?;
        Ok(format!("cancelled {id}"))
    })
    .await
}

/// `recur task delete`, with `--cancel` cancelling live tasks first.
pub async fn delete(client: &mut Client, args: DeleteArgs) -> u8 {
    let cancel_first = args.cancel;
    each(args.ids, async |id| {
        if cancel_first && is_live(client, id).await? {
            cancel_one(client, id, "").await?;
            // Shown at once: it happened even if the delete then fails.
            output::line(&format!("cancelled {id}"))?;
        }
        delete_one(client, id).await?;
        Ok(format!("deleted {id}"))
    })
    .await
}

/// Whether the task is ACTIVE or PAUSED (so it must be cancelled before
/// it can be deleted).
pub async fn is_live(client: &mut Client, id: &str) -> Result<bool, CliError> {
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: id.to_string(),
            next_run_count: 0,
        })
        .await?
        .into_inner();
    Ok(is_live_state(task.state))
}

/// ACTIVE or PAUSED.
pub fn is_live_state(state: i32) -> bool {
    matches!(
        pb::TaskState::try_from(state),
        Ok(pb::TaskState::Active | pb::TaskState::Paused)
    )
}

/// CancelTask.
pub async fn cancel_one(client: &mut Client, id: &str, reason: &str) -> Result<(), CliError> {
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: id.to_string(),
            reason: reason.to_string(),
        })
        .await?;
    Ok(())
}

/// How long a delete right after a cancel waits for the task's runs to
/// end: a cancelled run stops at once, but its result (which ends the
/// task) is recorded a moment later, and until then the server refuses
/// the delete (FAILED_PRECONDITION).
const ENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// DeleteTask. A task that is cancelled or completed but still ending
/// (its last run's result not recorded yet) is retried, with a growing
/// pause, for up to [`ENDING_WAIT`]; a live one is refused at once.
pub async fn delete_one(client: &mut Client, id: &str) -> Result<(), CliError> {
    let started = tokio::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        let deleted = client
            .delete_task(pb::DeleteTaskRequest {
                task_id: id.to_string(),
            })
            .await;
        let status = match deleted {
            Ok(_) => return Ok(()),
            Err(status) => status,
        };
        let ending = status.code() == tonic::Code::FailedPrecondition
            && started.elapsed() < ENDING_WAIT
            && !is_live(client, id).await?;
        if !ending {
            return Err(status.into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}
