//! The Rust client example (`client-examples/rust/walkthrough.rs`) run
//! against a real server and a local HTTP target: what it shows users must
//! actually happen.

mod common;

#[path = "../client-examples/rust/walkthrough.rs"]
mod walkthrough;

use common::*;
use recur::pb::v1 as pb;

#[tokio::test]
async fn rust_walkthrough_runs_every_step() {
    let server = TestServer::start().await;
    let target = http_target::HttpTarget::start().await;

    let summary = tokio::time::timeout(
        WAIT * 3,
        walkthrough::walkthrough(format!("http://{}", server.addr), target.url("/hook")),
    )
    .await
    .expect("walkthrough did not finish within the wait bound")
    .expect("walkthrough failed");

    assert!(!summary.task_id.is_empty(), "server generated an id");
    assert_eq!(summary.registered_state, pb::TaskState::Active);
    assert_eq!(summary.paused_state, pb::TaskState::Paused);
    assert_eq!(summary.pause_reason, "walkthrough");
    assert_eq!(summary.resumed_state, pb::TaskState::Active);
    assert!(summary.triggered_run >= 1);

    let run = &summary.triggered_result;
    assert_eq!(run.task_id, summary.task_id);
    assert_eq!(run.run, summary.triggered_run);
    assert_eq!(run.trigger(), pb::Trigger::Manual);
    assert_eq!(
        run.outcome(),
        pb::Outcome::Succeeded,
        "error: {}",
        run.error
    );
    assert_eq!(run.http_status, 200);
    assert_eq!(run.output, &b"ok"[..]);
    assert!(!run.cursor.is_empty());

    assert_eq!(summary.cancelled_state, pb::TaskState::Cancelled);
    assert_eq!(summary.final_state, pb::TaskState::Cancelled);

    // The target really was called, carrying the run's occurrence id.
    let request = target
        .received()
        .into_iter()
        .find(|r| {
            r.headers
                .get("idempotency-key")
                .is_some_and(|v| v.as_bytes() == run.occurrence_id.as_bytes())
        })
        .expect("the triggered run's request reached the target");
    assert_eq!(request.method, axum::http::Method::GET);
    assert_eq!(request.path, "/hook");

    // What a user would check next: the server still lists the task as
    // cancelled, with the walkthrough's reason.
    let mut client = server.client.clone();
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: summary.task_id.clone(),
        })
        .await
        .expect("get_task")
        .into_inner();
    assert_eq!(state(&task), pb::TaskState::Cancelled);
    assert_eq!(task.pause_reason, "walkthrough done");
    assert!(task.next_run_at.is_none());
}

#[tokio::test]
async fn rust_walkthrough_reports_an_unreachable_server() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let result = tokio::time::timeout(
        WAIT,
        walkthrough::walkthrough(
            format!("http://127.0.0.1:{port}"),
            "http://127.0.0.1:9/".into(),
        ),
    )
    .await
    .expect("walkthrough did not give up within the wait bound");
    assert!(result.is_err(), "connecting to a closed port must fail");
}
