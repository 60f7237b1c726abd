//! The wire format: a kafkactor message is a plain Kafka record (key, headers,
//! payload). This module holds the record types, [`Headers`] and the
//! well-known header names, all in one place.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

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
    /// Topic to reply to.
    pub const REPLY_TO: &str = "x-reply-to";
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

    /// The constant for a well-known header `name`, if it is one.
    pub(crate) fn known(name: &str) -> Option<&'static str> {
        const ALL: [&str; 23] = [
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
        ];
        ALL.iter().copied().find(|k| *k == name)
    }
}

/// Record headers: an ordered list of name/value pairs, as in Kafka
/// (names may repeat; lookups return the last value). A value may be null,
/// as Kafka allows: it reads as empty and is written back as null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Name, Value)>);

/// A header name: a well-known one (a [`header`] constant, nothing
/// allocated) or any other.
#[derive(Clone)]
pub(crate) enum Name {
    Known(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Known(name) => name,
            Name::Shared(name) => name,
        }
    }

    /// Whether this is `name`: by address for two well-known names.
    fn is(&self, name: &Name) -> bool {
        match (self, name) {
            (Name::Known(a), Name::Known(b)) if std::ptr::eq(*a, *b) => true,
            _ => self.as_str() == name.as_str(),
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.is(other)
    }
}

impl Eq for Name {}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<N: Into<Arc<str>>> From<N> for Name {
    fn from(name: N) -> Name {
        Name::Shared(name.into())
    }
}

/// The longest header value kept inside the header list instead of in a
/// buffer of its own: room for a message id (36 bytes of UUID text).
pub(crate) const INLINE: usize = 38;

/// One header value. The short values the producer stamps on every record
/// (message id, timestamp) are inline, so stamping allocates nothing.
#[derive(Clone)]
enum Value {
    Null,
    Shared(Bytes),
    Inline { len: u8, bytes: [u8; INLINE] },
}

impl Value {
    /// `value` copied inline when it fits, else into a buffer of its own.
    fn copied(value: &[u8]) -> Value {
        if value.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..value.len()].copy_from_slice(value);
            Value::Inline {
                len: value.len() as u8,
                bytes,
            }
        } else {
            Value::Shared(Bytes::copy_from_slice(value))
        }
    }

    fn get(&self) -> Option<&[u8]> {
        match self {
            Value::Null => None,
            Value::Shared(b) => Some(b),
            Value::Inline { len, bytes } => Some(&bytes[..usize::from(*len)]),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Value {}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            None => f.write_str("null"),
            Some(v) => fmt::Debug::fmt(&Bytes::copy_from_slice(v), f),
        }
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// No headers, with room for `n`.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n))
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.get().unwrap_or_default())
    }

    /// Whether the last value of `name` is null (present, without a value).
    pub fn is_null(&self, name: &str) -> bool {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_str() == name)
            .is_some_and(|(_, v)| matches!(v, Value::Null))
    }

    /// The last value of `name` as UTF-8 text (None if absent or not UTF-8).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `name` to `value`, replacing every earlier value.
    pub fn insert(&mut self, name: impl Into<Arc<str>>, value: impl Into<Bytes>) {
        self.set(name.into().into(), Value::Shared(value.into()));
    }

    fn set(&mut self, name: Name, value: Value) {
        if self.0.iter().any(|(n, _)| n.is(&name)) {
            self.0.retain(|(n, _)| !n.is(&name));
        }
        self.0.push((name, value));
    }

    /// Appends a value, keeping earlier ones.
    pub fn append(&mut self, name: impl Into<Arc<str>>, value: impl Into<Bytes>) {
        self.0
            .push((name.into().into(), Value::Shared(value.into())));
    }

    /// Appends a null value (a header without one), keeping earlier ones.
    pub fn append_null(&mut self, name: impl Into<Arc<str>>) {
        self.0.push((name.into().into(), Value::Null));
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n.as_str() != name);
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All pairs, in order (a null value reads as empty).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .iter()
            .map(|(n, v)| (n.as_str(), v.get().unwrap_or_default()))
    }

    /// All pairs, in order, null values as `None`.
    pub(crate) fn iter_raw(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.get()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets a well-known header (a [`header`] constant) without allocating
    /// its name.
    pub(crate) fn insert_known(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.set(Name::Known(name), Value::Shared(value.into()));
    }

    /// Sets a well-known header to a copy of `value`, allocating nothing
    /// when the value is short (a timestamp).
    pub(crate) fn insert_known_copy(&mut self, name: &'static str, value: &[u8]) {
        self.set(Name::Known(name), Value::copied(value));
    }

    /// Appends `name` with a copy of `value` (kept inline when short) or,
    /// when given, the shared `long` bytes holding it: for a client that
    /// copies a record's long values into one buffer.
    pub(crate) fn append_from(&mut self, name: Name, value: Option<&[u8]>, long: Option<Bytes>) {
        let value = match (value, long) {
            (None, _) => Value::Null,
            (Some(_), Some(long)) => Value::Shared(long),
            (Some(v), None) => Value::copied(v),
        };
        self.0.push((name, value));
    }

    /// Appends a well-known header known to be absent, a copy of `value`,
    /// allocating nothing when the value is short (a message id).
    pub(crate) fn append_known_copy(&mut self, name: &'static str, value: &[u8]) {
        self.0.push((Name::Known(name), Value::copied(value)));
    }

    /// Bytes taken by names and values.
    pub(crate) fn byte_size(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| n.as_str().len() + v.get().map_or(0, <[u8]>::len))
            .sum()
    }
}

impl<N: Into<Arc<str>>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into().into(), Value::Shared(v.into())))
                .collect(),
        )
    }
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A record as read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic it was read from.
    pub topic: Arc<str>,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// Payload bytes, exactly as produced (empty for a tombstone: see
    /// [`Record::is_tombstone`]).
    pub payload: Bytes,
    /// Broker timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Bytes taken by key, headers and payload, computed once.
    pub(crate) size: usize,
    /// No payload at all (null), not an empty one.
    null_payload: bool,
}

impl Record {
    /// A record as a broker returns it.
    pub(crate) fn new(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        key: Option<Bytes>,
        headers: Headers,
        payload: Option<Bytes>,
        timestamp_ms: i64,
    ) -> Self {
        let null_payload = payload.is_none();
        let payload = payload.unwrap_or_default();
        let size = key.as_ref().map_or(0, |k| k.len()) + headers.byte_size() + payload.len();
        Record {
            topic,
            partition,
            offset,
            key,
            headers,
            payload,
            timestamp_ms,
            size,
            null_payload,
        }
    }

    /// Whether the record has no payload at all (a null value: Kafka's
    /// tombstone, which log compaction reads as "delete this key"), as
    /// opposed to an empty one.
    pub fn is_tombstone(&self) -> bool {
        self.null_payload
    }

    /// The payload as the broker has it: `None` for a tombstone.
    pub(crate) fn payload_or_null(&self) -> Option<Bytes> {
        (!self.null_payload).then(|| self.payload.clone())
    }

    /// Bytes taken by key, headers and payload.
    pub(crate) fn byte_size(&self) -> usize {
        self.size
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// A record to be written to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutgoingRecord {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    /// None: a tombstone (no payload at all).
    pub(crate) payload: Option<Bytes>,
    pub(crate) timestamp_ms: i64,
}

impl OutgoingRecord {
    pub(crate) fn byte_size(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len())
            + self.headers.byte_size()
            + self.payload.as_ref().map_or(0, Bytes::len)
    }
}

/// A new message id: a UUIDv7 (time-ordered), as text. Its random bits come
/// from a fast thread-local generator, not a system call per message.
pub(crate) fn new_message_id(now_ms: i64) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let random = fastrand::u128(..).to_le_bytes();
    let id = uuid::Builder::from_unix_timestamp_millis(
        now_ms.max(0) as u64,
        &[
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
            random[8], random[9],
        ],
    )
    .into_uuid();
    hyphenated(id.as_bytes())
}

/// `uuid` as lower-case hyphenated text (8-4-4-4-12), two digits per byte
/// from a table.
fn hyphenated(uuid: &[u8; 16]) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const PAIRS: [[u8; 2]; 256] = {
        let mut pairs = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        pairs
    };
    let mut text = [b'-'; uuid::fmt::Hyphenated::LENGTH];
    let mut at = 0;
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at..at + 2].copy_from_slice(&PAIRS[usize::from(*byte)]);
        at += 2;
    }
    text
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_last_wins_and_insert_replaces() {
        let mut h = Headers::new();
        h.append("a", "1");
        h.append("a", "2");
        assert_eq!(h.get_str("a"), Some("2"));
        h.insert("a", "3");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("a"), Some(&b"3"[..]));
        h.remove("a");
        assert!(h.is_empty());
        h.insert("bin", vec![0xff, 0xfe]);
        assert_eq!(h.get_str("bin"), None);
    }

    #[test]
    fn message_ids_are_uuid_v7_text() {
        for _ in 0..1_000 {
            let text = new_message_id(1_764_662_400_123);
            let id = uuid::Uuid::parse_str(std::str::from_utf8(&text).unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.hyphenated().to_string().as_bytes(), &text[..]);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((secs, nanos), (1_764_662_400, 123_000_000));
        }
    }

    #[test]
    fn copied_values_read_and_compare_as_their_bytes_whatever_their_length() {
        let short = b"1764662400000";
        let long = [b'x'; INLINE + 1];
        let mut copied = Headers::new();
        copied.append_known_copy(header::MESSAGE_ID, short);
        copied.insert_known_copy(header::TIMESTAMP, &long);
        assert!(matches!(copied.0[0].1, Value::Inline { .. }));
        assert!(matches!(copied.0[1].1, Value::Shared(_)));
        let mut shared = Headers::new();
        shared.append(header::MESSAGE_ID, short.to_vec());
        shared.append(header::TIMESTAMP, long.to_vec());
        assert_eq!(copied, shared);
        assert_eq!(copied.get(header::MESSAGE_ID), Some(&short[..]));
        assert_eq!(copied.byte_size(), shared.byte_size());
        copied.insert_known_copy(header::MESSAGE_ID, b"");
        assert_eq!(copied.get(header::MESSAGE_ID), Some(&b""[..]));
        assert!(!copied.is_null(header::MESSAGE_ID));
        copied.append_null("n");
        assert!(copied.is_null("n"));
        assert_ne!(copied.iter_raw().last(), Some(("n", Some(&b""[..]))));
    }
}
