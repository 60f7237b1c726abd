//! Observability: Prometheus metrics ([`metrics`]), health, and the HTTP
//! endpoints that serve them.

pub(crate) mod health;
pub(crate) mod histogram;
pub(crate) mod http;
pub(crate) mod lineage;
pub(crate) mod metrics;
#[cfg(feature = "otel")]
pub(crate) mod otel;
pub(crate) mod supervision;
pub(crate) mod trace;
