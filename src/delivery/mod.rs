//! What a handler receives ([`Delivery`]) and what it answers ([`Outcome`]).

pub(crate) mod current;

use std::fmt;
use std::sync::Arc;

use actix::{Message, MessageResponse};

use crate::envelope::{header, Headers, Record};
use crate::observe::trace::TraceContext;
use crate::publish::Publish;

/// A decoded message and where it came from. Handlers implement
/// `Handler<Delivery<T>>` and answer an [`Outcome`].
pub struct Delivery<T> {
    message: T,
    record: Arc<Record>,
    attempt: u32,
}

impl<T> Delivery<T> {
    pub(crate) fn new(message: T, record: Arc<Record>, attempt: u32) -> Self {
        Delivery {
            message,
            record,
            attempt,
        }
    }

    /// The decoded message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Takes the decoded message.
    pub fn into_message(self) -> T {
        self.message
    }

    /// Topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.record.topic
    }

    /// Partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.record.partition
    }

    /// Offset of the record in its partition.
    pub fn offset(&self) -> i64 {
        self.record.offset
    }

    /// The record's key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.record.key.as_deref()
    }

    /// The record's key as UTF-8 text, if it has one that is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The record's headers.
    pub fn headers(&self) -> &Headers {
        &self.record.headers
    }

    /// Whether the record has no payload at all (a tombstone), as opposed
    /// to an empty one. A `Delivery<Option<T>>` gets a tombstone as `None`.
    pub fn is_tombstone(&self) -> bool {
        self.record.is_tombstone()
    }

    /// The message id stamped by the producer, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.record.headers.get_str(header::MESSAGE_ID)
    }

    /// The tenant the record belongs to (header `x-tenant`), if any.
    pub fn tenant(&self) -> Option<&str> {
        self.record.headers.get_str(header::TENANT)
    }

    /// The correlation id (header `x-correlation-id`), if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.record.headers.get_str(header::CORRELATION_ID)
    }

    /// The publisher's trace context (header `traceparent`), if valid.
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::of(&self.record)
    }

    pub(crate) fn record(&self) -> &Record {
        &self.record
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Broker timestamp of the record, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.record.timestamp_ms
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.record.topic)
            .field("partition", &self.record.partition)
            .field("offset", &self.record.offset)
            .field("attempt", &self.attempt)
            .field("message", &self.message)
            .finish()
    }
}

impl<T: 'static> Message for Delivery<T> {
    type Result = Outcome;
}

/// A handler's verdict on one delivery; it decides the record's fate.
#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub enum Outcome {
    /// Done: the offset may be committed once all lower offsets are done.
    Ack,
    /// Failed for now: retried under the subscription's [`RetryPolicy`](crate::RetryPolicy),
    /// then dead-lettered with this reason.
    Retry(String),
    /// Failed for good: dead-lettered at once with this reason.
    Reject(String),
}

impl Outcome {
    /// `Outcome::Retry` with the error's text.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Outcome::Retry(reason.to_string())
    }

    /// `Outcome::Reject` with the error's text.
    pub fn reject(reason: impl fmt::Display) -> Self {
        Outcome::Reject(reason.to_string())
    }
}

/// `Ok` acknowledges; `Err` asks for a retry with the error's text.
impl<E: fmt::Display> From<Result<(), E>> for Outcome {
    fn from(r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Outcome::Ack,
            Err(e) => Outcome::retry(e),
        }
    }
}

/// What a publish made from a handler's [`Delivery`] takes of it (defined
/// here, above [`Publish`], which knows nothing of deliveries).
impl Publish {
    /// Continues `delivery`'s context: its tenant and correlation id (unless
    /// set already) and a `traceparent` that is a child of its trace. What
    /// a handler publishes while it runs gets this by itself; this is for
    /// publishes made elsewhere (a task the handler spawned, another actor).
    pub fn continuing<T>(mut self, delivery: &Delivery<T>) -> Self {
        crate::observe::trace::inherit(&mut self.headers, delivery.record(), None);
        self
    }
}
