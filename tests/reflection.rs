//! gRPC server reflection, v1 and v1alpha, through tonic-reflection's own
//! generated clients: what tools like grpcurl and Postman rely on to call
//! the service without the proto files.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

/// Every service a reflection client must see.
const EXPECTED_SERVICES: [&str; 4] = [
    "recur.v1.TaskService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

/// Sends one v1 request on a fresh reflection stream and returns the answer.
async fn ask_v1(
    channel: Channel,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    try_ask_v1(channel, request)
        .await
        .expect("reflection v1 stream")
}

/// Like [`ask_v1`], but a stream that ends with a status gives that status.
async fn try_ask_v1(
    channel: Channel,
    request: v1::server_reflection_request::MessageRequest,
) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = tokio::time::timeout(
        WAIT,
        client.server_reflection_info(tokio_stream::iter([request])),
    )
    .await
    .expect("reflection v1 answered in time")
    .expect("reflection v1 call")
    .into_inner();
    let response = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("reflection v1 response in time")?
        .expect("one reflection v1 response");
    Ok(response.message_response.expect("a message_response"))
}

/// Sends one v1alpha request on a fresh reflection stream and returns the answer.
async fn ask_v1alpha(
    channel: Channel,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = tokio::time::timeout(
        WAIT,
        client.server_reflection_info(tokio_stream::iter([request])),
    )
    .await
    .expect("reflection v1alpha answered in time")
    .expect("reflection v1alpha call")
    .into_inner();
    let response = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("reflection v1alpha response in time")
        .expect("reflection v1alpha stream")
        .expect("one reflection v1alpha response");
    response.message_response.expect("a message_response")
}

fn assert_lists_every_service(names: &[String]) {
    for expected in EXPECTED_SERVICES {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// The file among `files` that defines `recur.v1`, decoded.
fn recur_file(files: &[Vec<u8>]) -> prost_types::FileDescriptorProto {
    files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decode"))
        .find(|file| file.package() == "recur.v1")
        .unwrap_or_else(|| panic!("no recur.v1 file among {} descriptors", files.len()))
}

fn assert_task_service(file: &prost_types::FileDescriptorProto) {
    assert_eq!(file.name(), "recur/v1/recur.proto");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "TaskService")
        .expect("TaskService in recur.proto");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for expected in [
        "RegisterTask",
        "UpdateTask",
        "DeleteTask",
        "GetTask",
        "ListTasks",
        "PauseTask",
        "ResumeTask",
        "CancelTask",
        "TriggerTask",
        "StreamResults",
    ] {
        assert!(
            methods.contains(&expected),
            "{expected} missing: {methods:?}"
        );
    }
    let stream = service
        .method
        .iter()
        .find(|m| m.name() == "StreamResults")
        .expect("StreamResults");
    assert!(stream.server_streaming(), "StreamResults streams results");
    // Comments are kept, so reflection clients can show the documentation.
    assert!(
        file.source_code_info.as_ref().is_some_and(|info| info
            .location
            .iter()
            .any(|l| l.leading_comments().contains("Controls periodic tasks"))),
        "source comments missing from the served descriptor"
    );
}

#[tokio::test]
async fn v1_lists_services() {
    let server = TestServer::start().await;
    let answer = ask_v1(
        channel(&server).await,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await;
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(list) = answer else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_lists_every_service(&names);
}

#[tokio::test]
async fn v1_file_containing_symbol_returns_the_task_service() {
    let server = TestServer::start().await;
    for symbol in [
        "recur.v1.TaskService",
        "recur.v1.TaskService.TriggerTask",
        "recur.v1.TaskResult",
    ] {
        let answer = ask_v1(
            channel(&server).await,
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        )
        .await;
        let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = answer
        else {
            panic!("expected a file descriptor for {symbol}, got {answer:?}");
        };
        assert_task_service(&recur_file(&files.file_descriptor_proto));
    }
}

#[tokio::test]
async fn v1_unknown_symbol_is_not_found() {
    let server = TestServer::start().await;
    let answer = try_ask_v1(
        channel(&server).await,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "recur.v1.NoSuchService".into(),
        ),
    )
    .await;
    // The reflection spec answers with an ErrorResponse message;
    // tonic-reflection 0.14 ends the stream with the status instead. Either
    // way a client sees NOT_FOUND naming the symbol.
    let (code, message) = match answer {
        Err(status) => (status.code() as i32, status.message().to_string()),
        Ok(v1::server_reflection_response::MessageResponse::ErrorResponse(error)) => {
            (error.error_code, error.error_message)
        }
        Ok(other) => panic!("expected NOT_FOUND for an unknown symbol, got {other:?}"),
    };
    assert_eq!(code, tonic::Code::NotFound as i32, "{message}");
    assert!(message.contains("recur.v1.NoSuchService"), "{message}");
}

#[tokio::test]
async fn v1alpha_lists_services() {
    let server = TestServer::start().await;
    let answer = ask_v1alpha(
        channel(&server).await,
        v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await;
    let v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list) = answer
    else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_lists_every_service(&names);
}

#[tokio::test]
async fn v1alpha_file_containing_symbol_returns_the_task_service() {
    let server = TestServer::start().await;
    let answer = ask_v1alpha(
        channel(&server).await,
        v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "recur.v1.TaskService".into(),
        ),
    )
    .await;
    let v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files) =
        answer
    else {
        panic!("expected a file descriptor, got {answer:?}");
    };
    assert_task_service(&recur_file(&files.file_descriptor_proto));
}
