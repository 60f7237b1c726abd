//! The `Publish` message: a record to send, built by value like
//! `FutureRecord::to(..).key(..).payload(..)`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Message;
use bytes::Bytes;
use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::codec::{type_name_of, ContentType};
use crate::envelope::{header, small, Headers, Name};
use crate::error::{Error, Result};
use crate::observe::trace::TraceContext;

/// A record to publish. Send it to the [`Producer`](crate::Producer); the
/// answer is a [`PublishOutcome`] or a typed [`Error`].
///
/// ```
/// # use kafkactor::Publish;
/// # #[derive(serde::Serialize)] struct OrderPlaced { id: u64 }
/// let publish = Publish::to("orders")
///     .key("order-1")
///     .header("x-tenant", "acme")
///     .message(&OrderPlaced { id: 1 })?;
/// # Ok::<(), kafkactor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Publish {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    /// None: a tombstone.
    pub(crate) payload: Option<Bytes>,
    pub(crate) due: Option<Due>,
    content_type: ContentType,
    /// The topic name is known to be valid.
    topic_checked: bool,
}

/// Names publishes from one thread share, each allocated once: up to
/// `most` of them, and the last one taken, which a run of publishes to one
/// topic, with one header, compares instead of hashing.
struct Interned {
    kept: FxHashSet<Arc<str>>,
    last: Option<Arc<str>>,
    most: usize,
}

impl Interned {
    const fn new(most: usize) -> Self {
        Interned {
            kept: FxHashSet::with_hasher(rustc_hash::FxBuildHasher),
            last: None,
            most,
        }
    }

    /// `name` shared, and whether `keep` accepts it (checked once per
    /// name: only accepted names are kept).
    fn get(&mut self, name: &str, keep: impl FnOnce(&str) -> bool) -> (Arc<str>, bool) {
        if let Some(last) = self.last.as_ref().filter(|l| ***l == *name) {
            return (last.clone(), true);
        }
        if let Some(shared) = self.kept.get(name) {
            self.last = Some(shared.clone());
            return (shared.clone(), true);
        }
        let shared = Arc::<str>::from(name);
        let kept = keep(name);
        if kept {
            if self.kept.len() < self.most {
                self.kept.insert(shared.clone());
            }
            self.last = Some(shared.clone());
        }
        (shared, kept)
    }
}

thread_local! {
    /// Valid topic names published to from this thread.
    static TOPICS: RefCell<Interned> = const { RefCell::new(Interned::new(1024)) };
    /// Header names set from this thread.
    static HEADER_NAMES: RefCell<Interned> = const { RefCell::new(Interned::new(256)) };
}

/// `name` as a header name shared with earlier headers of this thread.
fn header_name(name: &str) -> Name {
    Name::Shared(HEADER_NAMES.with(|names| names.borrow_mut().get(name, |_| true).0))
}

/// `topic` as an `Arc<str>`, shared with earlier publishes from this
/// thread, and whether it is a valid name (only valid names are kept).
fn topic_name(topic: &str) -> (Arc<str>, bool) {
    TOPICS.with(|topics| {
        topics
            .borrow_mut()
            .get(topic, |t| crate::error::check_topic(t).is_ok())
    })
}

/// When a delayed record is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// This long after the Producer handles the publish.
    After(Duration),
    /// At this wall-clock time.
    At(SystemTime),
}

impl Due {
    /// The due time in milliseconds since the Unix epoch, rounded up so the
    /// record is never due early; `now` is the publish time.
    pub(crate) fn at_ms(self, now: SystemTime) -> i64 {
        epoch_ms_rounded_up(match self {
            Due::After(d) => now
                .checked_add(d)
                .unwrap_or(now + Duration::from_secs(u32::MAX as u64)),
            Due::At(t) => t,
        })
    }
}

/// `t` in milliseconds since the Unix epoch, rounded up (0 before the epoch).
pub(crate) fn epoch_ms_rounded_up(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => {
            let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(ms).unwrap_or(i64::MAX)
        }
        Err(_) => 0,
    }
}

impl Publish {
    /// A record for `topic`, with an empty payload until
    /// [`message`](Publish::message) or [`payload`](Publish::payload) sets one.
    pub fn to(topic: impl AsRef<str>) -> Self {
        let (topic, topic_checked) = topic_name(topic.as_ref());
        Publish {
            topic,
            topic_checked,
            partition: None,
            key: None,
            headers: Headers::new(),
            payload: Some(Bytes::new()),
            due: None,
            content_type: ContentType::MsgPack,
        }
    }

    /// Delivers the record `delay` from now instead of at once (see
    /// [`Delays`](crate::Delays)); the answer is [`PublishOutcome::Delayed`].
    /// A zero delay publishes directly. The application must have delayed
    /// publishing on ([`AppBuilder::delays`](crate::AppBuilder::delays)).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.due = Some(Due::After(delay));
        self
    }

    /// Delivers the record at `time` (wall clock) instead of at once; a
    /// time not in the future publishes directly. See [`Publish::delay`].
    pub fn at(mut self, time: SystemTime) -> Self {
        self.due = Some(Due::At(time));
        self
    }

    /// The key: records with the same key go to the same partition, in order.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(small::copy(key.as_ref()));
        self
    }

    /// Adds a header (replacing one of the same name).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.insert_copy(header_name(name), value.as_ref());
        self
    }

    /// The tenant the record belongs to (header `x-tenant`). A handler's
    /// publishes carry the tenant of the record it handles unless they set
    /// their own.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.headers
            .insert_known_copy(header::TENANT, tenant.as_bytes());
        self
    }

    /// The idempotency key (header `x-idempotency-key`): what an idempotent
    /// subscription reading it with
    /// [`Idempotency::key_header`](crate::idempotency::Idempotency::key_header)
    /// handles once (two publishes of one business event, with two message
    /// ids, share it).
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.headers
            .insert_known_copy(header::IDEMPOTENCY_KEY, key.as_bytes());
        self
    }

    /// The correlation id (header `x-correlation-id`), inherited like the
    /// tenant.
    pub fn correlation_id(mut self, id: &str) -> Self {
        self.headers
            .insert_known_copy(header::CORRELATION_ID, id.as_bytes());
        self
    }

    /// The publisher's trace context, written as the `traceparent` header
    /// (instead of one made by kafkactor; see [`TraceContext`]). With an
    /// OpenTelemetry layer recording kafkactor's spans (feature `otel`) it
    /// is the `publish` span's parent instead, and that span's context is
    /// what gets written.
    pub fn trace_context(mut self, ctx: TraceContext) -> Self {
        self.headers
            .insert_known(header::TRACEPARENT, ctx.to_string());
        self
    }

    /// An explicit partition instead of the key's.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Serialize the next [`message`](Publish::message) as JSON instead of MessagePack.
    pub fn json(self) -> Self {
        self.content_type(ContentType::Json)
    }

    /// The serialization of the next [`message`](Publish::message).
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Serializes `message` as the payload and stamps the `content-type`
    /// and type-name headers. The type name is the type's own name
    /// (see [`type_name_of`]); override it with [`type_name`](Publish::type_name) afterwards.
    ///
    /// Fails with [`Error::InvalidTopic`] when the topic name is not a legal
    /// Kafka topic name: the publish is refused where it is built (one with
    /// a raw [`payload`](Publish::payload) is refused by `send`).
    pub fn message<T: Serialize + ?Sized>(mut self, message: &T) -> Result<Self> {
        if !self.topic_checked {
            return Err(Error::InvalidTopic(self.topic.to_string()));
        }
        self.payload = Some(self.content_type.encode(message)?);
        self.headers
            .insert_known(header::CONTENT_TYPE, self.content_type.mime());
        self.headers
            .insert_known(header::TYPE_NAME, type_name_of::<T>());
        Ok(self)
    }

    /// Raw payload bytes, sent as they are.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// No payload at all: a tombstone, which a compacted topic reads as
    /// "delete this key". Consumers see [`Delivery::is_tombstone`](crate::Delivery::is_tombstone);
    /// a handler of `Delivery<Option<T>>` gets it as `None` (a handler of
    /// `Delivery<T>` cannot decode it, and it is dead-lettered).
    ///
    /// ```
    /// # use kafkactor::Publish;
    /// let delete = Publish::to("customers").key("customer-7").tombstone();
    /// ```
    pub fn tombstone(mut self) -> Self {
        self.payload = None;
        self.headers.remove(header::CONTENT_TYPE);
        self.headers.remove(header::TYPE_NAME);
        self
    }

    /// The type name consumers route on.
    pub fn type_name(mut self, name: &str) -> Self {
        self.headers.insert(header::TYPE_NAME, name.to_string());
        self
    }

    /// The destination topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.topic_checked {
            crate::error::check_topic(&self.topic)?;
        }
        if let Some(p) = self.partition {
            if p < 0 {
                return Err(Error::Config(format!("partition {p} is negative")));
            }
        }
        Ok(())
    }
}

impl Message for Publish {
    type Result = Result<PublishOutcome>;
}

/// Where a published record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// Written to its topic now.
    Direct {
        /// Partition it was written to.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
    /// Written to a delay bucket; delivered to its topic once due.
    Delayed {
        /// When it is due (never delivered before).
        deliver_at: SystemTime,
        /// The length of the bucket it waits in first (zero for delays
        /// shorter than the smallest bucket).
        bucket: Duration,
        /// Partition of the bucket topic it was written to.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
    /// Taken into the transaction of the record its handler is handling
    /// (a [transactional](crate::Subscription::transactional)
    /// subscription's): written, with that record's offset, when the
    /// transaction commits; never written if the handling does not end in
    /// an acknowledgement.
    Transactional,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct OrderPlaced {
        id: u64,
    }

    #[test]
    fn message_stamps_type_and_content_type() {
        let p = Publish::to("orders")
            .json()
            .message(&OrderPlaced { id: 7 })
            .unwrap();
        assert_eq!(p.headers.get_str(header::TYPE_NAME), Some("OrderPlaced"));
        assert_eq!(
            p.headers.get_str(header::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(p.payload.as_deref(), Some(&br#"{"id":7}"#[..]));
        assert!(p.validate().is_ok());
        assert!(matches!(
            Publish::to("").validate(),
            Err(Error::InvalidTopic(_))
        ));
    }
}
