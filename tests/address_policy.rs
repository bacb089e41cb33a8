//! The outbound address policy of HTTP actions, driven through a real
//! server: every spelling of a refused address, names resolved through the
//! resolver hook, and refused addresses behind a redirect.

mod common;

use std::time::Duration;

use common::{
    http_target::{Behaviour, HttpTarget},
    *,
};
use recur::pb::v1 as pb;
use tonic::Code;

/// A server whose HTTP actions may not reach `deny`.
async fn server_denying(deny: &[&str]) -> TestServer {
    let mut config = test_config();
    config.http_deny = deny.iter().map(|s| s.to_string()).collect();
    TestServer::start_with(config, |s| s).await
}

/// Registers a task calling `url`, triggers it and returns its first result.
async fn run_once(server: &TestServer, id: &str, url: &str) -> pb::TaskResult {
    let mut client = server.client.clone();
    let mut results = stream(&mut client, &[], "", false).await;
    register(
        &mut client,
        id,
        spec_every(Duration::from_secs(3600), http_get(url)),
    )
    .await;
    trigger(&mut client, id).await;
    next_result(&mut results)
        .await
        .expect("stream")
        .expect("a result")
}

#[tokio::test]
async fn every_spelling_of_a_denied_address_is_refused() {
    let target = HttpTarget::start().await;
    let port = target.addr.port();
    let server = server_denying(&["127.0.0.0/8", "::1/128"]).await;
    let urls = [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        // Names go through the resolver hook.
        format!("http://localhost:{port}/"),
        format!("http://localhost.:{port}/"),
        // Denied by default, whatever the flags: link-local and the cloud
        // metadata endpoints. Refused before any packet is sent.
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[fd00:ec2::254]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[::ffff:169.254.169.254]/".to_string(),
        "http://0.0.0.0/".to_string(),
    ];
    for (i, url) in urls.iter().enumerate() {
        let result = run_once(&server, &format!("spelling-{i}"), url).await;
        assert_eq!(outcome(&result), pb::Outcome::Failed, "{url}");
        assert_eq!(result.error, "destination not allowed", "{url}");
    }
    assert!(
        target.received().is_empty(),
        "a denied address was reached: {:?}",
        target.received()
    );
}

#[tokio::test]
async fn a_redirect_to_a_denied_address_is_refused_at_that_hop() {
    let target = HttpTarget::start().await;
    let port = target.addr.port();
    // 127.0.0.1 (the target) is allowed, 127.0.0.2 is not.
    let server = server_denying(&["127.0.0.2/32"]).await;
    let ok = run_once(&server, "allowed", &target.url("/ok")).await;
    assert_eq!(outcome(&ok), pb::Outcome::Succeeded, "{:?}", ok.error);

    for (i, location) in [
        format!("http://127.0.0.2:{port}/"),
        format!("http://0x7f000002:{port}/"),
        format!("http://[::ffff:127.0.0.2]:{port}/"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/hop-{i}");
        target.set(
            &path,
            Behaviour {
                status: Some(302),
                location: Some(location.clone()),
                ..Default::default()
            },
        );
        let result = run_once(&server, &format!("redirected-{i}"), &target.url(&path)).await;
        assert_eq!(outcome(&result), pb::Outcome::Failed, "{location}");
        assert_eq!(result.error, "destination not allowed", "{location}");
    }
}

#[tokio::test]
async fn an_allow_rule_more_specific_than_a_deny_opens_the_address() {
    let target = HttpTarget::start().await;
    let mut config = test_config();
    config.http_deny = vec!["127.0.0.0/8".into()];
    config.http_allow = vec!["127.0.0.1/32".into()];
    let server = TestServer::start_with(config, |s| s).await;
    let result = run_once(&server, "allowed", &target.url("/ok")).await;
    assert_eq!(
        outcome(&result),
        pb::Outcome::Succeeded,
        "{:?}",
        result.error
    );
}

#[tokio::test]
async fn urls_with_user_info_are_refused_at_registration() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let status = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "creds".into(),
            spec: Some(spec_every(
                Duration::from_secs(60),
                http_get("http://user:hunter2@example.com/"),
            )),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("user info");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("spec.action.http.url"),
        "{status:?}"
    );
    assert!(!status.message().contains("hunter2"), "{status:?}");
}
