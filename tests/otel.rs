//! The `otel` feature from outside: the binary, started with
//! `--otlp-endpoint`, exports each run as a span carrying its task id and
//! occurrence id, with a child span per attempt, to an OTLP receiver: the
//! collector's gRPC TraceService, served here by the test itself (no
//! collector needs installing). Runs with `cargo test --features otel
//! --test otel`, as scripts/test does.

#![cfg(feature = "otel")]

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{TestServer, http_target::HttpTarget, register, spec_every};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::Span,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// Spans are sent in batches every few seconds; generous for a loaded machine.
const EXPORT_WAIT: Duration = Duration::from_secs(60);

/// Hands every export request to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A string attribute's value.
fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The server process, killed if the test fails before stopping it.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_exported_as_spans_with_task_and_occurrence_ids() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector = listener.local_addr().expect("addr");
    let (tx, mut exports) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--min-interval-secs", "0.05", "--node-id", "otel-test"])
        .args(["--otlp-endpoint", &format!("http://{collector}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn recur");
    let serving = Serving(child);
    let mut client = None;
    for _ in 0..200 {
        client = TestServer::try_connect(addr).await;
        if client.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("the server accepts connections");

    let target = HttpTarget::start().await;
    register(
        &mut client,
        "traced",
        spec_every(
            Duration::from_millis(200),
            common::http_get(&target.url("/t")),
        ),
    )
    .await;

    let deadline = tokio::time::Instant::now() + EXPORT_WAIT;
    let (run, attempt, resource) = loop {
        let request = tokio::time::timeout_at(deadline, exports.recv())
            .await
            .expect("a run's span exported in time")
            .expect("the receiver runs");
        let mut runs: Vec<(Span, Vec<KeyValue>)> = Vec::new();
        let mut attempts: Vec<Span> = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                match span.name.as_str() {
                    "run" => runs.push((span, resource.clone())),
                    "attempt" => attempts.push(span),
                    _ => {}
                }
            }
        }
        let found = runs.into_iter().find_map(|(run, resource)| {
            let attempt = attempts
                .iter()
                .find(|a| a.parent_span_id == run.span_id && a.trace_id == run.trace_id)?
                .clone();
            Some((run, attempt, resource))
        });
        if let Some(found) = found {
            break found;
        }
    };
    assert_eq!(attribute(&run.attributes, "task_id"), Some("traced"));
    let occurrence = attribute(&run.attributes, "occurrence_id").expect("occurrence_id");
    assert!(
        occurrence.starts_with("traced@"),
        "an occurrence id of the task: {occurrence}"
    );
    assert_eq!(attribute(&run.attributes, "trigger"), Some("Scheduled"));
    assert!(
        run.end_time_unix_nano >= attempt.end_time_unix_nano,
        "the attempt is within its run"
    );
    assert_eq!(attribute(&resource, "service.name"), Some("recur"));
    assert_eq!(
        attribute(&resource, "service.instance.id"),
        Some("otel-test")
    );
    // The target saw that occurrence as the Idempotency-Key of a request.
    let seen = target.received();
    assert!(
        seen.iter().any(|r| r
            .headers
            .get("idempotency-key")
            .is_some_and(|v| v.as_bytes() == occurrence.as_bytes())),
        "the span's occurrence id is the key the target received"
    );
    drop(serving);
}
