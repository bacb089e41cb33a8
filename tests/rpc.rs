//! Every RPC through the generated client against a real server.

mod common;

use std::time::Duration;

use common::*;
use recur::pb::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn register_get_and_idempotent_retry() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    let task = register(&mut client, "report", spec.clone()).await;
    assert_eq!(task.task_id, "report");
    assert_eq!(state(&task), pb::TaskState::Active);
    assert!(task.next_run_at.is_some());

    // Same id and same spec: the same task back, not a second one.
    let again = register(&mut client, "report", spec.clone()).await;
    assert_eq!(again.created_at, task.created_at);

    // Same id, other spec: ALREADY_EXISTS.
    let other = spec_every(Duration::from_secs(60), http_get("http://127.0.0.1:9/x"));
    let err = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "report".into(),
            spec: Some(other),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let got = client
        .get_task(pb::GetTaskRequest {
            task_id: "report".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.task_id, "report");
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
