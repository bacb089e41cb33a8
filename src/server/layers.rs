//! The one place where the gRPC server's limits and services are composed.

use tonic::{service::Routes, transport::Server};
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::{
    Layer,
    layer::util::{Identity, Stack},
};

use crate::{
    Config,
    access::layer::{AccessLayer, Gate},
    api::TaskApi,
    pb,
    pb::v1::task_service_server::TaskServiceServer,
};

// HTTP/2 limits against a client that abuses the protocol rather than the
// API. They are constants, not config: each stops an attack that a client
// following the protocol never comes near, so there is nothing to tune.
// tests/protocol_abuse.rs drives each attack and measured the numbers below
// (debug build, 2 cores); README.md's "Protocol limits" lists them.

/// Streams a client may open and reset before the server has taken them up,
/// at once on one connection; one more and the connection is closed with
/// GOAWAY (ENHANCE_YOUR_CALM). This stops the rapid-reset flood
/// (CVE-2023-44487): a stream reset that early never counts against
/// `max_concurrent_streams`, yet each one costs the server work. It is h2's
/// default, set here so the bound does not move with a dependency. With it
/// a flood is cut off after 84-1,170 streams, within 40 ms; with the limit
/// lifted, 100,000 streams went through one connection in 27 s with both
/// cores busy and the process (server and flooding client) grew by 195 MB.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the server may reset itself over one connection's life because
/// the client broke the protocol on them; one more and the connection is
/// closed with GOAWAY (ENHANCE_YOUR_CALM). This stops "MadeYouReset"
/// (CVE-2025-8671): two frames per stream (HEADERS, then DATA the headers
/// forbid) make the server start a call and reset it, again without ever
/// holding a stream open. tonic passes no limit unless given one, which
/// turns off hyper's (1024): measured without it, 100,000 such streams on
/// one connection were all taken (about 5 s of server time) and the
/// connection stayed open; with it, the connection is closed within 50 ms.
/// 1024 is hyper's default: a client that follows the protocol causes
/// such a reset only in rare races, such as data arriving for a call the
/// server has already finished and forgotten.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Largest header list one call may carry (names and values, plus 32 bytes
/// a field, as HTTP/2 counts it): 16 KiB. A call beyond it is refused (HTTP
/// 431, which tonic clients report as UNKNOWN) and the connection goes on;
/// beyond four times it (h2's fixed factor) the connection is closed with
/// GOAWAY, so a connection never buffers more than 64 KiB of headers.
/// recur's own metadata (a bearer token and the gRPC headers) is well under
/// 1 KiB. hyper's default, set so that the SETTINGS_MAX_HEADER_LIST_SIZE the
/// server advertises (grpc-go clients check it before sending) stays what
/// the README says.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Largest HTTP/2 frame the server accepts: 16 KiB, the smallest the
/// protocol allows and hyper's default. A frame is read whole before it is
/// parsed, so this bounds what one connection holds in its read buffer; a
/// frame header announcing more is refused at once (GOAWAY
/// FRAME_SIZE_ERROR), before its payload is read. With the header limit it
/// also sets how many CONTINUATION frames one header list may span (h2
/// allows five here), which stops the CONTINUATION flood.
const MAX_FRAME_SIZE: u32 = 16 * 1024;

/// Every service behind the access layer.
pub(super) type Router = tonic::transport::server::Router<Stack<AccessLayer, Identity>>;

/// The router with every service and limit: TaskService, health, and
/// reflection v1 and v1alpha (grpcurl before 1.9 speaks only v1alpha), all
/// behind `gate`, which checks every call's credentials and scope.
pub(super) fn router<H: Health>(
    config: &Config,
    api: TaskApi,
    health: HealthServer<H>,
    gate: Gate,
) -> Result<Router, super::ServerError> {
    // Both reflection versions list every service, themselves included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let tasks = TaskServiceServer::new(api)
        .max_decoding_message_size(config.max_message_size)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut routes = Routes::builder();
    if config.dashboard {
        // gRPC-Web around each service, not the server: the layer answers
        // every plain HTTP/1.1 request it sees with 400, which would take
        // the page's routes with it. Same origin, so no CORS.
        let web = tonic_web::GrpcWebLayer::new();
        routes
            .add_service(web.layer(tasks))
            .add_service(web.layer(health))
            .add_service(web.layer(reflection_v1))
            .add_service(web.layer(reflection_v1alpha));
    } else {
        routes
            .add_service(tasks)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
    }
    let routes = if config.dashboard {
        tonic::service::Routes::from(super::dashboard::routes(routes.routes().into_axum_router()))
    } else {
        routes.routes()
    };
    Ok(Server::builder()
        // The page and gRPC-Web come over HTTP/1.1; the limits below still
        // apply to every connection (HTTP/2 ones to HTTP/2 only).
        .accept_http1(config.dashboard)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(Some(config.max_concurrent_streams_per_connection))
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        .load_shed(true)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_frame_size(MAX_FRAME_SIZE)
        .trace_fn(|req| tracing::debug_span!("rpc", path = %req.uri().path()))
        .layer(AccessLayer::new(gate))
        .add_routes(routes))
}
