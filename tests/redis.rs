//! Redis actions and the managed pool: named connections, reconnects, the
//! start-up check, and no connection left after `run` returns.

mod common;

use std::time::Duration;

use common::{
    redis::{OwnRedis, SHARED_URL, client_names, random_prefix},
    *,
};
use recur::pb::v1 as pb;

fn redis_action(args: &[&str]) -> pb::action::Kind {
    pb::action::Kind::Redis(pb::RedisAction {
        args: args.iter().map(|s| s.to_string()).collect(),
    })
}

fn config_with(url: &str) -> (recur::Config, String) {
    let mut config = test_config();
    config.redis_url = Some(url.to_string());
    // The task store lives under this prefix: a test's own, on the shared Redis.
    config.key_prefix = random_prefix();
    config.node_id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let name = format!("recur:{}", config.node_id);
    (config, name)
}

#[tokio::test]
async fn redis_actions_run_on_the_shared_redis() {
    let prefix = random_prefix();
    let key = format!("{prefix}hits");
    let (config, _) = config_with(SHARED_URL);
    let own_keys = format!("{}tasks", config.key_prefix);
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        "incr",
        spec_every(Duration::from_secs(3600), redis_action(&["INCR", &key])),
    )
    .await;
    register(
        &mut client,
        "range",
        spec_every(
            Duration::from_secs(3600),
            redis_action(&["MGET", &key, &format!("{prefix}none")]),
        ),
    )
    .await;
    register(
        &mut client,
        "wrong",
        spec_every(
            Duration::from_secs(3600),
            redis_action(&["LPUSH", &key, "x"]),
        ),
    )
    .await;
    for id in ["incr", "incr", "range", "wrong"] {
        client
            .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
            .await
            .unwrap();
        let r = next_result(&mut results).await.unwrap().unwrap();
        match id {
            "incr" => assert_eq!(outcome(&r), pb::Outcome::Succeeded, "{}", r.error),
            "range" => {
                assert_eq!(outcome(&r), pb::Outcome::Succeeded);
                assert_eq!(r.output, &br#"["2",null]"#[..], "reply rendered as JSON");
            }
            _ => {
                assert_eq!(outcome(&r), pb::Outcome::Failed);
                assert!(r.error.contains("WRONGTYPE"), "{}", r.error);
            }
        }
    }
    let mut conn = common::redis::connect(SHARED_URL).await;
    let hits: i64 = ::redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hits, 2);
    let _: () = ::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The server's own key space is off limits.
    let err = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "own".into(),
            spec: Some(spec_every(
                Duration::from_secs(60),
                redis_action(&["DEL", &own_keys]),
            )),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("spec.action.redis.args"));
}

#[tokio::test]
async fn pool_connections_are_named_and_gone_when_run_returns() {
    let (config, name) = config_with(SHARED_URL);
    let server = TestServer::start_with(config, |s| s).await;
    // The pool was checked before the server took calls: once a call is
    // answered, a named connection exists.
    let mut client = server.client.clone();
    client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap();
    let names = client_names(SHARED_URL).await;
    assert!(names.contains(&name), "{name} not in CLIENT LIST {names:?}");
    // The store's log reader has its own named connection.
    let reader = format!("{name}:log");
    assert!(
        names.contains(&reader),
        "{reader} not in CLIENT LIST {names:?}"
    );
    // Use the pool from several runs at once.
    let mut results = stream(&mut client, &[], "", false).await;
    let prefix = random_prefix();
    for i in 0..4 {
        let mut spec = spec_every(
            Duration::from_secs(3600),
            redis_action(&["SET", &format!("{prefix}{i}"), "v", "EX", "60"]),
        );
        spec.overlap = pb::OverlapPolicy::Allow as i32;
        register(&mut client, &format!("set{i}"), spec).await;
        client
            .trigger_task(pb::TriggerTaskRequest {
                task_id: format!("set{i}"),
            })
            .await
            .unwrap();
    }
    for _ in 0..4 {
        assert_eq!(
            outcome(&next_result(&mut results).await.unwrap().unwrap()),
            pb::Outcome::Succeeded
        );
    }
    drop(results);
    server.stop().await.expect("clean shutdown");
    // Checked right after run returned, in this process: neither the pool's
    // connections nor the log reader's are left.
    let names = client_names(SHARED_URL).await;
    assert!(
        !names.iter().any(|n| n.starts_with(&name)),
        "connections of {name} left after shutdown: {names:?}"
    );
}

#[tokio::test]
async fn reconnects_after_redis_restarts_and_names_the_new_connection() {
    let mut own = OwnRedis::start();
    let port = own.port;
    let (config, name) = config_with(&own.url());
    let server = TestServer::start_with(config, |s| s).await;
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        "ping",
        spec_every(Duration::from_secs(3600), redis_action(&["PING"])),
    )
    .await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "ping".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        outcome(&next_result(&mut results).await.unwrap().unwrap()),
        pb::Outcome::Succeeded
    );

    // Redis is the store: with it gone, a call that needs it fails fast
    // with UNAVAILABLE instead of hanging or pretending.
    own.stop();
    let asked = std::time::Instant::now();
    let err = client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "ping".into(),
        })
        .await
        .expect_err("no store, no trigger");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("store unavailable"), "{err:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    // It comes back empty (no persistence): the process writes its task
    // back, and the stream that was reading the lost log ends with
    // DATA_LOSS instead of going on as if nothing happened.
    let restarted = OwnRedis::start_on(port);
    let end = next_result(&mut results)
        .await
        .expect_err("the log was lost");
    assert_eq!(end.code(), tonic::Code::DataLoss, "{end:?}");
    let mut results = stream(&mut client, &["ping"], "", false).await;
    client
        .trigger_task(pb::TriggerTaskRequest {
            task_id: "ping".into(),
        })
        .await
        .expect("the task was written back");
    let r = next_result(&mut results).await.unwrap().unwrap();
    assert_eq!(
        outcome(&r),
        pb::Outcome::Succeeded,
        "runs again on the new connection; Redis log:\n{}",
        restarted.log()
    );
    let names = client_names(&restarted.url()).await;
    assert!(
        names.contains(&name),
        "the new connection is named too: {names:?}"
    );
    assert!(
        names.contains(&format!("{name}:log")),
        "and so is the log reader's: {names:?}"
    );
    drop(results);
    server.stop().await.unwrap();
    assert!(!client_names(&restarted.url()).await.contains(&name));
}

#[tokio::test]
async fn unreachable_redis_at_start_is_retried_for_the_whole_window() {
    // Nothing listens there: every attempt is refused at once, so the time
    // taken is the retry schedule's alone.
    let port = common::redis::free_port();
    let (mut config, _) = config_with(&format!("redis://127.0.0.1:{port}"));
    let window = Duration::from_secs(3);
    config.redis_startup_window = window;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        WAIT,
        recur::server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("gave up in time");
    let elapsed = started.elapsed();
    let err = result.expect_err("no server without its Redis");
    let recur::ServerError::Redis(recur::redis_pool::PoolError::Unreachable { waited, .. }) = &err
    else {
        panic!("{err:?}");
    };
    assert!(err.to_string().contains("unreachable"), "{err}");
    // It used to stop at 1.5 s, when the next backoff would have overshot.
    assert!(
        *waited >= window && elapsed >= window,
        "gave up after {elapsed:?} (reported {waited:?}), before the {window:?} window was spent"
    );
    // Generous: only a refused connect follows the window's end.
    assert!(elapsed < window + Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test]
async fn binary_exits_non_zero_when_redis_is_unreachable() {
    let port = common::redis::free_port();
    let listen = common::redis::free_port();
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--redis-url",
                &format!("redis://127.0.0.1:{port}"),
                "--redis-startup-secs",
                "0.5",
            ])
            .output(),
    )
    .await
    .expect("exited in time")
    .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("unreachable"), "{log}");
}

/// Registrations do not wait for one another (none holds a lock across
/// Redis round trips), yet racing ones never pass the task cap, and a
/// place freed by a delete is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_never_pass_the_task_cap() {
    let (mut config, _) = config_with(SHARED_URL);
    config.max_tasks = 10;
    let server = TestServer::start_with(config, |s| s).await;
    let spec = spec_every(Duration::from_secs(3600), http_get("http://127.0.0.1:9/"));
    let calls = (0..64).map(|i| {
        let mut client = server.client.clone();
        let spec = spec.clone();
        async move {
            client
                .register_task(pb::RegisterTaskRequest {
                    task_id: format!("race-{i}"),
                    spec: Some(spec),
                    request_id: String::new(),
                    ..Default::default()
                })
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let created = answers.iter().filter(|a| a.is_ok()).count();
    let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    // Never past the cap. Racing registrations count each other while in
    // flight, so near the cap one may be refused that alone would not
    // (task_count.rs): fewer than ten may land, never more.
    assert!((1..=10).contains(&created), "{created} created");
    assert!(
        refused
            .iter()
            .all(|s| s.code() == tonic::Code::ResourceExhausted),
        "{refused:?}"
    );
    // One at a time, the places left fill up to the cap exactly.
    let mut client = server.client.clone();
    let mut more = 0;
    for i in 0..64 {
        let answer = client
            .register_task(pb::RegisterTaskRequest {
                task_id: format!("one-by-one-{i}"),
                spec: Some(spec.clone()),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(_) => more += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                break;
            }
        }
    }
    assert_eq!(created + more, 10);
    let listed = client
        .list_tasks(pb::ListTasksRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 10);

    let gone = &listed.tasks[0].task_id;
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: gone.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: gone.clone(),
        })
        .await
        .unwrap();
    register(&mut client, "after-delete", spec).await;
}
