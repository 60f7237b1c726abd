//! The records: [`Record`] as read from the broker, [`OutgoingRecord`] as
//! written to it, and [`TopicPartition`], where a record lives.

use std::sync::Arc;

use bytes::Bytes;

use super::Headers;

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
