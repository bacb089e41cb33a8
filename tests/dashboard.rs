//! The dashboard's serving, from outside over HTTP/1.1: the page and its
//! assets on the gRPC port, gRPC-Web calls to the same services plain gRPC
//! reaches (under the same access rules), 404 for unknown pages and
//! UNIMPLEMENTED for unknown methods, and `dashboard: false` leaving the
//! port plain gRPC. The page in a real browser is tests/dashboard_browser.

mod common;

use std::net::SocketAddr;

use common::{TestServer, register, spec_every, test_config};
use prost::Message;
use recur::pb::v1 as pb;

/// A gRPC-Web unary call over HTTP/1.1: the answer's grpc-status and its
/// message, if any (gRPC-Web frames: flag byte, 4-byte length, payload; the
/// trailers come last as a frame with flag 0x80).
async fn grpc_web<M: Message>(
    addr: SocketAddr,
    method: &str,
    request: &M,
    token: Option<&str>,
) -> (String, Option<Vec<u8>>) {
    let payload = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    let mut call = client
        .post(format!("http://{addr}/recur.v1.TaskService/{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(token) = token {
        call = call.bearer_auth(token);
    }
    let response = call.send().await.expect("a gRPC-Web answer");
    assert_eq!(response.status(), 200);
    // A trailers-only answer carries the status in its headers.
    let header_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = response.bytes().await.expect("body");
    let mut message = None;
    let mut status = header_status;
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(frame);
            status = trailers
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .map(|s| s.trim().to_string());
        } else {
            message = Some(frame.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (status.expect("a grpc-status"), message)
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client")
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("an HTTP/1.1 answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_grpc_web_share_the_grpc_port() {
    let mut server = TestServer::start().await;
    let addr = server.addr;

    let page = get(addr, "/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    let script = get(addr, "/assets/app.js").await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.bytes().await.expect("js").len() > 1000);
    assert_eq!(get(addr, "/assets/app.css").await.status(), 200);
    assert_eq!(get(addr, "/no/such/page").await.status(), 404);

    // gRPC-Web reaches the task service: what plain gRPC registered, it lists.
    register(
        &mut server.client,
        "seen-on-the-web",
        spec_every(
            std::time::Duration::from_secs(3600),
            common::http_get("http://127.0.0.1:9/"),
        ),
    )
    .await;
    let (status, message) =
        grpc_web(addr, "ListTasks", &pb::ListTasksRequest::default(), None).await;
    assert_eq!(status, "0");
    let listed = pb::ListTasksResponse::decode(&message.expect("a response")[..]).expect("decode");
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!(listed.tasks[0].task_id, "seen-on-the-web");
    // A method the server does not have: UNIMPLEMENTED, not a page.
    let (status, _) = grpc_web(addr, "NoSuchMethod", &pb::ListTasksRequest::default(), None).await;
    assert_eq!(status, "12");
    // Plain gRPC over HTTP/2 is as it was.
    common::get(&mut server.new_client().await, "seen-on-the-web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_page_is_open_and_its_calls_are_not() {
    let dir = tempfile::tempdir().expect("dir");
    let token = "recur_dashboard_reader";
    let access = dir.path().join("access.yaml");
    std::fs::write(
        &access,
        format!(
            "tokens:\n  - name: viewer\n    sha256: {}\n    scopes: [read]\n",
            recur::access::token::digest_hex(token)
        ),
    )
    .expect("write");
    let mut config = test_config();
    config.auth_tokens = Some(access);
    let server = TestServer::start_with(config, |s| s).await;
    let addr = server.addr;
    // The page holds nothing: it loads without a token, and asks for one.
    assert_eq!(get(addr, "/").await.status(), 200);
    assert_eq!(get(addr, "/assets/app.js").await.status(), 200);
    let (status, _) = grpc_web(addr, "ListTasks", &pb::ListTasksRequest::default(), None).await;
    assert_eq!(status, "16", "UNAUTHENTICATED without a token");
    let (status, _) = grpc_web(
        addr,
        "ListTasks",
        &pb::ListTasksRequest::default(),
        Some(token),
    )
    .await;
    assert_eq!(status, "0");
    // A read token cannot pause, over gRPC-Web as over gRPC.
    let pause = pb::PauseTaskRequest {
        task_id: "x".into(),
        reason: String::new(),
    };
    let (status, _) = grpc_web(addr, "PauseTask", &pause, Some(token)).await;
    assert_eq!(status, "7", "PERMISSION_DENIED");
    // A GET to a method's path is not a page: the access rules apply, over
    // HTTP/1.1 and over HTTP/2 with a gRPC content type (which tonic-web
    // passes through and tonic's server would answer, whatever the method).
    let sneaky = get(addr, "/recur.v1.TaskService/ListTasks").await;
    assert_eq!(sneaky.headers()["grpc-status"], "16");
    let sneaky = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client")
        .get(format!("http://{addr}/recur.v1.TaskService/ListTasks"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .send()
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(sneaky.headers()["grpc-status"], "16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_a_browser_must_name_the_server_by_address() {
    // DNS rebinding: another site's name pointed at 127.0.0.1 would make
    // the page's API that site's to call.
    let server = TestServer::start().await;
    let addr = server.addr;
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    let page = |host: String| {
        client
            .get(format!("http://{addr}/"))
            .header("host", host)
            .send()
    };
    assert_eq!(
        page("evil.example".into()).await.expect("answer").status(),
        403
    );
    assert_eq!(
        page(format!("localhost:{}", addr.port()))
            .await
            .expect("answer")
            .status(),
        200
    );
    assert_eq!(page(addr.to_string()).await.expect("answer").status(), 200);
    let call = client
        .post(format!("http://{addr}/recur.v1.TaskService/ListTasks"))
        .header("host", "evil.example")
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("answer");
    assert_eq!(call.headers()["grpc-status"], "7", "PERMISSION_DENIED");
    // Native gRPC (HTTP/2, not gRPC-Web) is no browser: unaffected.
    server
        .new_client()
        .await
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("plain gRPC answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_off_leaves_plain_grpc_over_http2_only() {
    let mut config = test_config();
    config.dashboard = false;
    let mut server = TestServer::start_with(config, |s| s).await;
    let page = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client")
        .get(format!("http://{}/", server.addr))
        .send()
        .await;
    assert!(
        page.is_err() || page.is_ok_and(|r| r.status() != 200),
        "no page over HTTP/1.1"
    );
    register(
        &mut server.client,
        "plain",
        spec_every(
            std::time::Duration::from_secs(3600),
            common::http_get("http://127.0.0.1:9/"),
        ),
    )
    .await;
}
