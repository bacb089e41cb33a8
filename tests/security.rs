//! Security from outside: the secure-by-default start, bearer tokens and
//! scopes on every RPC, TLS and mTLS with certificates that reload, and
//! tenants confined to their namespace.

mod common;

use std::time::Duration;

use common::{
    TestServer, WAIT, next_event,
    pki::{self, Ca, TokenClient, tls_channel, with_token},
    spec_every, test_config,
};
use recur::{
    Config, Server, ServerError, TlsFiles,
    access::{methods, token::digest_hex},
    pb::v1 as pb,
};
use tonic::Code;

const READER: &str = "reader-token";
const WRITER: &str = "writer-token";
const ADMIN: &str = "admin-token";
const TEAM_A: &str = "team-a-token";
const TEAM_B: &str = "team-b-token";

/// An access file with one token per scope and two tenants.
fn access_file() -> String {
    let token = |name: &str, token: &str, scopes: &str, ns: Option<&str>| {
        let mut entry = format!(
            "  - name: {name}\n    sha256: {}\n    scopes: [{scopes}]\n",
            digest_hex(token)
        );
        if let Some(ns) = ns {
            entry.push_str(&format!("    namespace: {ns}\n"));
        }
        entry
    };
    format!(
        "tokens:\n{}{}{}{}{}",
        token("reader", READER, "read", None),
        token("writer", WRITER, "write", None),
        token("admin", ADMIN, "admin", None),
        token("team-a", TEAM_A, "read, write", Some("team-a.")),
        token("team-b", TEAM_B, "read, write", Some("team-b.")),
    )
}

/// A server on loopback with the access file; the directory holds it.
async fn with_tokens() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config();
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &access_file()));
    config.min_interval = Duration::from_millis(50);
    (TestServer::start_with(config, |s| s).await, dir)
}

fn a_spec() -> pb::TaskSpec {
    spec_every(
        Duration::from_secs(3600),
        common::http_get("http://127.0.0.1:9/"),
    )
}

/// Calls the RPC at `path` with harmless arguments; only whether the access
/// layer let it through matters to the callers of this.
async fn call(client: &mut TokenClient, path: &str) -> Result<(), tonic::Status> {
    let id = || "some-task".to_string();
    let method = path.rsplit('/').next().expect("method");
    match method {
        "GetTask" => client
            .get_task(pb::GetTaskRequest {
                task_id: id(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListTasks" => client
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .map(drop),
        "StreamResults" => client
            .stream_results(pb::StreamResultsRequest {
                history_only: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "RegisterTask" => client
            .register_task(pb::RegisterTaskRequest {
                task_id: id(),
                spec: Some(a_spec()),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .map(drop),
        "UpdateTask" => client
            .update_task(pb::UpdateTaskRequest {
                task_id: id(),
                spec: Some(a_spec()),
                update_mask: None,
                ..Default::default()
            })
            .await
            .map(drop),
        "PauseTask" => client
            .pause_task(pb::PauseTaskRequest {
                task_id: id(),
                reason: String::new(),
            })
            .await
            .map(drop),
        "ResumeTask" => client
            .resume_task(pb::ResumeTaskRequest { task_id: id() })
            .await
            .map(drop),
        "TriggerTask" => client
            .trigger_task(pb::TriggerTaskRequest { task_id: id() })
            .await
            .map(drop),
        "CancelTask" => client
            .cancel_task(pb::CancelTaskRequest {
                task_id: id(),
                reason: String::new(),
            })
            .await
            .map(drop),
        "DeleteTask" => client
            .delete_task(pb::DeleteTaskRequest { task_id: id() })
            .await
            .map(drop),
        "WhoAmI" => client.who_am_i(pb::WhoAmIRequest {}).await.map(drop),
        "WatchTasks" => client
            .watch_tasks(pb::WatchTasksRequest::default())
            .await
            .map(drop),
        other => panic!("{other} is in the scope table but this test cannot call it: add it"),
    }
}

fn is_auth_error(result: &Result<(), tonic::Status>) -> bool {
    matches!(result, Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
}

#[tokio::test]
async fn beyond_loopback_a_server_without_credentials_does_not_start() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let error = Server::new(test_config())
        .run(listener, std::future::pending())
        .await
        .expect_err("refused");
    assert!(matches!(error, ServerError::Config(_)), "{error:?}");
    let message = error.to_string();
    for flag in ["--tls-cert", "--auth-tokens", "--insecure"] {
        assert!(message.contains(flag), "{message}");
    }
    // Explicitly insecure, it serves.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut config: Config = test_config();
    config.insecure = true;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server =
        tokio::spawn(Server::new(config).run(listener, shutdown.clone().cancelled_owned()));
    let mut client = with_token(pki::channel(([127, 0, 0, 1], port).into()).await, None);
    client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("served");
    shutdown.cancel();
    server.await.expect("joined").expect("clean stop");
}

#[tokio::test]
async fn every_rpc_needs_its_scope() {
    let (server, _dir) = with_tokens().await;
    let channel = pki::channel(server.addr).await;
    for (path, needed) in methods::TASK_SERVICE {
        let result = call(&mut with_token(channel.clone(), None), path).await;
        assert_eq!(
            result.as_ref().map_err(|s| s.code()),
            Err(Code::Unauthenticated),
            "{path} without a token"
        );
        let result = call(&mut with_token(channel.clone(), Some("not-a-token")), path).await;
        let status = result.expect_err("unknown token");
        assert_eq!(status.code(), Code::Unauthenticated, "{path}");
        assert!(!status.message().contains("not-a-token"), "{status:?}");

        let result = call(&mut with_token(channel.clone(), Some(ADMIN)), path).await;
        assert!(!is_auth_error(&result), "{path} as admin: {result:?}");
        let methods::Needed::Scope(scope) = needed else {
            // Any valid credential will do.
            assert_eq!(*needed, methods::Needed::Authenticated, "{path}");
            for token in [READER, WRITER] {
                let result = call(&mut with_token(channel.clone(), Some(token)), path).await;
                assert!(!is_auth_error(&result), "{path}: {result:?}");
            }
            continue;
        };
        for (token, holds) in [(READER, "read"), (WRITER, "write")] {
            let result = call(&mut with_token(channel.clone(), Some(token)), path).await;
            if holds == scope.name() {
                assert!(!is_auth_error(&result), "{path} with {holds}: {result:?}");
            } else {
                let status = result.expect_err("wrong scope");
                assert_eq!(status.code(), Code::PermissionDenied, "{path} with {holds}");
                assert!(
                    status.message().contains(&format!("{:?}", scope.name())),
                    "{path}: {status:?} should name the scope needed"
                );
            }
        }
    }
}

#[tokio::test]
async fn health_is_open_and_reflection_needs_read() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (server, _dir) = with_tokens().await;
    let channel = pki::channel(server.addr).await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let list = || {
        tokio_stream::once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
    };
    let status = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(list())
        .await
        .expect_err("reflection needs a token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(list());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {READER}").parse().expect("ascii"),
    );
    ServerReflectionClient::new(channel)
        .server_reflection_info(request)
        .await
        .expect("reflection with read");
}

#[tokio::test]
async fn the_access_file_reloads_and_a_broken_one_keeps_the_last() {
    let dir = tempfile::tempdir().expect("dir");
    let first = format!(
        "tokens:\n  - name: old\n    sha256: {}\n    scopes: [read]\n",
        digest_hex("old-token")
    );
    let mut config = test_config();
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &first));
    let mut reload = None;
    let server = TestServer::start_with(config, |s| {
        reload = Some(s.reload_trigger());
        s
    })
    .await;
    let reload = reload.expect("trigger");
    let channel = pki::channel(server.addr).await;
    let list = |token: &'static str| {
        let channel = channel.clone();
        async move {
            with_token(channel, Some(token))
                .list_tasks(pb::ListTasksRequest::default())
                .await
                .map(drop)
                .map_err(|s| s.code())
        }
    };
    assert_eq!(list("old-token").await, Ok(()));
    assert_eq!(list("new-token").await, Err(Code::Unauthenticated));

    // A changed file applies by itself, without a signal.
    let second = format!(
        "{first}  - name: new\n    sha256: {}\n    scopes: [read]\n",
        digest_hex("new-token")
    );
    pki::write(dir.path(), "access.yaml", &second);
    common::eventually("the changed access file applies", || async {
        list("new-token").await.is_ok()
    })
    .await;

    // A broken file keeps the one in force.
    pki::write(dir.path(), "access.yaml", "tokens: [oops");
    reload.reload_now().await;
    assert_eq!(list("old-token").await, Ok(()));
    assert_eq!(list("new-token").await, Ok(()));

    // A removed token stops working at the next reload.
    pki::write(dir.path(), "access.yaml", &first);
    reload.reload_now().await;
    assert_eq!(list("new-token").await, Err(Code::Unauthenticated));
}

#[tokio::test]
async fn tls_with_tokens_serves_only_tls() {
    let ca = Ca::new("recur test CA");
    let server_pem = ca.server();
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config();
    config.tls = Some(TlsFiles::new(
        pki::write(dir.path(), "cert.pem", &server_pem.cert),
        pki::write(dir.path(), "key.pem", &server_pem.key),
    ));
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &access_file()));
    let (addr, _server) = start_tls(config).await;

    let channel = tls_channel(addr, &ca.pem(), None).await.expect("tls");
    with_token(channel.clone(), Some(READER))
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list over TLS with a token");
    let status = with_token(channel, None)
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Plaintext on the TLS port gets nowhere.
    let plain = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let result = with_token(plain, Some(READER))
        .list_tasks(pb::ListTasksRequest::default())
        .await;
    assert!(result.is_err(), "plaintext call served: {result:?}");

    // A client that does not trust the CA refuses the server.
    let other = Ca::new("another CA");
    let served = match tls_channel(addr, &other.pem(), None).await {
        Err(_) => false,
        Ok(channel) => with_token(channel, Some(READER))
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .is_ok(),
    };
    assert!(!served, "a client that does not trust the CA was served");
}

/// A server on loopback that the test only reaches through TLS. The
/// listener is bound first, so no wait is needed before connecting.
async fn start_tls(config: Config) -> (std::net::SocketAddr, TlsServer) {
    start_tls_with(config, |s| s).await
}

async fn start_tls_with(
    config: Config,
    build: impl FnOnce(Server) -> Server,
) -> (std::net::SocketAddr, TlsServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle =
        tokio::spawn(build(Server::new(config)).run(listener, shutdown.clone().cancelled_owned()));
    (addr, TlsServer { shutdown, handle })
}

/// Stops the server when the test ends.
struct TlsServer {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.handle.abort();
    }
}

#[tokio::test]
async fn mtls_takes_the_certificate_subject_as_the_caller() {
    let ca = Ca::new("recur clients CA");
    let server_pem = ca.server();
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config();
    config.tls = Some(
        TlsFiles::new(
            pki::write(dir.path(), "cert.pem", &server_pem.cert),
            pki::write(dir.path(), "key.pem", &server_pem.key),
        )
        .client_ca(pki::write(dir.path(), "ca.pem", &ca.pem())),
    );
    config.auth_tokens = Some(pki::write(
        dir.path(),
        "access.yaml",
        "subjects:\n  - subject: \"CN=deployer,O=acme\"\n    scopes: [admin]\n  - subject: \"CN=viewer,O=acme\"\n    scopes: [read]\n",
    ));
    let (addr, _server) = start_tls(config).await;
    let register = |channel: tonic::transport::Channel| async move {
        with_token(channel, None)
            .register_task(pb::RegisterTaskRequest {
                task_id: "deploy".into(),
                spec: Some(a_spec()),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .map(drop)
    };

    let deployer = ca.client("deployer", "acme");
    let channel = tls_channel(addr, &ca.pem(), Some(&deployer))
        .await
        .expect("mTLS");
    register(channel).await.expect("deployer is admin");

    let viewer = ca.client("viewer", "acme");
    let channel = tls_channel(addr, &ca.pem(), Some(&viewer))
        .await
        .expect("mTLS");
    let status = register(channel.clone())
        .await
        .expect_err("viewer reads only");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("CN=viewer,O=acme"), "{status:?}");
    with_token(channel, None)
        .get_task(pb::GetTaskRequest {
            task_id: "deploy".into(),
            ..Default::default()
        })
        .await
        .expect("viewer reads");

    let stranger = ca.client("stranger", "elsewhere");
    let channel = tls_channel(addr, &ca.pem(), Some(&stranger))
        .await
        .expect("mTLS");
    let status = register(channel).await.expect_err("not in the file");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("CN=stranger,O=elsewhere"),
        "{status:?}"
    );

    // No certificate, or one from another CA: the handshake fails, so no
    // call is served.
    for identity in [None, Some(Ca::new("rogue CA").client("deployer", "acme"))] {
        let served = match tls_channel(addr, &ca.pem(), identity.as_ref()).await {
            Err(_) => false,
            Ok(channel) => register(channel).await.is_ok(),
        };
        assert!(!served, "served without a certificate the CA signed");
    }
}

#[tokio::test]
async fn a_renewed_certificate_applies_to_new_connections_and_spares_open_ones() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let dir = tempfile::tempdir().expect("dir");
    let old = old_ca.server();
    let mut config = test_config();
    config.tls = Some(TlsFiles::new(
        pki::write(dir.path(), "cert.pem", &old.cert),
        pki::write(dir.path(), "key.pem", &old.key),
    ));
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &access_file()));
    let mut reload = None;
    let (addr, _server) = start_tls_with(config, |s| {
        reload = Some(s.reload_trigger());
        s
    })
    .await;
    let reload = reload.expect("trigger");
    let mut open = with_token(
        tls_channel(addr, &old_ca.pem(), None).await.expect("tls"),
        Some(READER),
    );
    open.list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("old certificate");

    // A half-written renewal (new certificate, old key) is refused and the
    // old pair stays in force.
    let new = new_ca.server();
    pki::write(dir.path(), "cert.pem", &new.cert);
    reload.reload_now().await;
    with_token(
        tls_channel(addr, &old_ca.pem(), None).await.expect("tls"),
        Some(READER),
    )
    .list_tasks(pb::ListTasksRequest::default())
    .await
    .expect("the old pair is still served");

    pki::write(dir.path(), "key.pem", &new.key);
    reload.reload_now().await;
    with_token(
        tls_channel(addr, &new_ca.pem(), None).await.expect("tls"),
        Some(READER),
    )
    .list_tasks(pb::ListTasksRequest::default())
    .await
    .expect("the new certificate is served");
    let stale = match tls_channel(addr, &old_ca.pem(), None).await {
        Err(_) => false,
        Ok(channel) => with_token(channel, Some(READER))
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .is_ok(),
    };
    assert!(!stale, "a new connection still got the old certificate");
    // The connection opened before the renewal goes on.
    open.list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("open connection survives the reload");
}

#[tokio::test]
async fn a_tenant_sees_creates_and_streams_only_its_namespace() {
    let target = common::http_target::HttpTarget::start().await;
    let (server, _dir) = with_tokens().await;
    let channel = pki::channel(server.addr).await;
    let mut a = with_token(channel.clone(), Some(TEAM_A));
    let mut b = with_token(channel.clone(), Some(TEAM_B));
    let mut admin = with_token(channel, Some(ADMIN));
    let spec = || {
        spec_every(
            Duration::from_secs(3600),
            common::http_get(&target.url("/")),
        )
    };
    let register = |id: &str, request_id: &str| pb::RegisterTaskRequest {
        task_id: id.into(),
        spec: Some(spec()),
        request_id: request_id.into(),
        ..Default::default()
    };

    a.register_task(register("team-a.fetch", ""))
        .await
        .expect("own namespace");
    b.register_task(register("team-b.fetch", ""))
        .await
        .expect("own namespace");
    let status = a
        .register_task(register("team-b.intruder", ""))
        .await
        .expect_err("another namespace");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("team-a."), "{status:?}");

    // Generated ids land in the namespace, and request ids are per tenant.
    let mine = a
        .register_task(register("", "same-request"))
        .await
        .expect("generated id")
        .into_inner();
    assert!(mine.task_id.starts_with("team-a."), "{}", mine.task_id);
    let theirs = b
        .register_task(register("", "same-request"))
        .await
        .expect("generated id")
        .into_inner();
    assert!(theirs.task_id.starts_with("team-b."), "{}", theirs.task_id);

    // Another namespace's task is NOT_FOUND, like one that does not exist.
    let absent = b
        .get_task(pb::GetTaskRequest {
            task_id: "team-b.nothing".into(),
            ..Default::default()
        })
        .await
        .expect_err("absent");
    for id in ["team-a.fetch", mine.task_id.as_str()] {
        let status = b
            .get_task(pb::GetTaskRequest {
                task_id: id.into(),
                ..Default::default()
            })
            .await
            .expect_err("hidden");
        assert_eq!(status.code(), absent.code(), "{id}");
        let status = b
            .pause_task(pb::PauseTaskRequest {
                task_id: id.into(),
                reason: String::new(),
            })
            .await
            .expect_err("hidden");
        assert_eq!(status.code(), Code::NotFound, "{id}");
    }

    let ids = |tasks: Vec<pb::Task>| {
        let mut ids: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
        ids.sort();
        ids
    };
    let listed = ids(a
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner()
        .tasks);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|id| id.starts_with("team-a.")),
        "{listed:?}"
    );
    let all = admin
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(all.len(), 4);

    // A stream of every task carries only the caller's namespace: team-a's
    // result comes first, and team-b's stream skips it.
    let open = |client: &mut TokenClient| {
        let mut client = client.clone();
        async move {
            client
                .stream_results(pb::StreamResultsRequest::default())
                .await
                .expect("stream")
                .into_inner()
        }
    };
    let mut b_stream = open(&mut b).await;
    let mut admin_stream = open(&mut admin).await;
    let status = b
        .stream_results(pb::StreamResultsRequest {
            task_ids: vec!["team-a.fetch".into()],
            ..Default::default()
        })
        .await
        .expect_err("another namespace's task");
    assert_eq!(status.code(), Code::NotFound);
    a.trigger_task(pb::TriggerTaskRequest {
        task_id: "team-a.fetch".into(),
    })
    .await
    .expect("trigger");
    let first = tokio::time::timeout(WAIT, admin_stream.message())
        .await
        .expect("in time")
        .expect("result")
        .expect("open");
    assert_eq!(first.task_id, "team-a.fetch");
    b.trigger_task(pb::TriggerTaskRequest {
        task_id: "team-b.fetch".into(),
    })
    .await
    .expect("trigger");
    let seen = tokio::time::timeout(WAIT, b_stream.message())
        .await
        .expect("in time")
        .expect("result")
        .expect("open");
    assert_eq!(seen.task_id, "team-b.fetch", "team-b saw {seen:?}");

    // History: more than a replay page (256) of team-b's results, then
    // team-a's replay skips them all and ends, holding only its own.
    for _ in 0..300 {
        b.trigger_task(pb::TriggerTaskRequest {
            task_id: "team-b.fetch".into(),
        })
        .await
        .expect("trigger");
        let result = tokio::time::timeout(WAIT, b_stream.message())
            .await
            .expect("in time")
            .expect("result")
            .expect("open");
        assert_eq!(result.task_id, "team-b.fetch");
    }
    let mut history = a
        .stream_results(pb::StreamResultsRequest {
            history_only: true,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(result) = tokio::time::timeout(WAIT, history.message())
        .await
        .expect("the replay ends")
        .expect("replay")
    {
        replayed.push(result.task_id);
    }
    assert_eq!(replayed, ["team-a.fetch"]);
}

#[tokio::test]
async fn calls_that_change_tasks_leave_one_audit_line_each() {
    let dir = tempfile::tempdir().expect("dir");
    let audit_path = dir.path().join("audit.jsonl");
    let mut config = test_config();
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &access_file()));
    config.audit_log = Some(audit_path.clone());
    let server = TestServer::start_with(config, |s| s).await;
    let channel = pki::channel(server.addr).await;
    let mut a = with_token(channel.clone(), Some(TEAM_A));
    let mut reader = with_token(channel, Some(READER));

    a.register_task(pb::RegisterTaskRequest {
        task_id: "team-a.audited".into(),
        spec: Some(a_spec()),
        request_id: String::new(),
        ..Default::default()
    })
    .await
    .expect("register");
    a.pause_task(pb::PauseTaskRequest {
        task_id: "team-a.audited".into(),
        reason: String::new(),
    })
    .await
    .expect("pause");
    a.get_task(pb::GetTaskRequest {
        task_id: "team-a.audited".into(),
        ..Default::default()
    })
    .await
    .expect("reads are not audited by default");
    let status = a
        .resume_task(pb::ResumeTaskRequest {
            task_id: "team-b.other".into(),
        })
        .await
        .expect_err("another namespace");
    assert_eq!(status.code(), Code::NotFound);
    reader
        .cancel_task(pb::CancelTaskRequest {
            task_id: "team-a.audited".into(),
            reason: String::new(),
        })
        .await
        .expect_err("read scope");

    let read_lines = || {
        std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    common::eventually("four audit lines", || async { read_lines().len() >= 4 }).await;
    let lines = read_lines();
    let summary: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            let text = |k: &str| l[k].as_str().unwrap_or("").to_string();
            (
                text("caller"),
                text("method"),
                text("task_id"),
                text("outcome"),
            )
        })
        .collect();
    let row = |c: &str, m: &str, t: &str, o: &str| (c.into(), m.into(), t.into(), o.into());
    assert_eq!(
        summary,
        vec![
            row("team-a", "RegisterTask", "team-a.audited", "OK"),
            row("team-a", "PauseTask", "team-a.audited", "OK"),
            row("team-a", "ResumeTask", "team-b.other", "NOT_FOUND"),
            row("reader", "CancelTask", "", "PERMISSION_DENIED"),
        ]
    );
    assert_eq!(lines[0]["namespace"], "team-a.");
    assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let raw = std::fs::read_to_string(&audit_path).expect("audit file");
    for secret in [TEAM_A, READER] {
        assert!(!raw.contains(secret), "a token in the audit log");
    }
}

#[tokio::test]
async fn quotas_bind_one_namespace_and_spare_the_others() {
    use tonic_types::StatusExt;
    let dir = tempfile::tempdir().expect("dir");
    let token = |name: &str, ns: &str| {
        format!(
            "  - name: {name}\n    sha256: {}\n    scopes: [read, write]\n    namespace: {ns}\n",
            digest_hex(&format!("{name}-token"))
        )
    };
    let file = format!(
        "tokens:\n{}{}{}quotas:\n  default:\n    max_tasks: 2\n    max_streams: 1\n  namespaces:\n    \
         a.:\n      min_interval: 10s\n    c.:\n      calls_per_second: 0.5\n      burst: 3\n",
        token("a", "a."),
        token("b", "b."),
        token("c", "c."),
    );
    let mut config = test_config();
    config.auth_tokens = Some(pki::write(dir.path(), "access.yaml", &file));
    config.min_interval = Duration::from_millis(50);
    let server = TestServer::start_with(config, |s| s).await;
    let channel = pki::channel(server.addr).await;
    let mut a = with_token(channel.clone(), Some("a-token"));
    let mut b = with_token(channel.clone(), Some("b-token"));
    let mut c = with_token(channel, Some("c-token"));
    let every = |secs: u64, id: &str| pb::RegisterTaskRequest {
        task_id: id.into(),
        spec: Some(spec_every(
            Duration::from_secs(secs),
            common::http_get("http://127.0.0.1:9/"),
        )),
        request_id: String::new(),
        ..Default::default()
    };

    // min_interval: a's own quota, not b's.
    let status = a
        .register_task(every(1, "a.fast"))
        .await
        .expect_err("too often");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("min_interval"), "{status:?}");
    assert!(
        status.get_details_retry_info().is_none(),
        "waiting does not help"
    );
    b.register_task(every(1, "b.fast"))
        .await
        .expect("b has no min_interval");

    // max_tasks, counted in the store: a's third task is refused, b goes on.
    a.register_task(every(60, "a.one")).await.expect("first");
    a.register_task(every(60, "a.two")).await.expect("second");
    let status = a
        .register_task(every(60, "a.three"))
        .await
        .expect_err("third");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("max_tasks"), "{status:?}");
    // A retry of a registration that landed still gets its task at the cap.
    let retried = a
        .register_task(every(60, "a.two"))
        .await
        .expect("a retry is answered with its task")
        .into_inner();
    assert_eq!(retried.task_id, "a.two");
    b.register_task(every(60, "b.two"))
        .await
        .expect("b is under its own count");

    // max_streams: a's second stream waits for its first, b's opens.
    let stream = |client: &mut TokenClient| {
        let mut client = client.clone();
        async move {
            client
                .stream_results(pb::StreamResultsRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = stream(&mut a).await.expect("a's first stream");
    let status = stream(&mut a).await.expect_err("a's second stream");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("max_streams"), "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    let _b_stream = stream(&mut b).await.expect("b's stream");
    drop(first);
    common::eventually("a's stream slot is free again", || {
        let mut a = a.clone();
        async move { stream(&mut a).await.is_ok() }
    })
    .await;

    // calls_per_second: c's burst of 3, then RetryInfo; b is not slowed.
    for _ in 0..3 {
        c.list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("within the burst");
    }
    let status = c
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect_err("over the rate");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("calls_per_second"), "{status:?}");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    for _ in 0..10 {
        b.list_tasks(pb::ListTasksRequest::default())
            .await
            .expect("b is not rate limited");
    }
}

#[tokio::test]
async fn a_namespace_stream_quota_holds_across_replicas() {
    let dir = tempfile::tempdir().expect("dir");
    let file = format!(
        "tokens:\n  - name: a\n    sha256: {}\n    scopes: [read]\n    namespace: a.\n\
         quotas:\n  default:\n    max_streams: 1\n",
        digest_hex("a-token")
    );
    let access = pki::write(dir.path(), "access.yaml", &file);
    let prefix = common::redis::random_prefix();
    let replica = || {
        let mut config = test_config();
        config.redis_url = Some(common::redis::SHARED_URL.into());
        config.key_prefix = prefix.clone();
        config.auth_tokens = Some(access.clone());
        TestServer::start_with(config, |s| s)
    };
    let (one, two) = (replica().await, replica().await);
    let open = |server: &TestServer| {
        let addr = server.addr;
        async move {
            with_token(pki::channel(addr).await, Some("a-token"))
                .stream_results(pb::StreamResultsRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = open(&one).await.expect("a's stream on one replica");
    let status = open(&two)
        .await
        .expect_err("a's second stream, on the other");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("max_streams"), "{status:?}");
    drop(first);
    common::eventually("the slot given back on one is free on two", || async {
        open(&two).await.is_ok()
    })
    .await;
    one.stop().await.expect("stop");
    two.stop().await.expect("stop");
}

#[tokio::test]
async fn who_am_i_and_watch_tasks_answer_for_the_token() {
    let (server, _dir) = with_tokens().await;
    let channel = pki::channel(server.addr).await;
    let mut a = with_token(channel.clone(), Some(TEAM_A));
    let mut b = with_token(channel.clone(), Some(TEAM_B));
    let mut reader = with_token(channel.clone(), Some(READER));

    let me = a
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.namespace.as_str()),
        ("team-a", "team-a.")
    );
    assert_eq!(me.scopes, [pb::Scope::Read as i32, pb::Scope::Write as i32]);
    let me = reader
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.scopes, [pb::Scope::Read as i32]);
    let status = with_token(channel, None)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // team-a's watch carries team-a's tasks only.
    let mut events = a
        .watch_tasks(pb::WatchTasksRequest::default())
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        next_event(&mut events).await.r#type,
        pb::TaskEventType::Synced as i32
    );
    let spec = spec_every(
        Duration::from_secs(3600),
        common::http_get("http://127.0.0.1:9/"),
    );
    for (client, id) in [(&mut b, "team-b.hidden"), (&mut a, "team-a.seen")] {
        client
            .register_task(pb::RegisterTaskRequest {
                task_id: id.into(),
                spec: Some(spec.clone()),
                ..Default::default()
            })
            .await
            .expect("register");
    }
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.r#type, event.task_id.as_str()),
        (pb::TaskEventType::Created as i32, "team-a.seen")
    );
    // Both may have been read in one round, in any order: a marker
    // registered after shows that nothing of team-b's came in between.
    a.register_task(pb::RegisterTaskRequest {
        task_id: "team-a.marker".into(),
        spec: Some(spec),
        ..Default::default()
    })
    .await
    .expect("register");
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.r#type, event.task_id.as_str()),
        (pb::TaskEventType::Created as i32, "team-a.marker")
    );
}
