//! Every RPC through the generated client against a real server.

mod common;

use std::time::Duration;

use common::{http_target::HttpTarget, *};
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
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let got = client
        .get_task(pb::GetTaskRequest {
            task_id: "report".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.task_id, "report");
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn generated_ids_and_request_id_retry() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    let req = pb::RegisterTaskRequest {
        task_id: String::new(),
        spec: Some(spec.clone()),
        request_id: "req-1".into(),
        ..Default::default()
    };
    let first = client
        .register_task(req.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = client.register_task(req).await.unwrap().into_inner();
    assert!(!first.task_id.is_empty());
    assert_eq!(
        first.task_id, retry.task_id,
        "a retry with the same request_id returns the same task"
    );
    let other = client
        .register_task(pb::RegisterTaskRequest {
            task_id: String::new(),
            spec: Some(spec),
            request_id: "req-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.task_id, first.task_id);
    let all = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.tasks.len(), 2);
}

async fn invalid(
    client: &mut recur::pb::v1::task_service_client::TaskServiceClient<tonic::transport::Channel>,
    spec: Option<pb::TaskSpec>,
    id: &str,
) -> tonic::Status {
    client
        .register_task(pb::RegisterTaskRequest {
            task_id: id.into(),
            spec,
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("registration should be refused")
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ok = spec_every(Duration::from_secs(10), http_get("http://127.0.0.1:9/x"));
    let mut cases: Vec<(&str, Option<pb::TaskSpec>, &str, Code)> = Vec::new();
    cases.push(("missing spec", None, "spec", Code::InvalidArgument));
    let mut s = ok.clone();
    s.schedule = None;
    cases.push((
        "missing schedule",
        Some(s),
        "spec.schedule",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.action = None;
    cases.push((
        "missing action",
        Some(s),
        "spec.action",
        Code::InvalidArgument,
    ));
    cases.push((
        "zero interval",
        Some(spec_every(Duration::ZERO, http_get("http://127.0.0.1:9/x"))),
        "spec.schedule.every",
        Code::InvalidArgument,
    ));
    cases.push((
        "below minimum",
        Some(spec_every(
            Duration::from_millis(200),
            http_get("http://127.0.0.1:9/x"),
        )),
        "spec.schedule.every",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.schedule.as_mut().unwrap().cadence = Some(pb::schedule::Cadence::Cron("61 * * * *".into()));
    cases.push((
        "bad cron",
        Some(s),
        "spec.schedule.cron",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.schedule.as_mut().unwrap().cadence = Some(pb::schedule::Cadence::Cron("0 9 * * *".into()));
    s.schedule.as_mut().unwrap().time_zone = "Mars/Olympus".into();
    cases.push((
        "bad zone",
        Some(s),
        "spec.schedule.time_zone",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.schedule.as_mut().unwrap().start_at = Some(prost_types::Timestamp {
        seconds: 2_000_000_000,
        nanos: 0,
    });
    s.schedule.as_mut().unwrap().end_at = Some(prost_types::Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    });
    cases.push((
        "end before start",
        Some(s),
        "spec.schedule.end_at",
        Code::InvalidArgument,
    ));
    cases.push((
        "ftp url",
        Some(spec_every(
            Duration::from_secs(10),
            http_get("ftp://example.com/x"),
        )),
        "spec.action.http.url",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.retry = Some(pb::RetryPolicy {
        max_attempts: 5,
        initial_backoff: None,
        max_backoff: Some(prost_types::Duration {
            seconds: 7200,
            nanos: 0,
        }),
    });
    cases.push((
        "backoff over the cap",
        Some(s),
        "spec.retry.max_backoff",
        Code::InvalidArgument,
    ));
    cases.push((
        "not a url",
        Some(spec_every(Duration::from_secs(10), http_get("not a url"))),
        "spec.action.http.url",
        Code::InvalidArgument,
    ));
    let bad_method = pb::action::Kind::Http(pb::HttpAction {
        method: "TRACE".into(),
        url: "http://127.0.0.1:9/".into(),
        ..Default::default()
    });
    cases.push((
        "method",
        Some(spec_every(Duration::from_secs(10), bad_method)),
        "spec.action.http.method",
        Code::InvalidArgument,
    ));
    let empty_redis = pb::action::Kind::Redis(pb::RedisAction { args: vec![] });
    cases.push((
        "empty redis",
        Some(spec_every(Duration::from_secs(10), empty_redis)),
        "spec.action.redis.args",
        Code::InvalidArgument,
    ));
    let flush = pb::action::Kind::Redis(pb::RedisAction {
        args: vec!["FLUSHALL".into()],
    });
    cases.push((
        "refused redis",
        Some(spec_every(Duration::from_secs(10), flush)),
        "spec.action.redis.args",
        Code::InvalidArgument,
    ));
    let incr = pb::action::Kind::Redis(pb::RedisAction {
        args: vec!["INCR".into(), "hits".into()],
    });
    cases.push((
        "redis without redis",
        Some(spec_every(Duration::from_secs(10), incr)),
        "spec.action.redis",
        Code::FailedPrecondition,
    ));
    cases.push((
        "unknown kind",
        Some(spec_every(Duration::from_secs(10), custom("nope", b""))),
        "spec.action.custom.kind",
        Code::InvalidArgument,
    ));
    let mut s = ok.clone();
    s.labels.insert("k".repeat(64), "v".into());
    cases.push(("label key", Some(s), "spec.labels", Code::InvalidArgument));
    let mut s = ok.clone();
    s.catchup_window = Some(prost_types::Duration {
        seconds: -60,
        nanos: 0,
    });
    cases.push((
        "negative catch-up window",
        Some(s),
        "spec.catchup_window",
        Code::InvalidArgument,
    ));

    for (what, spec, field, code) in cases {
        let status = invalid(&mut client, spec, "bad").await;
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{what}: message {:?} should name {field}",
            status.message()
        );
    }
    let status = invalid(&mut client, Some(ok.clone()), "has space").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("task_id"));
    let status = invalid(&mut client, Some(ok), &"x".repeat(129)).await;
    assert!(status.message().starts_with("task_id"));

    // Nothing was half-registered.
    let all = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        all.tasks.is_empty(),
        "refused registrations left {:?}",
        all.tasks
    );
}

#[tokio::test]
async fn task_cap_is_resource_exhausted() {
    let mut config = test_config();
    config.max_tasks = 2;
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    register(&mut client, "a", spec.clone()).await;
    register(&mut client, "b", spec.clone()).await;
    let status = invalid(&mut client, Some(spec), "c").await;
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn pagination_is_stable_and_filters_apply() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    for i in 0..25 {
        let mut spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
        spec.labels
            .insert("team".into(), if i % 2 == 0 { "a" } else { "b" }.into());
        register(&mut client, &format!("task-{i:02}"), spec).await;
    }
    client
        .pause_task(pb::PauseTaskRequest {
            task_id: "task-03".into(),
            reason: "maintenance".into(),
        })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // A task inserted mid-listing before the cursor must not shift pages.
        if seen.is_empty() {
            register(
                &mut client,
                "task-00a",
                spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x")),
            )
            .await;
        }
        seen.extend(page.tasks.into_iter().map(|t| t.task_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("task-{i:02}")).collect();
    assert_eq!(seen, expected, "every task once, in id order");

    let paused = client
        .list_tasks(pb::ListTasksRequest {
            state: pb::TaskState::Paused as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.tasks.len(), 1);
    assert_eq!(paused.tasks[0].pause_reason, "maintenance");
    let team_a = client
        .list_tasks(pb::ListTasksRequest {
            labels: [("team".to_string(), "a".to_string())].into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(team_a.tasks.len(), 13);
    let bad = client
        .list_tasks(pb::ListTasksRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("page_token"));
}

#[tokio::test]
async fn lifecycle_pause_resume_cancel_delete_update() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    register(&mut client, "life", spec.clone()).await;

    let paused = client
        .pause_task(pb::PauseTaskRequest {
            task_id: "life".into(),
            reason: "why".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&paused), pb::TaskState::Paused);
    assert!(paused.next_run_at.is_none());
    // Idempotent.
    let again = client
        .pause_task(pb::PauseTaskRequest {
            task_id: "life".into(),
            reason: "why".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&again), pb::TaskState::Paused);

    let resumed = client
        .resume_task(pb::ResumeTaskRequest {
            task_id: "life".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&resumed), pb::TaskState::Active);
    assert!(resumed.next_run_at.is_some());
    client
        .resume_task(pb::ResumeTaskRequest {
            task_id: "life".into(),
        })
        .await
        .unwrap();

    // Update keeps identity and history, and follows the new schedule.
    let mut results = stream(&mut client, &["life"], "", false).await;
    let run = client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "life".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run;
    let first = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(first.run, run);
    let updated = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "life".into(),
            spec: Some(spec_every(
                Duration::from_secs(7200),
                http_get("http://127.0.0.1:9/y"),
            )),
            update_mask: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.created_at, resumed.created_at);
    assert_eq!(updated.run_count, 1, "run count kept");
    assert_eq!(
        updated.last_result.as_ref().map(|r| r.run),
        Some(run),
        "history kept"
    );
    let created = updated.created_at.unwrap();
    assert_eq!(
        updated.next_run_at,
        Some(prost_types::Timestamp {
            seconds: created.seconds + 7200,
            nanos: created.nanos
        }),
        "the next slot follows the new interval on the task's grid"
    );
    match updated.spec.unwrap().schedule.unwrap().cadence.unwrap() {
        pb::schedule::Cadence::Every(d) => assert_eq!(d.seconds, 7200),
        other => panic!("{other:?}"),
    }

    // A live task cannot be deleted.
    let err = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "life".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let cancelled = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "life".into(),
            reason: "done".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cancelled), pb::TaskState::Cancelled);
    for status in [
        client
            .pause_task(pb::PauseTaskRequest {
                task_id: "life".into(),
                reason: String::new(),
            })
            .await
            .unwrap_err(),
        client
            .resume_task(pb::ResumeTaskRequest {
                task_id: "life".into(),
            })
            .await
            .unwrap_err(),
        client
            .trigger_task(pb::TriggerTaskRequest {
                task_id: "life".into(),
            })
            .await
            .unwrap_err(),
        client
            .update_task(pb::UpdateTaskRequest {
                task_id: "life".into(),
                spec: Some(spec.clone()),
                update_mask: None,
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    // Still readable, also through a state filter.
    let listed = client
        .list_tasks(pb::ListTasksRequest {
            state: pb::TaskState::Cancelled as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 1);

    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "life".into(),
        })
        .await
        .unwrap();
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "life".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The id is free again.
    register(&mut client, "life", spec).await;
}

#[tokio::test]
async fn header_values_are_redacted_and_compared_on_the_server() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let action = |secret: &str| {
        pb::action::Kind::Http(pb::HttpAction {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            headers: [("Authorization".to_string(), format!("Bearer {secret}"))].into(),
            body: b"{}".to_vec(),
            secret_headers: Default::default(),
        })
    };
    let task = register(
        &mut client,
        "secret",
        spec_every(Duration::from_secs(3600), action("s3cr3t")),
    )
    .await;
    let shown = format!("{task:?}");
    assert!(!shown.contains("s3cr3t"), "secret leaked: {shown}");
    let Some(pb::action::Kind::Http(http)) = task.spec.unwrap().action.unwrap().kind else {
        panic!()
    };
    assert_eq!(
        http.headers.get("authorization").map(String::as_str),
        Some("<redacted>")
    );
    // The comparison for idempotent retry uses the real values.
    register(
        &mut client,
        "secret",
        spec_every(Duration::from_secs(3600), action("s3cr3t")),
    )
    .await;
    let err = invalid(
        &mut client,
        Some(spec_every(Duration::from_secs(3600), action("other"))),
        "secret",
    )
    .await;
    assert_eq!(err.code(), Code::AlreadyExists);
    let listed = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{listed:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let action = pb::action::Kind::Http(pb::HttpAction {
        method: "POST".into(),
        url: "http://127.0.0.1:9/".into(),
        body: vec![0u8; 2 * 1024 * 1024],
        ..Default::default()
    });
    let status = invalid(
        &mut client,
        Some(spec_every(Duration::from_secs(60), action)),
        "huge",
    )
    .await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The server is fine afterwards.
    client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_completed_task_keeps_its_id_until_its_last_run_reports() {
    let (gate, mut started) = common::handlers::Gate::new();
    let server = TestServer::start_with(test_config(), |s| s.handler("gate", gate.clone())).await;
    let mut client = server.client.clone();
    let mut spec = spec_every(Duration::from_secs(1), custom("gate", b""));
    spec.schedule.as_mut().unwrap().max_runs = 1;
    register(&mut client, "once", spec).await;
    // The first slot is a second away: the stream is open before the run ends.
    let mut results = stream(&mut client, &["once"], "", false).await;
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("run started");
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: "once".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&task), pb::TaskState::Completed);
    let err = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "once".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    gate.permits.add_permits(1);
    assert_eq!(
        outcome(&next_result(&mut results).await.unwrap().unwrap()),
        pb::Outcome::Succeeded
    );
    assert!(
        next_result(&mut results).await.unwrap().is_none(),
        "stream ends after the last run"
    );
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "once".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_id_retry_succeeds_even_at_the_task_cap() {
    let mut config = test_config();
    config.max_tasks = 1;
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();
    let req = pb::RegisterTaskRequest {
        task_id: String::new(),
        spec: Some(spec_every(
            Duration::from_secs(3600),
            http_get("http://127.0.0.1:9/"),
        )),
        request_id: "only-one".into(),
        ..Default::default()
    };
    let first = client
        .register_task(req.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = client.register_task(req).await.unwrap().into_inner();
    assert_eq!(first.task_id, retry.task_id);
}

// ---- UpdateTask with update_mask ------------------------------------

/// An HTTP POST to `url` carrying a secret Authorization header.
fn http_with_secret(url: &str, secret: &str) -> pb::action::Kind {
    pb::action::Kind::Http(pb::HttpAction {
        method: "POST".into(),
        url: url.into(),
        headers: [("Authorization".to_string(), format!("Bearer {secret}"))].into(),
        body: b"{}".to_vec(),
        secret_headers: Default::default(),
    })
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn get_task(
    client: &mut recur::pb::v1::task_service_client::TaskServiceClient<tonic::transport::Channel>,
    id: &str,
) -> pb::Task {
    client
        .get_task(pb::GetTaskRequest {
            task_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("get_task")
        .into_inner()
}

/// Triggers `id` and returns the Authorization header the target received.
async fn authorization_sent(
    client: &mut recur::pb::v1::task_service_client::TaskServiceClient<tonic::transport::Channel>,
    target: &HttpTarget,
    id: &str,
) -> String {
    client
        .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
        .await
        .expect("trigger");
    let received = target.next_request().await;
    received
        .headers
        .get("authorization")
        .expect("authorization header sent")
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn read_edit_schedule_write_back_with_a_mask_keeps_the_secret() {
    let target = HttpTarget::start().await;
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(
        Duration::from_secs(3600),
        http_with_secret(&target.url("/hook"), "s3cr3t"),
    );
    register(&mut client, "rmw", spec).await;

    // The client reads the task (header values come back redacted), edits
    // the schedule and writes the whole read-back spec with a mask.
    let mut read = get_task(&mut client, "rmw").await.spec.expect("spec");
    read.schedule.as_mut().unwrap().cadence = Some(pb::schedule::Cadence::Every(duration(
        Duration::from_secs(7200),
    )));
    let updated = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "rmw".into(),
            spec: Some(read),
            update_mask: mask(&["schedule.every"]),
            ..Default::default()
        })
        .await
        .expect("masked update")
        .into_inner();
    assert_eq!(common::every_secs(&updated), 7200, "the schedule changed");
    let created = updated.created_at.unwrap();
    assert_eq!(
        updated.next_run_at.map(|t| t.seconds),
        Some(created.seconds + 7200),
        "the next slot follows the new interval"
    );
    let shown = format!("{updated:?}");
    assert!(!shown.contains("s3cr3t"), "secret leaked: {shown}");

    // The stored header is still the real one: the target receives it.
    assert_eq!(
        authorization_sent(&mut client, &target, "rmw").await,
        "Bearer s3cr3t"
    );
}

#[tokio::test]
async fn the_catchup_window_reads_back_as_sent_and_a_mask_changes_only_it() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    let unset = register(&mut client, "default-catchup", spec.clone()).await;
    assert_eq!(
        unset.spec.unwrap().catchup_window,
        None,
        "unset reads back unset, not as a window"
    );

    let mut never = spec.clone();
    never.catchup_window = Some(duration(Duration::ZERO));
    let task = register(&mut client, "catchup", never).await;
    assert_eq!(
        task.spec.unwrap().catchup_window,
        Some(duration(Duration::ZERO))
    );
    let mut patch = spec_every(Duration::from_secs(60), http_get("http://127.0.0.1:9/y"));
    patch.catchup_window = Some(duration(Duration::from_secs(300)));
    let updated = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "catchup".into(),
            spec: Some(patch),
            update_mask: mask(&["catchup_window"]),
            ..Default::default()
        })
        .await
        .expect("masked update")
        .into_inner();
    assert_eq!(
        common::every_secs(&updated),
        3600,
        "the schedule outside the mask kept"
    );
    assert_eq!(
        updated.spec.unwrap().catchup_window,
        Some(duration(Duration::from_secs(300)))
    );
    let cleared = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "catchup".into(),
            spec: Some(pb::TaskSpec::default()),
            update_mask: mask(&["catchup_window"]),
            ..Default::default()
        })
        .await
        .expect("clearing update")
        .into_inner();
    assert_eq!(cleared.spec.unwrap().catchup_window, None);
}

#[tokio::test]
async fn a_message_path_replaces_the_whole_sub_message() {
    let target = HttpTarget::start().await;
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut spec = spec_every(
        Duration::from_secs(3600),
        http_with_secret(&target.url("/hook"), "s3cr3t"),
    );
    let schedule = spec.schedule.as_mut().unwrap();
    schedule.jitter = Some(duration(Duration::from_secs(10)));
    schedule.max_runs = 5;
    spec.labels.insert("team".into(), "ops".into());
    register(&mut client, "whole", spec).await;

    // `schedule` names a message: the new one replaces it, so the jitter and
    // max_runs not sent are gone; everything outside the mask is kept.
    let patch = spec_every(
        Duration::from_secs(7200),
        http_get("http://127.0.0.1:9/ignored"),
    );
    let updated = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "whole".into(),
            spec: Some(patch),
            update_mask: mask(&["schedule"]),
            ..Default::default()
        })
        .await
        .expect("masked update")
        .into_inner();
    assert_eq!(common::every_secs(&updated), 7200);
    let spec = updated.spec.clone().unwrap();
    let schedule = spec.schedule.unwrap();
    assert_eq!(schedule.jitter, None, "jitter not sent, so cleared");
    assert_eq!(schedule.max_runs, 0, "max_runs not sent, so cleared");
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("ops"));
    let Some(pb::action::Kind::Http(http)) = spec.action.unwrap().kind else {
        panic!("action kept")
    };
    assert_eq!(
        http.url,
        target.url("/hook"),
        "the action outside the mask is kept"
    );
    assert_eq!(
        authorization_sent(&mut client, &target, "whole").await,
        "Bearer s3cr3t"
    );

    // A map path replaces the whole map.
    let mut patch = pb::TaskSpec::default();
    patch.labels.insert("env".into(), "prod".into());
    let updated = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "whole".into(),
            spec: Some(patch),
            update_mask: mask(&["labels"]),
            ..Default::default()
        })
        .await
        .expect("labels update")
        .into_inner();
    let labels = updated.spec.unwrap().labels;
    assert_eq!(labels, [("env".to_string(), "prod".to_string())].into());
}

#[tokio::test]
async fn the_redaction_placeholder_is_refused_naming_the_header() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let placeholder = pb::action::Kind::Http(pb::HttpAction {
        method: "POST".into(),
        url: "http://127.0.0.1:9/hook".into(),
        headers: [("authorization".to_string(), "<redacted>".to_string())].into(),
        body: Vec::new(),
        secret_headers: Default::default(),
    });
    let field = r#"spec.action.http.headers["authorization"]"#;

    // RegisterTask.
    let status = invalid(
        &mut client,
        Some(spec_every(Duration::from_secs(3600), placeholder.clone())),
        "placeholder",
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(field), "{status:?}");

    // UpdateTask without a mask: a whole read-back spec carries the
    // placeholder, which used to be stored in place of the secret.
    register(
        &mut client,
        "rmw",
        spec_every(
            Duration::from_secs(3600),
            http_with_secret("http://127.0.0.1:9/hook", "s3cr3t"),
        ),
    )
    .await;
    let read = get_task(&mut client, "rmw").await;
    for update_mask in [
        None,
        mask(&[]),
        mask(&["action.http.headers"]),
        mask(&["*"]),
    ] {
        let status = client
            .update_task(pb::UpdateTaskRequest {
                task_id: "rmw".into(),
                spec: read.spec.clone(),
                update_mask: update_mask.clone(),
                ..Default::default()
            })
            .await
            .expect_err("placeholder refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{update_mask:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(field),
            "{update_mask:?}: {:?}",
            status.message()
        );
    }
    assert_eq!(
        get_task(&mut client, "rmw").await.updated_at,
        read.updated_at
    );
}

#[tokio::test]
async fn an_unknown_mask_path_is_refused_naming_its_index() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    let registered = register(&mut client, "masked", spec.clone()).await;
    let cases = [
        (vec!["schedule.evry"], "update_mask.paths[0]"),
        (
            vec!["schedule.every", "spec.labels"],
            "update_mask.paths[1]",
        ),
        (vec!["labels.team"], "update_mask.paths[0]"),
    ];
    for (paths, field) in cases {
        let status = client
            .update_task(pb::UpdateTaskRequest {
                task_id: "masked".into(),
                spec: Some(spec.clone()),
                update_mask: mask(&paths),
                ..Default::default()
            })
            .await
            .expect_err("unknown path refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{paths:?}: {status:?}"
        );
        assert!(
            status.message().starts_with(field),
            "{paths:?}: message {:?} should name {field}",
            status.message()
        );
    }
    // A bad mask is refused before the task is looked up.
    let status = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "nope".into(),
            spec: Some(spec),
            update_mask: mask(&["schedule.evry"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        get_task(&mut client, "masked").await.updated_at,
        registered.updated_at,
        "nothing changed"
    );
}

#[tokio::test]
async fn without_a_mask_the_whole_spec_is_replaced() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    spec.labels.insert("team".into(), "ops".into());
    spec.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        ..Default::default()
    });
    register(&mut client, "whole", spec).await;
    for (i, update_mask) in [None, mask(&[])].into_iter().enumerate() {
        let every = 7200 + i as u64;
        let updated = client
            .update_task(pb::UpdateTaskRequest {
                task_id: "whole".into(),
                spec: Some(spec_every(
                    Duration::from_secs(every),
                    http_get("http://127.0.0.1:9/y"),
                )),
                update_mask,
                ..Default::default()
            })
            .await
            .expect("whole update")
            .into_inner();
        assert_eq!(common::every_secs(&updated), every as i64);
        let spec = updated.spec.unwrap();
        assert!(spec.labels.is_empty(), "labels not sent, so gone");
        assert_eq!(spec.retry.unwrap().max_attempts, 1, "retry back to default");
    }
    // Without a mask the spec is still required.
    let status = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "whole".into(),
            spec: None,
            update_mask: mask(&["labels"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("spec"), "{status:?}");
}

#[tokio::test]
async fn deleting_a_live_task_says_to_cancel_it_first() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    register(&mut client, "live", spec.clone()).await;
    register(&mut client, "resting", spec).await;
    client
        .pause_task(pb::PauseTaskRequest {
            task_id: "resting".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    for (id, state) in [("live", "active"), ("resting", "paused")] {
        let err = client
            .delete_task(pb::DeleteTaskRequest { task_id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(state), "{id}: {}", err.message());
        assert!(
            err.message().contains("CancelTask"),
            "{id}: the message should name the way out: {}",
            err.message()
        );
    }
}
