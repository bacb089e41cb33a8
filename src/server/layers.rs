//! The one place where the gRPC server's limits and services are composed.

use tonic::{service::Routes, transport::Server};
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::layer::util::{Identity, Stack};

use crate::{
    Config,
    access::layer::{AccessLayer, Gate},
    api::TaskApi,
    pb,
    pb::v1::task_service_server::TaskServiceServer,
};

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
    routes
        .add_service(tasks)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(Some(config.max_concurrent_streams_per_connection))
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        .load_shed(true)
        .trace_fn(|req| tracing::debug_span!("rpc", path = %req.uri().path()))
        .layer(AccessLayer::new(gate))
        .add_routes(routes.routes()))
}
