//! The wire format: a kafkactor message is a plain Kafka record (key, headers,
//! payload). This module holds the record types, [`Headers`] and the
//! well-known header names, all in one place.
//!
//! By concern: the header names are here; `headers.rs` holds the header
//! list, `record.rs` the records read and written, `message_id.rs` the
//! message ids the producer stamps, `small.rs` the copies of short byte
//! strings a record is made of.

/// Well-known header names. All are prefixed with `x-` except W3C trace context
/// and `content-type`/`content-encoding`, which keep their standard names.
pub mod header {
    /// Unique message id (UUIDv7), stamped by the producer.
    pub const MESSAGE_ID: &str = "x-message-id";
    /// Serialization of the payload: `application/msgpack` or `application/json`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// Compression/encryption applied after serialization, in order.
    pub const CONTENT_ENCODING: &str = "content-encoding";
    /// Name of the message type, used to route several types on one topic.
    pub const TYPE_NAME: &str = "x-type";
    /// Producer's wall-clock time, milliseconds since the Unix epoch.
    pub const TIMESTAMP: &str = "x-timestamp";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// Tenant of a multi-tenant service.
    pub const TENANT: &str = "x-tenant";
    /// Correlation id for request-reply.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// Topic to reply to (on a request).
    pub const REPLY_TO: &str = "x-reply-to";
    /// Partition of the reply topic to reply to (on a request): the one
    /// its caller reads.
    pub const REPLY_PARTITION: &str = "x-reply-partition";
    /// Attempts made so far (on retry and dead-letter records).
    pub const ATTEMPT: &str = "x-attempt";
    /// Topic the record was first consumed from.
    pub const ORIGINAL_TOPIC: &str = "x-original-topic";
    /// Partition the record was first consumed from.
    pub const ORIGINAL_PARTITION: &str = "x-original-partition";
    /// Offset the record was first consumed at.
    pub const ORIGINAL_OFFSET: &str = "x-original-offset";
    /// Consumer group that gave up on the record.
    pub const GROUP: &str = "x-group";
    /// When a delayed record is due, milliseconds since the Unix epoch.
    pub const DELIVER_AT: &str = "x-deliver-at";
    /// The explicit partition a delayed record is delivered to, if it has one.
    pub const DELIVER_PARTITION: &str = "x-deliver-partition";
    /// Kind of failure that sent the record to the dead-letter topic.
    pub const ERROR_KIND: &str = "x-error-kind";
    /// Human-readable reason for the failure.
    pub const ERROR_REASON: &str = "x-error-reason";
    /// When the record failed for good, milliseconds since the Unix epoch.
    pub const FAILED_AT: &str = "x-failed-at";
    /// On a dead letter written without its payload: why the payload was
    /// dropped (the broker refused the whole record for good).
    pub const PAYLOAD_DROPPED: &str = "x-payload-dropped";
    /// On a dead letter written without its payload: the payload's size in bytes.
    pub const PAYLOAD_SIZE: &str = "x-payload-size";
    /// Key used by the idempotency store.
    pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
    /// How many times a dead letter was replayed to its topic (see
    /// [`Replay`](crate::Replay)); past the replay's maximum it goes to
    /// the parking topic instead.
    pub const REPLAY_COUNT: &str = "x-replay-count";
    /// On a record in a retry topic: when it is due (ms since the Unix
    /// epoch); 0 for a record that only follows its parked key.
    pub const NOT_BEFORE: &str = "x-not-before";

    /// The constant for a well-known header `name`, if it is one.
    pub(crate) fn known(name: &str) -> Option<&'static str> {
        const ALL: [&str; 26] = [
            MESSAGE_ID,
            CONTENT_TYPE,
            CONTENT_ENCODING,
            TYPE_NAME,
            TIMESTAMP,
            TRACEPARENT,
            TRACESTATE,
            TENANT,
            CORRELATION_ID,
            REPLY_TO,
            REPLY_PARTITION,
            ATTEMPT,
            ORIGINAL_TOPIC,
            ORIGINAL_PARTITION,
            ORIGINAL_OFFSET,
            GROUP,
            DELIVER_AT,
            DELIVER_PARTITION,
            ERROR_KIND,
            ERROR_REASON,
            FAILED_AT,
            PAYLOAD_DROPPED,
            PAYLOAD_SIZE,
            IDEMPOTENCY_KEY,
            REPLAY_COUNT,
            NOT_BEFORE,
        ];
        ALL.iter().copied().find(|k| *k == name)
    }
}

mod headers;
mod message_id;
mod record;
pub(crate) mod small;

pub use headers::Headers;
pub(crate) use headers::Name;
#[cfg(feature = "kafka")]
pub(crate) use headers::INLINE;
pub(crate) use message_id::new_message_id;
pub(crate) use record::OutgoingRecord;
pub use record::{Record, TopicPartition};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    crate::clock::skewed_ms(chrono::Utc::now().timestamp_millis())
}

#[cfg(test)]
mod tests;
