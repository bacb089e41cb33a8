//! A tour of `recur.v1.TaskService` through the generated Rust client:
//! register a task, read it, pause, resume, trigger a run, receive that
//! run's result on a stream, and cancel the task.
//!
//! Written as a library file so the example binary (`main.rs`) and the
//! integration test (`tests/client_examples.rs`) run the same code;
//! [`recur::client`] makes the client: plaintext, TLS or mTLS, with or
//! without a token.

use std::time::Duration;

use recur::pb::v1 as pb;

use recur::client::Client;

/// How often the example task runs on its own.
const INTERVAL: Duration = Duration::from_secs(5);

/// Bound on waiting for the triggered run's result on the stream; a run's
/// own timeout defaults to 30 s, so this leaves room for one full attempt.
const RESULT_WAIT: Duration = Duration::from_secs(45);

/// Error type of the walkthrough: any failing step, with its name.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the walkthrough saw, step by step.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Id the server generated for the task.
    pub task_id: String,
    /// State right after RegisterTask (ACTIVE).
    pub registered_state: pb::TaskState,
    /// State returned by PauseTask (PAUSED).
    pub paused_state: pb::TaskState,
    /// Reason kept on the task while paused.
    pub pause_reason: String,
    /// State returned by ResumeTask (ACTIVE).
    pub resumed_state: pb::TaskState,
    /// Run number TriggerTask returned.
    pub triggered_run: u64,
    /// The triggered run's result, as received on the stream.
    pub triggered_result: pb::TaskResult,
    /// State returned by CancelTask (CANCELLED).
    pub cancelled_state: pb::TaskState,
    /// State read back with GetTask after the cancel (CANCELLED).
    pub final_state: pb::TaskState,
}

/// Runs the tour with `client` (from [`recur::client::Connection`]), with
/// a task that GETs `target_url`.
pub async fn walkthrough(mut client: Client, target_url: String) -> Result<Summary, BoxError> {
    // Register. An empty task_id lets the server pick one; the request_id
    // makes a retry of this very call return the same task, not a second one.
    let spec = pb::TaskSpec {
        schedule: Some(pb::Schedule {
            cadence: Some(pb::schedule::Cadence::Every(prost_types::Duration {
                seconds: INTERVAL.as_secs() as i64,
                nanos: 0,
            })),
            ..Default::default()
        }),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Http(pb::HttpAction {
                method: "GET".into(),
                url: target_url,
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let task = client
        .register_task(pb::RegisterTaskRequest {
            task_id: String::new(),
            spec: Some(spec),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let task_id = task.task_id.clone();
    let registered_state = task.state();

    // Read it back.
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: task_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    if task.task_id != task_id {
        return Err(format!("GetTask returned {:?}, asked for {task_id:?}", task.task_id).into());
    }

    // Pause, then resume from the next future slot.
    let paused = client
        .pause_task(pb::PauseTaskRequest {
            task_id: task_id.clone(),
            reason: "walkthrough".into(),
        })
        .await?
        .into_inner();
    let resumed = client
        .resume_task(pb::ResumeTaskRequest {
            task_id: task_id.clone(),
        })
        .await?
        .into_inner();

    // Open the live stream before triggering: once StreamResults has
    // answered, every later result of the task reaches this stream.
    let mut results = client
        .stream_results(pb::StreamResultsRequest {
            task_ids: vec![task_id.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let triggered_run = client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: task_id.clone(),
        })
        .await?
        .into_inner()
        .run;

    // Scheduled runs may finish first; skip them until ours arrives.
    let triggered_result = tokio::time::timeout(RESULT_WAIT, async {
        loop {
            match results.message().await? {
                Some(result) if result.run == triggered_run => return Ok(result),
                Some(_) => continue,
                None => {
                    return Err(BoxError::from(format!(
                        "stream ended before run {triggered_run} reported"
                    )));
                }
            }
        }
    })
    .await
    .map_err(|_| format!("no result for run {triggered_run} within {RESULT_WAIT:?}"))??;
    drop(results);

    // Cancel for good, then read the task once more.
    let cancelled = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: task_id.clone(),
            reason: "walkthrough done".into(),
        })
        .await?
        .into_inner();
    let last = client
        .get_task(pb::GetTaskRequest {
            task_id: task_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();

    Ok(Summary {
        task_id,
        registered_state,
        paused_state: paused.state(),
        pause_reason: paused.pause_reason,
        resumed_state: resumed.state(),
        triggered_run,
        triggered_result,
        cancelled_state: cancelled.state(),
        final_state: last.state(),
    })
}
