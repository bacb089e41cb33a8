//! Redis as the system of record, seen from outside: the `recur` binary is
//! stopped (SIGTERM) or killed (kill -9) and started again, Redis goes away
//! and comes back, and nothing a client was told is lost.
//!
//! Tests that only restart recur use the shared Redis under their own key
//! prefix; tests that stop Redis spawn their own.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ::redis::{self, AsyncCommands};
use common::{
    binary::Recur,
    http_target::{Behaviour, HttpTarget},
    redis::{OwnRedis, SHARED_URL, random_prefix},
    *,
};
use recur::pb::v1::{self as pb, task_service_client::TaskServiceClient};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Deletes every key under `prefix` on the shared Redis.
async fn delete_keys(prefix: &str) {
    let mut conn = connect_redis(SHARED_URL).await;
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.expect("KEYS");
    if !keys.is_empty() {
        let _: () = conn.del(keys).await.expect("DEL");
    }
}

async fn connect_redis(url: &str) -> redis::aio::MultiplexedConnection {
    common::redis::connect(url).await
}

async fn all_tasks(client: &mut TaskServiceClient<Channel>) -> Vec<pb::Task> {
    client
        .list_tasks(pb::ListTasksRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .tasks
}

/// The cursor before every result of the log `cursor` belongs to.
fn log_start(cursor: &str) -> String {
    let (epoch, _) = cursor.split_once('-').expect("a recur cursor");
    format!("{epoch}-0-0")
}

#[tokio::test]
async fn every_task_comes_back_after_sigterm_and_after_kill_9() {
    let prefix = random_prefix();
    let target = HttpTarget::start().await;
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    let hour = Duration::from_secs(3600);
    let mut secret = spec_every(hour, http_get(&target.url("/secret")));
    if let Some(pb::action::Kind::Http(http)) = secret.action.as_mut().and_then(|a| a.kind.as_mut())
    {
        http.headers
            .insert("authorization".into(), "Bearer s3cr3t".into());
    }
    secret.labels.insert("team".into(), "infra".into());
    secret.catchup_window = Some(duration(Duration::from_secs(30)));
    let registered = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "active".into(),
            spec: Some(secret.clone()),
            request_id: "req-active".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    for id in ["paused", "cancelled"] {
        register(
            &mut client,
            id,
            spec_every(hour, http_get(&target.url("/x"))),
        )
        .await;
    }
    client
        .pause_task(pb::PauseTaskRequest {
            task_id: "paused".into(),
            reason: "maintenance window".into(),
        })
        .await
        .expect("pause");
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "cancelled".into(),
            reason: "replaced".into(),
        })
        .await
        .expect("cancel");
    // A finished run, so counts and the last result are part of the state.
    let mut results = stream(&mut client, &["active"], "", false).await;
    trigger(&mut client, "active").await;
    let first = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&first), pb::Outcome::Succeeded);
    assert_eq!(
        target.received()[0].headers["authorization"],
        "Bearer s3cr3t"
    );
    let before = all_tasks(&mut client).await;
    assert_eq!(before.len(), 3);
    assert_eq!(before[0].last_result.as_ref(), Some(&first));

    // Graceful stop, then start: every field of every task is as it was.
    drop(results);
    recur.terminate().await;
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    assert_eq!(all_tasks(&mut client).await, before, "after SIGTERM");

    // kill -9: nothing of shutdown runs, and still nothing is lost.
    recur.kill();
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    assert_eq!(all_tasks(&mut client).await, before, "after kill -9");
    // The request id still names the task it created.
    let again = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "active".into(),
            spec: Some(secret),
            request_id: "req-active".into(),
            ..Default::default()
        })
        .await
        .expect("same request")
        .into_inner();
    assert_eq!(again.created_at, registered.created_at);
    // The secret header survived too (sent, never shown).
    trigger(&mut client, "active").await;
    eventually("the second run calls the target", || {
        let calls = target.received().len();
        async move { calls == 2 }
    })
    .await;
    let request = target.received().pop().expect("the second call");
    assert_eq!(request.headers["authorization"], "Bearer s3cr3t");
    recur.terminate().await;
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn a_run_going_when_the_process_is_killed_is_reported_abandoned() {
    let prefix = random_prefix();
    let target = HttpTarget::start().await;
    target.set(
        "/slow",
        Behaviour {
            hold: true,
            ..Behaviour::default()
        },
    );
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    let hour = Duration::from_secs(3600);
    register(
        &mut client,
        "slow",
        spec_every(hour, http_get(&target.url("/slow"))),
    )
    .await;
    trigger(&mut client, "slow").await;
    let request = target.next_request().await;
    assert_eq!(request.path, "/slow", "the run is going");
    recur.kill();

    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    eventually("the abandoned run is reported", || {
        let mut client = client.clone();
        async move {
            let task = get(&mut client, "slow").await;
            task.last_result.is_some_and(|r| r.run == 1)
        }
    })
    .await;
    let abandoned = get(&mut client, "slow")
        .await
        .last_result
        .expect("a last result");
    assert_eq!(outcome(&abandoned), pb::Outcome::Abandoned);
    assert!(
        abandoned.error.contains("stopped during the run"),
        "{}",
        abandoned.error
    );
    assert_eq!(abandoned.occurrence_id, request.headers["idempotency-key"]);
    // The task is not stuck behind the run that will never finish.
    target.set("/slow", Behaviour::default());
    let mut results = stream(&mut client, &["slow"], "", false).await;
    trigger(&mut client, "slow").await;
    let next = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!((next.run, outcome(&next)), (2, pb::Outcome::Succeeded));
    drop(results);
    recur.terminate().await;
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn a_result_stream_resumes_across_a_restart_with_no_gap_and_no_duplicate() {
    let prefix = random_prefix();
    let target = HttpTarget::start().await;
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    let mut live = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        "tick",
        spec_every(Duration::from_millis(100), http_get(&target.url("/tick"))),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(next_result(&mut live).await.unwrap().unwrap());
    }
    drop(live);
    recur.terminate().await;

    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    let last = seen.last().expect("five results").cursor.clone();
    let mut resumed = stream(&mut client, &[], &last, false).await;
    while seen.len() < 15 {
        seen.push(next_result(&mut resumed).await.unwrap().unwrap());
    }
    drop(resumed);
    // What the reader got, in two streams across the restart, is exactly
    // the log: nothing missing between them, nothing twice.
    let log = history(&mut client, &log_start(&last)).await;
    assert_eq!(log[..seen.len()], seen[..]);
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "tick".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
    recur.terminate().await;
    delete_keys(&prefix).await;
}

async fn task_service_status(addr: SocketAddr) -> ServingStatus {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("health connection");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(HealthCheckRequest {
            service: "recur.v1.TaskService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(response.status).expect("status")
}

/// How long the test keeps Redis down: short, so CI runs it fast; what it
/// checks does not depend on the length.
const OUTAGE: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_redis_outage_loses_no_definition_and_delivers_results_held_meanwhile() {
    let dir = tempfile::tempdir().expect("data dir");
    let mut redis = OwnRedis::start_persistent(dir.path());
    let target = HttpTarget::start().await;
    target.set(
        "/slow",
        Behaviour {
            hold: true,
            ..Behaviour::default()
        },
    );
    let prefix = random_prefix();
    let recur = Recur::start(&redis.url(), &prefix).await;
    let mut client = recur.client().await;
    register(
        &mut client,
        "steady",
        spec_every(Duration::from_millis(100), http_get(&target.url("/fast"))),
    )
    .await;
    register(
        &mut client,
        "slow",
        spec_every(Duration::from_secs(3600), http_get(&target.url("/slow"))),
    )
    .await;
    trigger(&mut client, "slow").await;
    eventually("the slow run is going", || {
        let received = target.received();
        async move { received.iter().any(|r| r.path == "/slow") }
    })
    .await;
    let definitions = |tasks: Vec<pb::Task>| {
        tasks
            .into_iter()
            .map(|t| (t.task_id, t.spec, t.state, t.created_at))
            .collect::<Vec<_>>()
    };
    let before = definitions(all_tasks(&mut client).await);

    // Redis goes away: calls fail fast, health says so, the process stays up.
    redis.stop();
    let asked = Instant::now();
    let err = client
        .get_task(pb::GetTaskRequest {
            task_id: "steady".into(),
            ..Default::default()
        })
        .await
        .expect_err("no store");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(asked.elapsed() < Duration::from_secs(10));
    eventually("health shows the task service not serving", || async {
        task_service_status(recur.addr).await == ServingStatus::NotServing
    })
    .await;
    // The run in flight finishes during the outage: its result is held.
    target.release();
    tokio::time::sleep(OUTAGE).await;

    // Redis is back with its data: within seconds everything works again,
    // no definition is lost and the held result is there.
    let back = Instant::now();
    redis.restart();
    eventually("health shows the task service serving again", || async {
        task_service_status(recur.addr).await == ServingStatus::Serving
    })
    .await;
    assert_eq!(definitions(all_tasks(&mut client).await), before);
    eventually("the held result is recorded", || {
        let mut client = client.clone();
        async move {
            get(&mut client, "slow")
                .await
                .last_result
                .is_some_and(|r| r.run == 1 && outcome(&r) == pb::Outcome::Succeeded)
        }
    })
    .await;
    let runs_then = get(&mut client, "steady").await.run_count;
    eventually("the steady task fires again", || {
        let mut client = client.clone();
        async move { get(&mut client, "steady").await.run_count > runs_then }
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(10),
        "{:?}",
        back.elapsed()
    );
    assert!(
        !recur.log().contains("results lost"),
        "nothing was lost:\n{}",
        recur.log()
    );
    recur.terminate().await;
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let redis = OwnRedis::start();
    let target = HttpTarget::start().await;
    let prefix = random_prefix();
    let recur = Recur::start(&redis.url(), &prefix).await;
    let mut client = recur.client().await;
    register(
        &mut client,
        "tick",
        spec_every(Duration::from_millis(100), http_get(&target.url("/tick"))),
    )
    .await;
    let mut results = stream(&mut client, &["tick"], "", false).await;
    let first = next_result(&mut results).await.unwrap().unwrap();
    // As after a Redis restart or failover: every cached script is gone.
    let mut conn = connect_redis(&redis.url()).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    // Firing and recording go on: two more runs fired and recorded.
    let mut later = Vec::new();
    while later.len() < 2 {
        let r = next_result(&mut results).await.unwrap().unwrap();
        assert_eq!(outcome(&r), pb::Outcome::Succeeded, "{r:?}");
        later.push(r.run);
    }
    assert!(later[0] > first.run);
    drop(results);
    recur.terminate().await;
}

#[tokio::test]
async fn a_task_stream_ends_when_its_end_entry_is_read_from_the_log() {
    let prefix = random_prefix();
    let target = HttpTarget::start().await;
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    // Completes by itself after two runs: the end follows its last result.
    let mut twice = spec_every(Duration::from_millis(100), http_get(&target.url("/t")));
    if let Some(schedule) = twice.schedule.as_mut() {
        schedule.max_runs = 2;
    }
    register(&mut client, "twice", twice).await;
    let mut results = stream(&mut client, &["twice"], "", false).await;
    let mut runs = Vec::new();
    while let Some(r) = next_result(&mut results).await.expect("a clean end") {
        runs.push(r.run);
    }
    assert_eq!(runs.last(), Some(&2), "{runs:?}");
    // Cancelled with nothing running: the end alone.
    register(
        &mut client,
        "idle",
        spec_every(Duration::from_secs(3600), http_get(&target.url("/i"))),
    )
    .await;
    let mut idle = stream(&mut client, &["idle"], "", false).await;
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "idle".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
    assert_eq!(next_result(&mut idle).await.expect("a clean end"), None);
    // Both ends are entries of the log, which every process reads.
    let mut conn = connect_redis(SHARED_URL).await;
    let log: redis::streams::StreamRangeReply = conn
        .xrange_all(format!("{prefix}{{log}}:results"))
        .await
        .expect("XRANGE");
    let ends: Vec<String> = log
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("e"))
        .collect();
    assert_eq!(ends, ["twice", "idle"]);
    recur.terminate().await;
    delete_keys(&prefix).await;
}

/// Tasks due at one instant from which the server claims them ahead of it
/// (`FireAhead::for_cap`'s minimum), with room.
const HERD: usize = 300;

#[tokio::test]
async fn a_herd_claimed_ahead_runs_each_slot_once_and_none_before_its_instant() {
    let prefix = random_prefix();
    let target = HttpTarget::start().await;
    let recur = Recur::start(SHARED_URL, &prefix).await;
    let mut client = recur.client().await;
    let mut results = stream(&mut client, &[], "", false).await;
    // Registering 300 tasks takes well under the lead, so the slot's
    // claim falls inside the window ahead of it.
    let instant = chrono::Utc::now() + chrono::Duration::seconds(4);
    let start_at = prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: 0,
    };
    for i in 0..HERD {
        let mut spec = spec_every(Duration::from_secs(3600), http_get(&target.url("/herd")));
        if let Some(schedule) = spec.schedule.as_mut() {
            schedule.start_at = Some(start_at);
        }
        register(&mut client, &format!("herd-{i:03}"), spec).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < HERD {
        let result = next_result(&mut results)
            .await
            .expect("stream")
            .expect("a result");
        assert_eq!(outcome(&result), pb::Outcome::Succeeded, "{}", result.error);
        assert_eq!(result.scheduled_at, Some(start_at), "its one slot");
        let (scheduled, started) = (
            result.scheduled_at.expect("scheduled_at"),
            result.started_at.expect("started_at"),
        );
        assert!(
            (started.seconds, started.nanos) >= (scheduled.seconds, scheduled.nanos),
            "{} started before its slot: {started:?} < {scheduled:?}",
            result.task_id
        );
        assert!(
            seen.insert(result.task_id.clone()),
            "{} ran twice",
            result.task_id
        );
    }
    assert_eq!(target.received().len(), HERD, "one request per task");
    recur.terminate().await;
    delete_keys(&prefix).await;
}
