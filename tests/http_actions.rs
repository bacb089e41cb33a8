//! HTTP actions against a local server: control calls while a task runs,
//! idempotency keys, redirects, caps, timeouts and retries.

mod common;

use std::time::Duration;

use common::{
    http_target::{Behaviour, HttpTarget},
    *,
};
use recur::pb::v1 as pb;

fn get(url: &str) -> pb::action::Kind {
    http_get(url)
}

#[tokio::test]
async fn pause_resume_trigger_cancel_against_a_live_target() {
    let target = HttpTarget::start().await;
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        "tick",
        spec_every(Duration::from_secs(1), get(&target.url("/tick"))),
    )
    .await;

    let first = target.next_request().await;
    let key = first
        .headers
        .get("idempotency-key")
        .expect("idempotency key sent")
        .to_str()
        .unwrap()
        .to_string();
    let result = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&result), pb::Outcome::Succeeded);
    assert_eq!(result.http_status, 200);
    assert_eq!(result.output, &b"ok"[..]);
    assert_eq!(
        result.occurrence_id, key,
        "the header carries the run's occurrence id"
    );
    assert_eq!(
        pb::Trigger::try_from(result.trigger).unwrap(),
        pb::Trigger::Scheduled
    );

    // Paused: nothing starts once PauseTask has returned.
    let paused = client
        .pause_task(pb::PauseTaskRequest {
            task_id: "tick".into(),
            reason: "deploy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.pause_reason, "deploy");
    let paused_at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A run that started before PauseTask returned may still arrive; none
    // for a slot after it may.
    let late: Vec<_> = target
        .received()
        .iter()
        .map(slot_of)
        .filter(|slot| *slot > paused_at)
        .collect();
    assert!(late.is_empty(), "runs for slots after the pause: {late:?}");

    // Trigger works while paused and is marked manual.
    let run = client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "tick".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run;
    let manual = loop {
        let r = next_result(&mut results).await.unwrap().unwrap();
        if r.run == run {
            break r;
        }
    };
    assert_eq!(
        pb::Trigger::try_from(manual.trigger).unwrap(),
        pb::Trigger::Manual
    );
    assert_eq!(outcome(&manual), pb::Outcome::Succeeded);
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: "tick".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&task), pb::TaskState::Paused);
    assert_eq!(task.last_result.unwrap().run, run);

    // Resume continues from the next future slot: no burst for the paused slots.
    let before = target.received().len();
    let resume_called = chrono::Utc::now();
    let resumed = client
        .resume_task(pb::ResumeTaskRequest {
            task_id: "tick".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let next = resumed.next_run_at.unwrap();
    let resume_returned = chrono::Utc::now();
    let next_at = chrono::DateTime::from_timestamp(next.seconds, next.nanos as u32).unwrap();
    assert!(
        next_at > resume_called && next_at <= resume_returned + chrono::Duration::seconds(1),
        "next slot {next_at} should be the first grid slot after the resume call ({resume_called}..{resume_returned})"
    );
    let r = loop {
        let r = next_result(&mut results).await.unwrap().unwrap();
        if r.run > run {
            break r;
        }
    };
    assert_eq!(r.scheduled_at, Some(next));
    assert!(
        target.received().len() <= before + 2,
        "a burst after resume: {} requests",
        target.received().len() - before
    );

    let cancelled = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "tick".into(),
            reason: "bye".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cancelled), pb::TaskState::Cancelled);
    let cancelled_at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late: Vec<_> = target
        .received()
        .iter()
        .map(slot_of)
        .filter(|slot| *slot > cancelled_at)
        .collect();
    assert!(late.is_empty(), "runs for slots after the cancel: {late:?}");
}

/// The nominal slot a request was sent for, from its Idempotency-Key
/// (`<task id>@<RFC 3339 slot>`, with `~<random>` after it for a manual run).
fn slot_of(request: &common::http_target::Received) -> chrono::DateTime<chrono::Utc> {
    let key = request
        .headers
        .get("idempotency-key")
        .expect("key")
        .to_str()
        .unwrap();
    let (_, slot) = key.rsplit_once('@').expect("task@slot");
    let slot = slot.split('~').next().unwrap_or(slot);
    chrono::DateTime::parse_from_rfc3339(slot)
        .expect("rfc3339")
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn cancel_aborts_a_run_in_flight() {
    let target = HttpTarget::start().await;
    target.set(
        "/slow",
        Behaviour {
            hold: true,
            ..Default::default()
        },
    );
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "slow",
        spec_every(Duration::from_secs(3600), get(&target.url("/slow"))),
    )
    .await;
    let mut results = stream(&mut client, &["slow"], "", false).await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "slow".into(),
        })
        .await
        .unwrap();
    target.next_request().await;
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "slow".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Cancelled);
    assert!(
        next_result(&mut results).await.unwrap().is_none(),
        "stream ends after the last result"
    );
    target.release();
}

#[tokio::test]
async fn failures_timeouts_and_retries() {
    let target = HttpTarget::start().await;
    target.set(
        "/500",
        Behaviour {
            status: Some(503),
            body: Some(b"busy".to_vec()),
            ..Default::default()
        },
    );
    target.set(
        "/slow",
        Behaviour {
            delay: Some(Duration::from_secs(10)),
            ..Default::default()
        },
    );
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;

    let mut failing = spec_every(Duration::from_secs(3600), get(&target.url("/500")));
    failing.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        initial_backoff: Some(duration(Duration::from_millis(50))),
        max_backoff: Some(duration(Duration::from_millis(100))),
    });
    register(&mut client, "failing", failing).await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "failing".into(),
        })
        .await
        .unwrap();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Failed);
    assert_eq!(r.attempts, 3);
    assert_eq!(r.http_status, 503);
    assert_eq!(r.output, &b"busy"[..]);
    assert!(r.error.contains("503"), "{}", r.error);
    assert_eq!(
        target
            .received()
            .iter()
            .filter(|q| q.path == "/500")
            .count(),
        3
    );
    let keys: Vec<_> = target
        .received()
        .iter()
        .map(|q| q.headers.get("idempotency-key").cloned())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "retries of one run share the occurrence id"
    );

    let mut slow = spec_every(Duration::from_secs(3600), get(&target.url("/slow")));
    slow.timeout = Some(duration(Duration::from_millis(300)));
    register(&mut client, "slow", slow).await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "slow".into(),
        })
        .await
        .unwrap();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::TimedOut);

    // Nothing listens on port 9 (discard) here: a connection failure is FAILED, not a hang.
    register(
        &mut client,
        "refused",
        spec_every(Duration::from_secs(3600), get("http://127.0.0.1:9/")),
    )
    .await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "refused".into(),
        })
        .await
        .unwrap();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Failed);
}

#[tokio::test]
async fn redirects_drop_client_headers_when_the_host_changes() {
    let target = HttpTarget::start().await;
    let port = target.addr.port();
    target.set(
        "/same",
        Behaviour {
            status: Some(302),
            location: Some("/landing-same".into()),
            ..Default::default()
        },
    );
    target.set(
        "/cross",
        Behaviour {
            status: Some(307),
            location: Some(format!("http://localhost:{port}/landing-cross")),
            ..Default::default()
        },
    );
    target.set(
        "/loop",
        Behaviour {
            status: Some(302),
            location: Some("/loop".into()),
            ..Default::default()
        },
    );
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    let with_secret = |path: &str| {
        pb::action::Kind::Http(pb::HttpAction {
            method: "GET".into(),
            url: target.url(path),
            headers: [
                ("X-Api-Key".to_string(), "s3cr3t".to_string()),
                ("Idempotency-Key".to_string(), "mine".to_string()),
            ]
            .into(),
            body: vec![],
            ..Default::default()
        })
    };
    for path in ["/same", "/cross", "/loop"] {
        register(
            &mut client,
            &path[1..],
            spec_every(Duration::from_secs(3600), with_secret(path)),
        )
        .await;
        client
            .trigger_task(pb::TriggerTaskRequest {
                task_id: path[1..].into(),
            })
            .await
            .unwrap();
        let r = next_result(&mut results).await.unwrap().unwrap();
        if path == "/loop" {
            assert_eq!(outcome(&r), pb::Outcome::Failed);
            assert!(r.error.contains("redirects"), "{}", r.error);
        } else {
            assert_eq!(outcome(&r), pb::Outcome::Succeeded, "{path}: {}", r.error);
        }
    }
    let received = target.received();
    let same = received
        .iter()
        .find(|q| q.path == "/landing-same")
        .expect("same-host redirect followed");
    assert_eq!(same.headers.get("x-api-key").unwrap(), "s3cr3t");
    assert_eq!(
        same.headers.get("idempotency-key").unwrap(),
        "mine",
        "a key the task sets is sent as is"
    );
    let cross = received
        .iter()
        .find(|q| q.path == "/landing-cross")
        .expect("cross-host redirect followed");
    assert!(
        cross.headers.get("x-api-key").is_none(),
        "client header leaked across hosts"
    );
    assert!(cross.headers.get("idempotency-key").is_none());
    assert!(received.iter().filter(|q| q.path == "/loop").count() <= 6);
}

#[tokio::test]
async fn response_bodies_are_capped() {
    let target = HttpTarget::start().await;
    target.set(
        "/big",
        Behaviour {
            body: Some(vec![b'a'; 100_000]),
            ..Default::default()
        },
    );
    let mut config = test_config();
    config.output_cap = 1024;
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        "big",
        spec_every(Duration::from_secs(3600), get(&target.url("/big"))),
    )
    .await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "big".into(),
        })
        .await
        .unwrap();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Succeeded);
    assert_eq!(r.output.len(), 1024);
    assert!(r.output_truncated);
}

#[tokio::test]
async fn post_sends_method_body_and_headers() {
    let target = HttpTarget::start().await;
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let action = pb::action::Kind::Http(pb::HttpAction {
        method: "post".into(),
        url: target.url("/hook"),
        headers: [("Content-Type".to_string(), "application/json".to_string())].into(),
        body: br#"{"a":1}"#.to_vec(),
        ..Default::default()
    });
    register(
        &mut client,
        "post",
        spec_every(Duration::from_secs(3600), action),
    )
    .await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "post".into(),
        })
        .await
        .unwrap();
    let q = target.next_request().await;
    assert_eq!(q.method, "POST");
    assert_eq!(&q.body[..], br#"{"a":1}"#);
    assert_eq!(q.headers.get("content-type").unwrap(), "application/json");
}
