//! Redis actions confined by their keys: `redis_action_prefix` refuses at
//! registration what would touch keys outside it (found from Redis's key
//! specifications), and `redis_action_url` runs actions as a Redis ACL user,
//! whose refusals come back as the run's error.

mod common;

use std::time::Duration;

use common::{
    redis::{OwnRedis, SHARED_URL, client_names, random_prefix},
    *,
};
use recur::pb::v1 as pb;
use tonic::Code;

fn redis_action(args: &[&str]) -> pb::action::Kind {
    pb::action::Kind::Redis(pb::RedisAction {
        args: args.iter().map(|s| s.to_string()).collect(),
    })
}

fn hourly(args: &[&str]) -> pb::TaskSpec {
    spec_every(Duration::from_secs(3600), redis_action(args))
}

/// A config whose store is on `url`, under a prefix of its own.
fn config_on(url: &str) -> recur::Config {
    let mut config = test_config();
    config.redis_url = Some(url.to_string());
    config.key_prefix = random_prefix();
    config.node_id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    config
}

async fn try_register(
    server: &TestServer,
    id: &str,
    args: &[&str],
) -> Result<pb::Task, tonic::Status> {
    server
        .client
        .clone()
        .register_task(pb::RegisterTaskRequest {
            task_id: id.into(),
            spec: Some(hourly(args)),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Registration is refused with INVALID_ARGUMENT naming `field`.
async fn refused(server: &TestServer, args: &[&str], field: &str) -> String {
    let err = try_register(server, "refused", args)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{args:?}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{field}:")),
        "{args:?}: {}",
        err.message()
    );
    err.message().to_string()
}

/// Triggers `id` and returns its result.
async fn run_once(server: &TestServer, id: &str) -> pb::TaskResult {
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[id], "", false).await;
    trigger(&mut client, id).await;
    next_result(&mut results)
        .await
        .expect("result")
        .expect("a result before the stream ends")
}

#[tokio::test]
async fn keys_are_confined_to_the_action_prefix() {
    // The action prefix is a test's own on the shared Redis.
    let app = format!("{}app:", random_prefix());
    let mut config = config_on(SHARED_URL);
    config.redis_action_prefix = Some(app.clone());
    let own = config.key_prefix.clone();
    let server = TestServer::start_with(config, |s| s).await;
    let key = format!("{app}x");

    try_register(&server, "set", &["SET", &key, "1", "EX", "60"])
        .await
        .expect("a key under the action prefix");
    let result = run_once(&server, "set").await;
    assert_eq!(outcome(&result), pb::Outcome::Succeeded, "{}", result.error);
    let mut conn = common::redis::connect(SHARED_URL).await;
    let value: Option<String> = ::redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("1"));

    let field = "spec.action.redis.args";
    let outside = refused(&server, &["SET", "other", "1"], &format!("{field}[1]")).await;
    assert!(
        outside.contains("outside the Redis action prefix"),
        "{outside}"
    );
    // The destination of a key count command, not only its first key.
    refused(
        &server,
        &[
            "ZUNIONSTORE",
            &format!("{app}d"),
            "2",
            &format!("{app}a"),
            "b",
        ],
        &format!("{field}[4]"),
    )
    .await;
    // Commands whose keys Redis's key specifications cannot tell.
    for args in [&["KEYS", "*"][..], &["SCAN", "0"]] {
        let why = refused(&server, args, field).await;
        assert!(why.contains("cannot be known"), "{args:?}: {why}");
    }
    let sort = refused(
        &server,
        &["SORT", &format!("{app}l"), "BY", "w_*"],
        &format!("{field}[2]"),
    )
    .await;
    assert!(sort.contains("BY and GET"), "{sort}");
    refused(
        &server,
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", &key],
        &format!("{field}[0]"),
    )
    .await;
    // recur's own keys, whatever the action prefix.
    let mine = refused(
        &server,
        &["DEL", &format!("{own}tasks")],
        &format!("{field}[1]"),
    )
    .await;
    assert!(mine.contains("server's own prefix"), "{mine}");

    let _: () = ::redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

/// A private Redis with an ACL user for actions, granted `~app:*` and
/// only what the pool and these commands need.
fn redis_with_action_user(user: &str, grants: &str) -> (OwnRedis, String) {
    let own = OwnRedis::start();
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &own.port.to_string(), "ACL", "SETUSER", user])
        .args([
            "on",
            ">secret",
            "resetkeys",
            "~app:*",
            "resetchannels",
            "-@all",
        ])
        .args(grants.split(' '))
        .output()
        .expect("redis-cli on PATH");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        "OK",
        "{status:?}; redis log:\n{}",
        own.log()
    );
    let url = format!("redis://{user}:secret@127.0.0.1:{}", own.port);
    (own, url)
}

#[tokio::test]
async fn what_the_acl_user_refuses_is_the_runs_error() {
    let (own, action_url) = redis_with_action_user(
        "recur-actions",
        "+ping +client|setname +command|info +get +set +del",
    );
    let mut config = config_on(&own.url());
    config.redis_action_url = Some(action_url);
    config.redis_action_prefix = Some("app:".into());
    let actions_name = format!("recur:{}:actions", config.node_id);
    let server = TestServer::start_with(config, |s| s).await;

    try_register(&server, "set", &["SET", "app:x", "1"])
        .await
        .expect("registered");
    let result = run_once(&server, "set").await;
    assert_eq!(outcome(&result), pb::Outcome::Succeeded, "{}", result.error);
    let names = client_names(&own.url()).await;
    assert!(
        names.contains(&actions_name),
        "actions run on their own named connection: {names:?}"
    );

    // The prefix check lets INCR through; the ACL user has no +incr.
    try_register(&server, "incr", &["INCR", "app:x"])
        .await
        .expect("registered");
    let result = run_once(&server, "incr").await;
    assert_eq!(outcome(&result), pb::Outcome::Failed);
    // Redis's own words, as its documentation and logs show them.
    assert!(
        result
            .error
            .contains("NOPERM this user has no permissions to run the 'incr' command"),
        "{}",
        result.error
    );
    let mut conn = common::redis::connect(&own.url()).await;
    let value: String = ::redis::cmd("GET")
        .arg("app:x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, "1", "nothing ran");

    server.stop().await.unwrap();
    assert!(
        !client_names(&own.url()).await.contains(&actions_name),
        "the actions' pool is closed at shutdown"
    );
}

#[tokio::test]
async fn a_prefix_that_cannot_be_enforced_stops_the_start() {
    // No +command|info: the key specifications cannot be read.
    let (own, action_url) = redis_with_action_user("recur-blind", "+ping +client|setname +get");
    let mut config = config_on(&own.url());
    config.redis_action_url = Some(action_url);
    config.redis_action_prefix = Some("app:".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        WAIT,
        recur::server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("gave up in time");
    let err = result.expect_err("no server that cannot confine its actions");
    assert!(
        matches!(err, recur::ServerError::RedisActions(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("+command|info"), "{err}");
    // Nothing of ours is left connected.
    let names = client_names(&own.url()).await;
    assert!(!names.iter().any(|n| n.starts_with("recur:")), "{names:?}");
}

#[tokio::test]
async fn a_task_stored_before_the_prefix_stays_readable_and_its_runs_are_refused() {
    let own = OwnRedis::start();
    let config = config_on(&own.url());
    let first = TestServer::start_with(config.clone(), |s| s).await;
    try_register(&first, "old", &["SET", "other", "1"])
        .await
        .expect("no prefix yet");
    first.stop().await.unwrap();

    let mut confined = config;
    confined.redis_action_prefix = Some("app:".into());
    let server = TestServer::start_with(confined, |s| s).await;
    let mut client = server.client.clone();
    let task = get(&mut client, "old").await;
    assert_eq!(state(&task), pb::TaskState::Active);
    let result = run_once(&server, "old").await;
    assert_eq!(outcome(&result), pb::Outcome::Failed);
    assert!(
        result.error.contains("outside the Redis action prefix"),
        "{}",
        result.error
    );
    // And it can be cancelled and deleted.
    client
        .cancel_task(pb::CancelTaskRequest {
            task_id: "old".into(),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: "old".into(),
        })
        .await
        .expect("deleted");
    server.stop().await.unwrap();
}
