//! grpc.health.v1 as tonic-health serves it, except that Watch streams end
//! at shutdown: tonic-health's never end while the service exists, and
//! tonic waits for open streams, so they would hold shutdown up.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

/// The health service with watches that end when `shutdown` is cancelled.
pub(super) struct EndingHealth {
    inner: HealthService,
    shutdown: CancellationToken,
}

/// The service for `reporter`'s statuses.
pub(super) fn service(
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> HealthServer<EndingHealth> {
    HealthServer::new(EndingHealth {
        inner: HealthService::from_health_reporter(reporter),
        shutdown,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let updates = self.inner.watch(request).await?.into_inner();
        let shutdown = self.shutdown.clone();
        let ended = updates
            .take_until(async move { shutdown.cancelled_owned().await })
            .chain(futures::stream::once(async {
                Err(Status::unavailable("the server is shutting down"))
            }));
        Ok(Response::new(Box::pin(ended)))
    }
}
