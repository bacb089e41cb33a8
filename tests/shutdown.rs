//! Graceful shutdown in its written order: health NOT_SERVING, calls still
//! served for the shutdown delay, then no new calls, runs in flight get the
//! grace period then are cancelled, streams end with UNAVAILABLE and a
//! resume cursor, and `run` returns promptly even with many open streams.

mod common;

use std::time::{Duration, Instant};

use common::{
    handlers::{Echo, Gate},
    *,
};
use recur::pb::v1 as pb;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn runs_in_flight_finish_within_grace_and_streams_end_unavailable() {
    let (gate, mut started) = Gate::new();
    let mut config = test_config();
    config.shutdown_grace = Duration::from_secs(20);
    let mut server = TestServer::start_with(config, |s| s.handler("gate", gate.clone())).await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "held",
        spec_every(Duration::from_secs(3600), custom("gate", b"")),
    )
    .await;
    let mut results = stream(&mut client, &[], "", false).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "recur.v1.TaskService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    // The server as a whole (service ""), which probes check by default.
    let mut overall = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        overall.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "held".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("run started");

    let handle = server.take_handle();
    server.signal_shutdown();
    // 1. health says NOT_SERVING before anything else stops.
    let status = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("health update")
        .unwrap()
        .unwrap();
    assert_eq!(status.status(), ServingStatus::NotServing);
    let status = tokio::time::timeout(WAIT, overall.message())
        .await
        .expect("health update")
        .unwrap()
        .unwrap();
    assert_eq!(status.status(), ServingStatus::NotServing);
    // 2. no new calls.
    let mut fresh = TestServer::try_connect(server.addr).await;
    if let Some(fresh) = fresh.as_mut() {
        let err = fresh
            .get_task(pb::GetTaskRequest {
                task_id: "held".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{err:?}"
        );
    }
    // 3. the run in flight may finish and its result still reaches the stream.
    gate.permits.add_permits(1);
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Succeeded);
    // 4. then the stream ends with UNAVAILABLE and where to resume.
    let err = next_result(&mut results)
        .await
        .expect_err("stream ends with a status");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.metadata().get("recur-resume-cursor").unwrap(),
        r.cursor.as_str()
    );
    // Health watches end too, so they cannot hold shutdown up.
    let end = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("watch ended");
    assert_eq!(
        end.expect_err("ends with a status").code(),
        Code::Unavailable
    );
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("run returned")
        .unwrap()
        .expect("clean exit");
}

#[tokio::test]
async fn runs_past_the_grace_period_are_cancelled() {
    let (gate, mut started) = Gate::new();
    let mut config = test_config();
    config.shutdown_grace = Duration::from_millis(500);
    let mut server = TestServer::start_with(config, |s| s.handler("gate", gate.clone())).await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "stuck",
        spec_every(Duration::from_secs(3600), custom("gate", b"")),
    )
    .await;
    let mut results = stream(&mut client, &[], "", false).await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "stuck".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started.recv())
        .await
        .expect("run started");
    let handle = server.take_handle();
    let began = Instant::now();
    server.signal_shutdown();
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Cancelled);
    assert!(
        began.elapsed() >= Duration::from_millis(450),
        "cancelled before the grace period ended"
    );
    let err = next_result(&mut results).await.expect_err("UNAVAILABLE");
    assert_eq!(err.code(), Code::Unavailable);
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("run returned")
        .unwrap()
        .expect("clean exit");
}

#[tokio::test]
async fn a_hundred_open_streams_do_not_hold_up_shutdown() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "quiet",
        spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/")),
    )
    .await;
    let mut open = Vec::new();
    for i in 0..100 {
        // Spread over a few connections, as real clients would be.
        let mut c = if i % 25 == 0 {
            server.new_client().await
        } else {
            client.clone()
        };
        open.push(stream(&mut c, &[], "", false).await);
    }
    assert_eq!(server.open_streams.get(), 100);
    let began = Instant::now();
    server.stop().await.expect("clean exit");
    // Grace (2 s in tests) is not even needed: nothing runs. Drain is 1 s.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        began.elapsed()
    );
    // Every stream ended as the contract says: UNAVAILABLE with where to
    // resume (the log is empty here, so the cursor is its start).
    for mut s in open {
        let end = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("stream ended");
        let status = end.expect_err("UNAVAILABLE, not a clean end");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.metadata().get("recur-resume-cursor").is_some(),
            "no resume cursor: {status:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_while_waiting_for_redis_at_start_returns_at_once() {
    let port = common::redis::free_port();
    let mut config = test_config();
    config.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    config.redis_startup_window = Duration::from_secs(120);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    let run = tokio::spawn(recur::server::run(listener, config, async move {
        signal.cancelled().await
    }));
    // Let start-up reach its Redis retries, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("returned well before the window")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

/// Watches the whole server's health on a connection of its own.
async fn watch_health(
    server: &TestServer,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("status");
    assert_eq!(first.unwrap().unwrap().status(), ServingStatus::Serving);
    watch
}

#[tokio::test]
async fn during_the_shutdown_delay_health_is_not_serving_but_calls_are_served() {
    let mut config = test_config();
    // Far longer than the test may take: only `hurry` ends it.
    config.shutdown_delay = Duration::from_secs(600);
    let mut server = TestServer::start_with(config, |s| s.handler("echo", Echo)).await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "during",
        spec_every(Duration::from_secs(3600), custom("echo", b"still firing")),
    )
    .await;
    let mut results = stream(&mut client, &["during"], "", false).await;
    let mut health = watch_health(&server).await;

    let handle = server.take_handle();
    server.signal_shutdown();
    let status = tokio::time::timeout(WAIT, health.message())
        .await
        .expect("health update")
        .unwrap()
        .unwrap();
    assert_eq!(status.status(), ServingStatus::NotServing);

    // Calls still succeed, on open connections and on new ones.
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: "during".into(),
            ..Default::default()
        })
        .await
        .expect("GetTask during the delay")
        .into_inner();
    assert_eq!(state(&task), pb::TaskState::Active);
    let mut fresh = server.new_client().await;
    fresh
        .get_task(pb::GetTaskRequest {
            task_id: "during".into(),
            ..Default::default()
        })
        .await
        .expect("GetTask on a new connection during the delay");
    // Tasks still fire and results still stream.
    fresh
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "during".into(),
        })
        .await
        .expect("TriggerTask during the delay");
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(outcome(&r), pb::Outcome::Succeeded);
    assert_eq!(r.output, &b"still firing"[..]);

    // A second signal ends the delay, and the rest of shutdown follows.
    server.hurry_shutdown();
    let err = next_result(&mut results)
        .await
        .expect_err("the stream ends at shutdown");
    assert_eq!(err.code(), Code::Unavailable);
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("run returned long before the 600 s delay")
        .unwrap()
        .expect("clean exit");
}

#[tokio::test]
async fn the_shutdown_delay_ends_by_itself() {
    let delay = Duration::from_millis(500);
    let mut config = test_config();
    config.shutdown_delay = delay;
    let mut server = TestServer::start_with(config, |s| s).await;
    let mut health = watch_health(&server).await;
    let handle = server.take_handle();
    let began = Instant::now();
    server.signal_shutdown();
    let status = tokio::time::timeout(WAIT, health.message())
        .await
        .expect("health update")
        .unwrap()
        .unwrap();
    assert_eq!(status.status(), ServingStatus::NotServing);
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("run returned")
        .unwrap()
        .expect("clean exit");
    assert!(
        began.elapsed() >= delay,
        "returned after {:?}, within the {delay:?} delay",
        began.elapsed()
    );
}
