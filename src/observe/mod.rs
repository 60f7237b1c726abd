//! Observability, as things the layers above record into and read: the
//! Prometheus metrics, histograms, trace context, lineage events and health
//! data. Nothing here calls into a layer above it (the application serves
//! and reads them: `app/`).

pub(crate) mod health;
pub(crate) mod histogram;
pub(crate) mod lineage;
pub(crate) mod metrics;
#[cfg(feature = "otel")]
pub(crate) mod otel;
pub(crate) mod supervision;
pub(crate) mod trace;
