//! OpenTelemetry export (feature `otel`): kafkactor's spans, and the
//! application's, batched and sent over OTLP/HTTP to a collector (Jaeger,
//! Tempo, the OpenTelemetry Collector...).
//!
//! Two parts, usable apart:
//! - **Ids.** With the feature on, whenever a `tracing-opentelemetry` layer
//!   (version 0.34, the one kafkactor is built with) records kafkactor's
//!   spans, the `publish` span's OpenTelemetry ids are what goes into the
//!   record's `traceparent`, and the `handle` span's OpenTelemetry parent is
//!   the span that `traceparent` names: a handler's span is its publisher's
//!   child in the backend, across the broker, delay buckets and dead
//!   letters. This holds for a layer the application builds itself.
//! - **Export.** [`Otlp`] builds such a layer on a tracer provider that
//!   batches spans on a thread of its own and posts them as OTLP protobuf.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! # fn main() -> Result<(), kafkactor::Error> {
//! let otlp = kafkactor::otel::Otlp::from_env("billing")?; // OTEL_EXPORTER_OTLP_ENDPOINT
//! tracing_subscriber::registry().with(otlp.layer()).init();
//! // ... run the application ...
//! otlp.shutdown()?; // exports what is still buffered
//! # Ok(()) }
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// Spans exported over OTLP/HTTP (protobuf), batched on a thread of the
/// exporter's own; [`layer`](Otlp::layer) is what records them.
///
/// Export failures (no collector listening) are logged by OpenTelemetry
/// and cost the spans of that batch, never a record.
#[derive(Debug, Clone)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Exports to `endpoint`, the collector's full traces URL (as
    /// `http://127.0.0.1:4318/v1/traces`), as service `service`.
    ///
    /// # Errors
    /// [`Error::Config`] for an endpoint that is not a URL.
    pub fn to(endpoint: &str, service: &str) -> Result<Self> {
        Self::build(Some(endpoint), service)
    }

    /// Exports where the standard variables say:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL), else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else
    /// `http://localhost:4318/v1/traces`; `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` are read too.
    ///
    /// # Errors
    /// [`Error::Config`] for a variable that does not parse.
    pub fn from_env(service: &str) -> Result<Self> {
        Self::build(None, service)
    }

    fn build(endpoint: Option<&str>, service: &str) -> Result<Self> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let exporter = exporter
            .build()
            .map_err(|e| Error::Config(format!("OTLP exporter: {e}")))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Otlp { provider })
    }

    /// A `tracing` layer recording spans (kafkactor's among them) into
    /// this exporter; add it to the application's subscriber.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, Tracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("kafkactor"))
    }

    /// The tracer provider, for spans made with OpenTelemetry's own API.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every span ended so far, waiting for the collector's answer.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the export failed.
    pub fn flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|e| Error::Unavailable(format!("OTLP export: {e}")))
    }

    /// Exports what is buffered and stops the exporter's thread; spans
    /// ended afterwards are not exported.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the last export failed.
    pub fn shutdown(self) -> Result<()> {
        self.provider
            .shutdown()
            .map_err(|e| Error::Unavailable(format!("OTLP export: {e}")))
    }
}
