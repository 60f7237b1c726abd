#![doc = include_str!("../README.md")]
// Unsafe code only where a dependency gives no safe way (reading broker
// headers, `broker/kafka/headers.rs`), allowed there alone.
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod app;
mod asyncapi;
#[doc(hidden)]
pub mod bench_internals;
mod broker;
mod buckets;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod clock;
mod codec;
mod config;
mod connection;
mod dead_letter;
mod delay;
mod delivery;
mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod idempotency;
mod observe;
#[cfg(feature = "postgres")]
pub mod outbox;
mod partitioner;
mod producer;
mod publish;
mod replay;
mod request;
mod subscription;
#[cfg(feature = "testing")]
pub mod testing;
mod topics;

pub use app::{App, AppBuilder, DeclaredHandler, Kafkactor, Subscriber};
pub use asyncapi::AsyncApi;
pub use broker::{Broker, MemoryBroker, OffsetReset};
pub use buckets::Delays;
pub use codec::{type_name_of, ContentType, Decode, Raw};
pub use config::Config;
pub use dead_letter::{DeadLettered, FailureKind};
pub use delivery::{
    Batch, BatchOutcome, Delivery, DeliveryBuilder, Failure, Handled, OrReject, Outcome,
};
pub use envelope::{header, Headers, Record, TopicPartition};
pub use error::{Error, ErrorCode, Result};
#[cfg(feature = "redis")]
pub use idempotency::RedisStore;
pub use idempotency::{Claim, Idempotency, IdempotencyStore, MemoryStore};
/// Declares the subscription an async handler function serves:
/// `#[kafkactor::handler(topic = "orders", group = "billing", ...)]`
/// (see [`AppBuilder::handler`]).
pub use kafkactor_macros::handler;
pub use observe::health::{Check, Health};
pub use observe::lineage::Lineage;
pub use observe::trace::TraceContext;
#[cfg(feature = "postgres")]
pub use outbox::{Outbox, OutboxRelay};
/// The partition Kafka's default partitioner (and kafkactor's) gives a key:
/// for co-partitioning topics, and for tests that look at one partition.
pub use partitioner::partition_for_key;
pub use producer::{Producer, ProducerHandle, PublishBatch, SendError};
pub use publish::{Publish, PublishOutcome};
pub use replay::{Replay, ReplayControl, ReplayReport, ReplayRun};
pub use request::{Replies, Requester};
/// `schemars`, whose `JsonSchema` derive gives message types their schema in
/// the AsyncAPI document (`#[derive(kafkactor::schemars::JsonSchema)]` with
/// `#[schemars(crate = "kafkactor::schemars")]`, or a `schemars` dependency of
/// your own).
pub use schemars;
pub use subscription::retry::{RetryPolicy, RetryTopic};
pub use subscription::route::Routes;
pub use subscription::{IntoTopics, OnRestartLimit, Subscription};

/// Supervision for actix (the `kafkactor-actors` crate), re-exported.
pub use kafkactor_actors as actors;
pub use kafkactor_actors::{Backoff, Events, Exit, SupervisionEvent};
/// The Prometheus client the metrics are kept with (`App::metrics_registry`).
pub use prometheus;

/// OpenTelemetry export over OTLP (feature `otel`).
#[cfg(feature = "otel")]
pub mod otel {
    pub use crate::observe::otel::Otlp;
    /// The OpenTelemetry crates kafkactor is built with: a layer or
    /// provider made with these versions is one kafkactor's spans work with.
    pub use {opentelemetry, opentelemetry_sdk, tracing_opentelemetry};
}

/// The names most applications need: `use kafkactor::prelude::*;`.
pub mod prelude {
    pub use crate::{
        App, Batch, BatchOutcome, Broker, ContentType, Delivery, Error, Failure, Handled,
        Kafkactor, OrReject, Outcome, ProducerHandle, Publish, PublishBatch, PublishOutcome, Raw,
        RetryPolicy, Routes, Subscription,
    };
}

// The old places of names that are now where they belong: kept for code
// written against them, hidden from the documentation.

/// Kafka's murmur2 hash; see [`partition_for_key`] for what users need of it.
#[doc(hidden)]
#[deprecated(
    since = "0.2.0",
    note = "an internal of the partitioner: use partition_for_key"
)]
pub fn murmur2(data: &[u8]) -> u32 {
    partitioner::murmur2(data)
}

/// Moved to [`Delays::HOP_ALLOWANCE`].
#[doc(hidden)]
#[deprecated(since = "0.2.0", note = "use Delays::HOP_ALLOWANCE")]
pub const HOP_ALLOWANCE: std::time::Duration = Delays::HOP_ALLOWANCE;

/// Moved to [`Delays::MAX_BUCKET`].
#[doc(hidden)]
#[deprecated(since = "0.2.0", note = "use Delays::MAX_BUCKET")]
pub const MAX_BUCKET: std::time::Duration = Delays::MAX_BUCKET;

/// Moved to [`Subscription::DEFAULT_HANDLER_TIMEOUT`].
#[doc(hidden)]
#[deprecated(since = "0.2.0", note = "use Subscription::DEFAULT_HANDLER_TIMEOUT")]
pub const DEFAULT_HANDLER_TIMEOUT: std::time::Duration = Subscription::DEFAULT_HANDLER_TIMEOUT;
