//! `--otlp-endpoint` (cargo feature `otel`): the server's tracing spans
//! exported over OTLP/gRPC to a collector (the OpenTelemetry Collector,
//! Jaeger, Tempo, ...). Each run is a span carrying its task id, run
//! number, occurrence id and trigger, with one child span per attempt, so a
//! trace search by `occurrence_id` finds the run a target saw as its
//! `Idempotency-Key`. Built only into the binary: the library never
//! installs a subscriber, an embedding program wires its own.

use std::time::Duration;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, Layer, registry::LookupSpan};

/// What to export where.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// The collector's OTLP/gRPC address, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Share of traces kept, 0 to 1 (parent-based: a kept run keeps its
    /// attempts).
    pub sample_ratio: f64,
    /// `service.instance.id` of the resource: the node id, so a trace
    /// names the replica that ran it.
    pub instance: String,
    /// Which spans go out, in `RUST_LOG` syntax. Runs and attempts are
    /// DEBUG spans (the text log never shows them), so the default asks
    /// for recur's DEBUG spans and everything else at INFO.
    pub filter: String,
}

/// The default of [`OtelSettings::filter`].
pub const DEFAULT_FILTER: &str = "info,recur=debug";

/// How long shutdown waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The sample ratio is not a share.
    #[error("--otlp-sample-ratio must be between 0 and 1, got {0}")]
    SampleRatio(f64),
    /// The endpoint is not an http(s) URL.
    #[error("--otlp-endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    /// The filter does not parse.
    #[error("--otlp-filter: {0}")]
    Filter(String),
    /// The OTLP exporter refused its settings.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

impl OtelSettings {
    /// Checks what the flags gave before anything is built.
    pub fn check(&self) -> Result<(), OtelError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(OtelError::SampleRatio(self.sample_ratio));
        }
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            return Err(OtelError::Endpoint(self.endpoint.clone()));
        }
        EnvFilter::try_new(&self.filter).map_err(|e| OtelError::Filter(e.to_string()))?;
        Ok(())
    }

    /// How a trace without a parent (a run) is sampled; a span with a
    /// parent (an attempt) follows its parent.
    fn root_sampler(&self) -> Sampler {
        if self.sample_ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(self.sample_ratio)
        }
    }
}

/// The exporter's handle: flushes and stops it at shutdown.
pub struct Otel {
    provider: SdkTracerProvider,
}

impl Otel {
    /// Sends the spans still buffered; called once the server has stopped.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            eprintln!("recur: flushing the last spans to the OTLP endpoint failed: {e}");
        }
    }
}

/// The layer exporting spans, filtered by `settings.filter`, and its
/// handle. Must be called inside the tokio runtime (the gRPC exporter
/// runs on it).
pub fn layer<S>(settings: &OtelSettings) -> Result<(impl Layer<S> + use<S>, Otel), OtelError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    settings.check()?;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name("recur")
        .with_attribute(KeyValue::new(
            "service.instance.id",
            settings.instance.clone(),
        ))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(settings.root_sampler())))
        .with_resource(resource)
        .build();
    let filter =
        EnvFilter::try_new(&settings.filter).map_err(|e| OtelError::Filter(e.to_string()))?;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("recur"))
        .with_filter(filter);
    Ok((layer, Otel { provider }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OtelSettings {
        OtelSettings {
            endpoint: "http://127.0.0.1:4317".into(),
            sample_ratio: 1.0,
            instance: "node-a".into(),
            filter: DEFAULT_FILTER.into(),
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_flag() {
        let mut s = settings();
        s.sample_ratio = 1.5;
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("--otlp-sample-ratio")
        );
        let mut s = settings();
        s.endpoint = "127.0.0.1:4317".into();
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("--otlp-endpoint")
        );
        let mut s = settings();
        s.filter = "recur=loud".into();
        assert!(s.check().unwrap_err().to_string().contains("--otlp-filter"));
        assert!(settings().check().is_ok());
    }

    #[test]
    fn a_ratio_below_one_samples_by_trace_id() {
        let mut s = settings();
        assert!(matches!(s.root_sampler(), Sampler::AlwaysOn));
        s.sample_ratio = 0.25;
        assert!(matches!(s.root_sampler(), Sampler::TraceIdRatioBased(r) if r == 0.25));
    }
}
