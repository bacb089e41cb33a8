//! What the API gives programs (the CLI, the dashboard, generated clients):
//! dry runs, spec fingerprints, task health, next fire times, schedules in
//! words, WhoAmI, WatchTasks, the executor of a result, and error details
//! a program can act on.

mod common;

use std::time::Duration;

use common::{
    http_target::{Behaviour, HttpTarget},
    *,
};
use recur::pb::v1::{self as pb, task_service_client::TaskServiceClient};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

fn with_header(url: &str, value: &str) -> pb::TaskSpec {
    let mut spec = spec_every(Duration::from_secs(3600), http_get(url));
    if let Some(pb::action::Kind::Http(http)) = spec.action.as_mut().and_then(|a| a.kind.as_mut()) {
        http.headers.insert("authorization".into(), value.into());
    }
    spec.labels.insert("team".into(), "a".into());
    spec.labels.insert("tier".into(), "gold".into());
    spec
}

async fn dry_register(
    client: &mut TaskServiceClient<Channel>,
    id: &str,
    spec: pb::TaskSpec,
) -> Result<pb::Task, tonic::Status> {
    client
        .register_task(pb::RegisterTaskRequest {
            task_id: id.into(),
            spec: Some(spec),
            validate_only: true,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn validate_only_registers_nothing_and_fingerprints_match_the_stored_spec() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let spec = with_header("http://127.0.0.1:9/x", "Bearer one");

    let dry = dry_register(&mut client, "dry", spec.clone())
        .await
        .expect("dry run");
    assert_eq!(dry.task_id, "dry");
    assert_eq!(dry.schedule_description, "every 1h");
    assert_eq!(dry.spec_fingerprint.len(), 64, "{}", dry.spec_fingerprint);
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "dry".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing stored");
    assert_eq!(err.code(), Code::NotFound);

    let stored = register(&mut client, "dry", spec.clone()).await;
    assert_eq!(stored.spec_fingerprint, dry.spec_fingerprint);
    // Read back the header value is redacted; the fingerprint still tells
    // the two specs apart.
    assert_eq!(
        get(&mut client, "dry").await.spec_fingerprint,
        dry.spec_fingerprint
    );
    let other = dry_register(
        &mut client,
        "other",
        with_header("http://127.0.0.1:9/x", "Bearer two"),
    )
    .await
    .expect("dry run");
    assert_ne!(other.spec_fingerprint, dry.spec_fingerprint);

    // A dry run of the same registration answers like the real one: the
    // existing task; of another spec under the id, ALREADY_EXISTS.
    let again = dry_register(&mut client, "dry", spec)
        .await
        .expect("same spec");
    assert_eq!(again.created_at, stored.created_at);
    let taken = dry_register(
        &mut client,
        "dry",
        with_header("http://127.0.0.1:9/x", "Bearer two"),
    )
    .await
    .expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);

    // A dry run of an update shows the result and changes nothing.
    let preview = client
        .update_task(pb::UpdateTaskRequest {
            task_id: "dry".into(),
            spec: Some(pb::TaskSpec {
                schedule: Some(pb::Schedule {
                    cadence: Some(pb::schedule::Cadence::Every(duration(Duration::from_secs(
                        90,
                    )))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["schedule".into()],
            }),
            validate_only: true,
        })
        .await
        .expect("dry update")
        .into_inner();
    assert_eq!(preview.schedule_description, "every 1m30s");
    assert_ne!(preview.spec_fingerprint, stored.spec_fingerprint);
    let after = get(&mut client, "dry").await;
    assert_eq!(after.schedule_description, "every 1h");
    assert_eq!(after.spec_fingerprint, stored.spec_fingerprint);
}

#[tokio::test]
async fn health_counts_failures_and_keeps_the_last_runs() {
    let server = TestServer::start().await;
    let target = HttpTarget::start().await;
    let mut client = server.client.clone();
    target.set(
        "/flaky",
        Behaviour {
            status: Some(500),
            ..Default::default()
        },
    );
    let spec = spec_every(Duration::from_secs(3600), http_get(&target.url("/flaky")));
    let task = register(&mut client, "flaky", spec).await;
    assert_eq!(task.failure_count, 0);
    assert!(task.last_success_at.is_none());
    assert!(task.recent_runs.is_empty());

    let mut results = stream(&mut client, &["flaky"], "", false).await;
    // Three failures, one after the other.
    for _ in 0..3 {
        trigger(&mut client, "flaky").await;
        let result = next_result(&mut results)
            .await
            .expect("stream")
            .expect("result");
        assert_eq!(outcome(&result), pb::Outcome::Failed);
    }
    let task = get(&mut client, "flaky").await;
    assert_eq!((task.failure_count, task.consecutive_failures), (3, 3));
    assert!(task.last_success_at.is_none());

    target.set("/flaky", Behaviour::default());
    trigger(&mut client, "flaky").await;
    let success = next_result(&mut results)
        .await
        .expect("stream")
        .expect("result");
    assert_eq!(outcome(&success), pb::Outcome::Succeeded);
    let task = get(&mut client, "flaky").await;
    assert_eq!((task.failure_count, task.consecutive_failures), (3, 0));
    assert_eq!(task.last_success_at, success.finished_at);
    let outcomes: Vec<pb::Outcome> = task
        .recent_runs
        .iter()
        .map(|r| pb::Outcome::try_from(r.outcome).expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [
            pb::Outcome::Failed,
            pb::Outcome::Failed,
            pb::Outcome::Failed,
            pb::Outcome::Succeeded
        ]
    );
    let runs: Vec<u64> = task.recent_runs.iter().map(|r| r.run).collect();
    assert!(
        runs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {runs:?}"
    );

    // At most five are kept, the newest.
    for _ in 0..8 {
        trigger(&mut client, "flaky").await;
        next_result(&mut results)
            .await
            .expect("stream")
            .expect("result");
    }
    let task = get(&mut client, "flaky").await;
    assert_eq!(task.recent_runs.len(), 5);
    assert_eq!(task.recent_runs.last().map(|r| r.run), Some(task.run_count));
}

#[tokio::test]
async fn next_run_times_follow_the_schedule_its_zone_and_its_end() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let hourly = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    register(&mut client, "hourly", hourly).await;
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: "hourly".into(),
            next_run_count: 3,
        })
        .await
        .expect("get")
        .into_inner();
    let times: Vec<i64> = task.next_run_times.iter().map(|t| t.seconds).collect();
    assert_eq!(times.len(), 3);
    assert_eq!(Some(times[0]), task.next_run_at.map(|t| t.seconds));
    assert_eq!((times[1] - times[0], times[2] - times[1]), (3600, 3600));
    // Not asked: none.
    assert!(get(&mut client, "hourly").await.next_run_times.is_empty());

    // Weekdays at 09:30 in Berlin, twice at most: the server does the
    // cron, zone and DST maths, and stops at max_runs.
    let mut daily = spec_every(Duration::from_secs(1), http_get("http://127.0.0.1:9/x"));
    daily.schedule = Some(pb::Schedule {
        cadence: Some(pb::schedule::Cadence::Cron("30 9 * * 1-5".into())),
        time_zone: "Europe/Berlin".into(),
        max_runs: 2,
        ..Default::default()
    });
    register(&mut client, "weekdays", daily).await;
    let listed = client
        .list_tasks(pb::ListTasksRequest {
            next_run_count: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let weekdays = listed
        .tasks
        .iter()
        .find(|t| t.task_id == "weekdays")
        .expect("listed");
    // max_runs 2: two fire times however many were asked for.
    assert_eq!(weekdays.next_run_times.len(), 2);
    for t in &weekdays.next_run_times {
        let at = chrono::DateTime::from_timestamp(t.seconds, 0)
            .expect("time")
            .with_timezone(&chrono_tz::Europe::Berlin);
        use chrono::{Datelike, Timelike};
        assert_eq!((at.hour(), at.minute()), (9, 30), "{at}");
        assert!(at.weekday().num_days_from_monday() < 5, "{at}");
    }
    assert_eq!(
        weekdays.schedule_description,
        "at 09:30, on Monday, Tuesday, Wednesday, Thursday, and Friday (Europe/Berlin), at most 2 runs"
    );

    // Paused: no fire time.
    client
        .pause_task(pb::PauseTaskRequest {
            task_id: "hourly".into(),
            reason: String::new(),
        })
        .await
        .expect("pause");
    let paused = client
        .get_task(pb::GetTaskRequest {
            task_id: "hourly".into(),
            next_run_count: 3,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(paused.next_run_times.is_empty());

    // Beyond the cap: INVALID_ARGUMENT naming the field, with a
    // BadRequest detail.
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "hourly".into(),
            next_run_count: 11,
        })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations[0].field, "next_run_count");
}

#[tokio::test]
async fn errors_carry_details_a_program_can_act_on() {
    let mut config = test_config();
    config.max_open_streams = 1;
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();

    // A validation error: BadRequest with the field's proto path.
    let mut spec = spec_every(Duration::from_millis(10), http_get("http://127.0.0.1:9/x"));
    let err = dry_register(&mut client, "bad", spec.clone())
        .await
        .expect_err("too often");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    let violation = &details.bad_request().expect("BadRequest").field_violations[0];
    assert_eq!(violation.field, "spec.schedule.every");
    assert!(!violation.description.is_empty());
    assert!(
        err.message().starts_with("spec.schedule.every"),
        "{}",
        err.message()
    );

    // A state that forbids the call: PreconditionFailure naming the task.
    spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/x"));
    register(&mut client, "live", spec).await;
    let err = client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "live".into(),
        })
        .await
        .expect_err("live");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = err.get_error_details();
    let violation = &details
        .precondition_failure()
        .expect("PreconditionFailure")
        .violations[0];
    assert_eq!(
        (violation.r#type.as_str(), violation.subject.as_str()),
        ("STATE", "task/live")
    );

    // A server limit that frees up: RESOURCE_EXHAUSTED with RetryInfo.
    let _open = stream(&mut client, &[], "", false).await;
    let err = client
        .stream_results(pb::StreamResultsRequest::default())
        .await
        .expect_err("one stream only");
    assert_eq!(err.code(), Code::ResourceExhausted);
    let details = err.get_error_details();
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(delay > Duration::ZERO, "{delay:?}");
    // WatchTasks is a stream like any other.
    let err = client
        .watch_tasks(pb::WatchTasksRequest::default())
        .await
        .expect_err("one stream only");
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn who_am_i_without_authentication_is_anonymous_with_every_scope() {
    let server = TestServer::start().await;
    let me = server
        .client
        .clone()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.name, "anonymous");
    assert_eq!(
        me.scopes,
        [pb::Scope::Read, pb::Scope::Write, pb::Scope::Admin].map(|s| s as i32)
    );
    assert_eq!(me.namespace, "");
}

fn kind(event: &pb::TaskEvent) -> pb::TaskEventType {
    pb::TaskEventType::try_from(event.r#type).expect("event type")
}

/// The next event about `id` (events about other tasks are skipped).
async fn next_about(events: &mut tonic::Streaming<pb::TaskEvent>, id: &str) -> pb::TaskEvent {
    loop {
        let event = next_event(events).await;
        if event.task_id == id {
            return event;
        }
    }
}

/// The next event about `id` other than COUNTERS: a task's counters may
/// move in a round of their own (a run's result, its end) around any change.
async fn next_change_about(
    events: &mut tonic::Streaming<pb::TaskEvent>,
    id: &str,
) -> pb::TaskEvent {
    loop {
        let event = next_about(events, id).await;
        if kind(&event) != pb::TaskEventType::Counters {
            return event;
        }
    }
}

#[tokio::test]
async fn watch_tasks_lists_then_follows_every_kind_of_change() {
    let server = TestServer::start().await;
    let target = HttpTarget::start().await;
    let mut client = server.client.clone();
    let spec = spec_every(Duration::from_secs(3600), http_get(&target.url("/w")));
    register(&mut client, "before-1", spec.clone()).await;
    register(&mut client, "before-2", spec.clone()).await;

    let mut events = client
        .watch_tasks(pb::WatchTasksRequest { next_run_count: 2 })
        .await
        .expect("watch")
        .into_inner();
    let first = next_event(&mut events).await;
    let second = next_event(&mut events).await;
    assert_eq!(
        [
            (kind(&first), first.task_id.as_str()),
            (kind(&second), second.task_id.as_str())
        ],
        [
            (pb::TaskEventType::Existing, "before-1"),
            (pb::TaskEventType::Existing, "before-2")
        ]
    );
    assert_eq!(first.task.as_ref().map(|t| t.next_run_times.len()), Some(2));
    assert_eq!(
        kind(&next_event(&mut events).await),
        pb::TaskEventType::Synced
    );

    register(&mut client, "new", spec.clone()).await;
    let event = next_about(&mut events, "new").await;
    assert_eq!(kind(&event), pb::TaskEventType::Created);

    trigger(&mut client, "new").await;
    let event = next_about(&mut events, "new").await;
    assert_eq!(kind(&event), pb::TaskEventType::Counters);
    // Counters may move in more than one round (the run, then its result).
    let mut task = event.task.expect("task");
    while task.last_result.is_none() {
        let event = next_about(&mut events, "new").await;
        assert_eq!(kind(&event), pb::TaskEventType::Counters);
        task = event.task.expect("task");
    }

    client
        .pause_task(pb::PauseTaskRequest {
            task_id: "new".into(),
            reason: "watching".into(),
        })
        .await
        .expect("pause");
    let event = next_change_about(&mut events, "new").await;
    assert_eq!(kind(&event), pb::TaskEventType::StateChanged);
    assert_eq!(event.task.map(|t| t.pause_reason), Some("watching".into()));

    let mut every_minute = spec.clone();
    every_minute.schedule =
        spec_every(Duration::from_secs(60), http_get(&target.url("/w"))).schedule;
    client
        .update_task(pb::UpdateTaskRequest {
            task_id: "new".into(),
            spec: Some(every_minute),
            ..Default::default()
        })
        .await
        .expect("update");
    let event = next_change_about(&mut events, "new").await;
    assert_eq!(kind(&event), pb::TaskEventType::Updated);

    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "new".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
    assert_eq!(
        kind(&next_change_about(&mut events, "new").await),
        pb::TaskEventType::StateChanged
    );
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "new".into(),
        })
        .await
        .expect("delete");
    let event = next_change_about(&mut events, "new").await;
    assert_eq!(kind(&event), pb::TaskEventType::Deleted);
    assert!(event.task.is_none());
}

#[tokio::test]
async fn a_result_names_the_process_that_ran_it() {
    let mut config = test_config();
    config.node_id = "node-under-test".into();
    let server = TestServer::start_with(config, |s| s).await;
    let target = HttpTarget::start().await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "who-ran",
        spec_every(Duration::from_secs(3600), http_get(&target.url("/r"))),
    )
    .await;
    let mut results = stream(&mut client, &["who-ran"], "", false).await;
    trigger(&mut client, "who-ran").await;
    let result = next_result(&mut results)
        .await
        .expect("stream")
        .expect("result");
    assert_eq!(result.executor, "node-under-test");
    assert_eq!(
        get(&mut client, "who-ran")
            .await
            .last_result
            .map(|r| r.executor),
        Some("node-under-test".into())
    );
}
