//! Secrets from outside: header values named by reference and resolved
//! on the server, values encrypted in Redis, and no planted secret in any
//! log line (at trace level) or error message.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    http_target::{Behaviour, HttpTarget},
    redis::{SHARED_URL, random_prefix},
    *,
};
use recur::pb::v1 as pb;
use tonic::Code;

fn with_secret_ref(url: &str, header: &str, secret: &str) -> pb::TaskSpec {
    spec_every(
        Duration::from_secs(3600),
        pb::action::Kind::Http(pb::HttpAction {
            method: "GET".into(),
            url: url.into(),
            secret_headers: [(header.to_string(), secret.to_string())].into(),
            ..Default::default()
        }),
    )
}

fn with_header(url: &str, header: &str, value: &str) -> pb::TaskSpec {
    spec_every(
        Duration::from_secs(3600),
        pb::action::Kind::Http(pb::HttpAction {
            method: "GET".into(),
            url: url.into(),
            headers: [(header.to_string(), value.to_string())].into(),
            ..Default::default()
        }),
    )
}

#[tokio::test]
async fn a_header_can_name_a_server_side_secret() {
    let target = HttpTarget::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let secrets = dir.path().join("secrets.yaml");
    std::fs::write(&secrets, "PRICES_KEY: k-12345\n").expect("write");
    let mut config = test_config();
    config.secrets_file = Some(secrets.clone());
    let mut reload = None;
    let server = TestServer::start_with(config, |s| {
        reload = Some(s.reload_trigger());
        s
    })
    .await;
    let mut client = server.client.clone();

    let status = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "unknown".into(),
            spec: Some(with_secret_ref(&target.url("/"), "X-Api-Key", "NO_SUCH")),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("unknown secret");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("spec.action.http.secret_headers[\"X-Api-Key\"]"),
        "{status:?}"
    );
    let status = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "both".into(),
            spec: Some({
                let mut spec = with_secret_ref(&target.url("/"), "X-Api-Key", "PRICES_KEY");
                if let Some(pb::action::Kind::Http(h)) =
                    spec.action.as_mut().and_then(|a| a.kind.as_mut())
                {
                    h.headers.insert("x-api-key".into(), "inline".into());
                }
                spec
            }),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("the same header twice");
    assert_eq!(status.code(), Code::InvalidArgument);

    let task = register(
        &mut client,
        "prices",
        with_secret_ref(&target.url("/ok"), "X-Api-Key", "PRICES_KEY"),
    )
    .await;
    let Some(pb::action::Kind::Http(http)) = task.spec.and_then(|s| s.action).and_then(|a| a.kind)
    else {
        panic!("an http action");
    };
    assert_eq!(
        http.secret_headers.get("x-api-key").map(String::as_str),
        Some("PRICES_KEY"),
        "the reference reads back, it is not secret"
    );
    trigger(&mut client, "prices").await;
    let received = target.next_request().await;
    assert_eq!(received.headers["x-api-key"], "k-12345");

    // The secret is rotated in the file: the next run sends the new value.
    std::fs::write(&secrets, "PRICES_KEY: k-67890\n").expect("write");
    let reload = reload.expect("trigger");
    reload.reload_now().await;
    trigger(&mut client, "prices").await;
    assert_eq!(target.next_request().await.headers["x-api-key"], "k-67890");

    // Removed: the run fails naming the secret, and nothing is sent.
    std::fs::write(&secrets, "OTHER: x\n").expect("write");
    reload.reload_now().await;
    let mut results = stream(&mut client, &["prices"], "", false).await;
    trigger(&mut client, "prices").await;
    let result = next_result(&mut results)
        .await
        .expect("stream")
        .expect("result");
    assert_eq!(outcome(&result), pb::Outcome::Failed);
    assert!(result.error.contains("\"PRICES_KEY\""), "{}", result.error);
    assert_eq!(target.received().len(), 2);
}

#[tokio::test]
async fn header_values_are_encrypted_in_redis() {
    const PLANTED: &str = "planted-secret-4b1d";
    let target = HttpTarget::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("secret.key");
    std::fs::write(&key, [42_u8; 32]).expect("key");
    let prefix = random_prefix();
    let config = || {
        let mut config = test_config();
        config.redis_url = Some(SHARED_URL.into());
        config.key_prefix = prefix.clone();
        config.secret_key_files = vec![key.clone()];
        config
    };
    let server = TestServer::start_with(config(), |s| s).await;
    let mut client = server.client.clone();
    register(
        &mut client,
        "sealed",
        with_header(
            &target.url("/ok"),
            "Authorization",
            &format!("Bearer {PLANTED}"),
        ),
    )
    .await;
    trigger(&mut client, "sealed").await;
    assert_eq!(
        target.next_request().await.headers["authorization"],
        format!("Bearer {PLANTED}")
    );
    server.stop().await.expect("clean stop");

    // Every key under the prefix, every field and value: no plaintext.
    let mut conn = common::redis::connect(SHARED_URL).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(!keys.is_empty());
    // Read by type, not DUMP: a dump compresses values, so a secret
    // stored in clear need not show in it in one piece.
    let mut scanned = 0;
    for key in &keys {
        let kind: String = ::redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let read = match kind.as_str() {
            "string" => ::redis::cmd("GET").arg(key).clone(),
            "hash" => ::redis::cmd("HGETALL").arg(key).clone(),
            "zset" => ::redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "list" => ::redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
            "set" => ::redis::cmd("SMEMBERS").arg(key).clone(),
            "stream" => ::redis::cmd("XRANGE").arg(key).arg("-").arg("+").clone(),
            other => panic!("{key}: unexpected type {other}"),
        };
        let value: ::redis::Value = read.query_async(&mut conn).await.expect("read");
        let mut bytes = Vec::new();
        flatten(&value, &mut bytes);
        scanned += bytes.len();
        assert!(
            !bytes
                .windows(PLANTED.len())
                .any(|w| w == PLANTED.as_bytes()),
            "{key} ({kind}) holds the secret in clear"
        );
    }
    assert!(scanned > 0);

    // A restart with the same key reads it back and sends it.
    let server = TestServer::start_with(config(), |s| s).await;
    let mut client = server.client.clone();
    trigger(&mut client, "sealed").await;
    assert_eq!(
        target.next_request().await.headers["authorization"],
        format!("Bearer {PLANTED}")
    );
    server.stop().await.expect("clean stop");
    let _: () = ::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

/// Every byte string in a reply, concatenated with separators.
fn flatten(value: &::redis::Value, out: &mut Vec<u8>) {
    use ::redis::Value;
    match value {
        Value::BulkString(b) => {
            out.extend_from_slice(b);
            out.push(0);
        }
        Value::SimpleString(s) => {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}

#[tokio::test]
async fn a_tenant_names_only_the_secrets_given_to_its_namespace() {
    let target = HttpTarget::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let secrets = dir.path().join("secrets.yaml");
    std::fs::write(
        &secrets,
        "OPS_KEY: ops-only\nTEAM_A_KEY: {value: for-team-a, namespaces: [team-a.]}\n",
    )
    .expect("write");
    let access = dir.path().join("access.yaml");
    let token = |name: &str, ns: Option<&str>| {
        let mut entry = format!(
            "  - name: {name}\n    sha256: {}\n    scopes: [read, write]\n",
            recur::access::token::digest_hex(name)
        );
        if let Some(ns) = ns {
            entry.push_str(&format!("    namespace: {ns}\n"));
        }
        entry
    };
    std::fs::write(
        &access,
        format!(
            "tokens:\n{}{}{}",
            token("ops", None),
            token("team-a", Some("team-a.")),
            token("team-b", Some("team-b."))
        ),
    )
    .expect("write");
    let mut config = test_config();
    config.secrets_file = Some(secrets);
    config.auth_tokens = Some(access);
    let server = TestServer::start_with(config, |s| s).await;
    let channel = common::pki::channel(server.addr).await;
    let client = |name: &str| common::pki::with_token(channel.clone(), Some(name));
    let register = |id: &str, secret: &str| pb::RegisterTaskRequest {
        task_id: id.into(),
        spec: Some(with_secret_ref(&target.url("/ok"), "X-Key", secret)),
        request_id: String::new(),
        ..Default::default()
    };

    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.message().to_string()
    };
    // Another namespace's secret and an operator's secret read the same as
    // one that does not exist.
    let theirs = refused(
        client("team-b")
            .register_task(register("team-b.steal", "TEAM_A_KEY"))
            .await
            .expect_err("not team-b's"),
    );
    let ops = refused(
        client("team-b")
            .register_task(register("team-b.steal", "OPS_KEY"))
            .await
            .expect_err("not for tenants"),
    );
    let none = refused(
        client("team-b")
            .register_task(register("team-b.steal", "NO_SUCH_KEY"))
            .await
            .expect_err("unknown"),
    );
    for message in [&theirs, &ops, &none] {
        assert!(
            message.contains("does not have for this caller"),
            "{message}"
        );
    }

    client("team-a")
        .register_task(register("team-a.ok", "TEAM_A_KEY"))
        .await
        .expect("its own secret");
    client("ops")
        .register_task(register("ops-task", "OPS_KEY"))
        .await
        .expect("an operator's secret");
    // An operator putting team-a's secret on team-b's task: the run does
    // not get it.
    client("ops")
        .register_task(register("team-b.borrowed", "TEAM_A_KEY"))
        .await
        .expect("operators may name any secret");
    let mut ops_client = client("ops");
    let mut results = ops_client
        .stream_results(pb::StreamResultsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    for id in ["team-a.ok", "team-b.borrowed"] {
        ops_client
            .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
            .await
            .expect("trigger");
        let result = tokio::time::timeout(WAIT, results.message())
            .await
            .expect("in time")
            .expect("result")
            .expect("open");
        assert_eq!(result.task_id, id);
        let expected = if id == "team-a.ok" {
            pb::Outcome::Succeeded
        } else {
            pb::Outcome::Failed
        };
        assert_eq!(outcome(&result), expected, "{id}: {}", result.error);
    }
    let received = target.received();
    assert_eq!(received.len(), 1, "only team-a's task called out");
    assert_eq!(received[0].headers["x-key"], "for-team-a");

    // Moving a task with stored headers to another host takes resending them.
    let status = client("team-a")
        .update_task(pb::UpdateTaskRequest {
            task_id: "team-a.ok".into(),
            spec: Some(with_secret_ref(
                "http://elsewhere.example:8080/",
                "X-Key",
                "x",
            )),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["action.http.url".into()],
            }),
            ..Default::default()
        })
        .await
        .expect_err("moving the headers");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("update_mask"), "{status:?}");
    client("team-a")
        .update_task(pb::UpdateTaskRequest {
            task_id: "team-a.ok".into(),
            spec: Some(with_secret_ref(&target.url("/moved"), "X-Key", "x")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["action.http.url".into()],
            }),
            ..Default::default()
        })
        .await
        .expect("the same host keeps its headers");
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error_even_at_trace() {
    const INLINE: &str = "inline-secret-9c2e";
    const REFERENCED: &str = "referenced-secret-7a3f";
    const TOKEN: &str = "token-secret-5d8b";
    let target = HttpTarget::start().await;
    // A second address for the redirect target, so the redirect crosses hosts.
    let other = HttpTarget::start().await;
    target.set(
        "/away",
        Behaviour {
            status: Some(302),
            location: Some(format!("http://localhost:{}/landed", other.addr.port())),
            ..Default::default()
        },
    );
    target.set(
        "/fail",
        Behaviour {
            status: Some(500),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().expect("dir");
    let access = dir.path().join("access.yaml");
    std::fs::write(
        &access,
        format!(
            "tokens:\n  - name: ci\n    sha256: {}\n    scopes: [admin]\n",
            recur::access::token::digest_hex(TOKEN)
        ),
    )
    .expect("write");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let log = tempfile::NamedTempFile::new().expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--auth-tokens", &access.display().to_string()])
        .env("RUST_LOG", "trace")
        .env("RECUR_SECRET_REFERENCED", REFERENCED)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn recur");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(child.try_wait().expect("wait").is_none(), "recur exited");
        assert!(std::time::Instant::now() < deadline, "recur did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let child = Kill(child);
    let mut client = common::pki::with_token(common::pki::channel(addr).await, Some(TOKEN));

    let mut errors = Vec::new();
    let mut results = client
        .stream_results(pb::StreamResultsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    for (id, path) in [("ok", "/ok"), ("redirect", "/away"), ("fail", "/fail")] {
        let mut spec = with_header(
            &target.url(path),
            "Authorization",
            &format!("Bearer {INLINE}"),
        );
        if let Some(pb::action::Kind::Http(h)) = spec.action.as_mut().and_then(|a| a.kind.as_mut())
        {
            h.secret_headers
                .insert("X-Api-Key".into(), "REFERENCED".into());
        }
        client
            .register_task(pb::RegisterTaskRequest {
                task_id: id.into(),
                spec: Some(spec),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .expect("register");
        client
            .trigger_task(pb::TriggerTaskRequest { task_id: id.into() })
            .await
            .expect("trigger");
        let result = tokio::time::timeout(WAIT, results.message())
            .await
            .expect("in time")
            .expect("result")
            .expect("open");
        errors.push(result.error.clone());
        errors.push(String::from_utf8_lossy(&result.output).into_owned());
        let task = client
            .get_task(pb::GetTaskRequest {
                task_id: id.into(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        errors.push(format!("{task:?}"));
    }
    // The redirect crossed hosts: the landing page got neither header.
    let landed = other.next_request().await;
    assert!(landed.headers.get("authorization").is_none());
    assert!(landed.headers.get("x-api-key").is_none());
    // A header value that is refused is not echoed.
    let status = client
        .register_task(pb::RegisterTaskRequest {
            task_id: "bad".into(),
            spec: Some(with_header(
                &target.url("/"),
                "X-Bad",
                &format!("{INLINE}\n"),
            )),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("bad header value");
    errors.push(status.message().to_string());
    let status =
        common::pki::with_token(common::pki::channel(addr).await, Some(&format!("{TOKEN}x")))
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .expect_err("bad token");
    errors.push(status.message().to_string());
    drop(child);

    let logs = std::fs::read_to_string(log.path()).expect("log");
    assert!(logs.lines().count() > 100, "trace logging is on:\n{logs}");
    for secret in [INLINE, REFERENCED, TOKEN] {
        for (i, line) in logs.lines().enumerate() {
            assert!(
                !line.contains(secret),
                "log line {i} holds {secret}: {line}"
            );
        }
        for message in &errors {
            assert!(
                !message.contains(secret),
                "an answer holds {secret}: {message}"
            );
        }
    }
    // The first request carried both headers: the secrets were in play.
    let first = target.next_request().await;
    assert_eq!(first.headers["authorization"], format!("Bearer {INLINE}"));
    assert_eq!(first.headers["x-api-key"], REFERENCED);
}
