//! The `Publish` message: a record to send, built by value like
//! `FutureRecord::to(..).key(..).payload(..)`.

use actix::Message;
use bytes::Bytes;
use serde::Serialize;

use crate::codec::{type_name_of, ContentType};
use crate::envelope::{header, Headers};
use crate::error::{Error, Result};

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
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Bytes>,
    pub(crate) headers: Headers,
    pub(crate) payload: Bytes,
    content_type: ContentType,
}

impl Publish {
    /// A record for `topic`, with an empty payload until
    /// [`message`](Publish::message) or [`payload`](Publish::payload) sets one.
    pub fn to(topic: impl Into<String>) -> Self {
        Publish {
            topic: topic.into(),
            partition: None,
            key: None,
            headers: Headers::new(),
            payload: Bytes::new(),
            content_type: ContentType::MsgPack,
        }
    }

    /// The key: records with the same key go to the same partition, in order.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// Adds a header (replacing one of the same name).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .insert(name, Bytes::copy_from_slice(value.as_ref()));
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
    pub fn message<T: Serialize + ?Sized>(mut self, message: &T) -> Result<Self> {
        self.payload = self.content_type.encode(message)?;
        self.headers
            .insert_known(header::CONTENT_TYPE, self.content_type.mime());
        self.headers
            .insert_known(header::TYPE_NAME, type_name_of::<T>());
        Ok(self)
    }

    /// Raw payload bytes, sent as they are.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
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
        crate::error::check_topic(&self.topic)?;
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
        assert_eq!(&p.payload[..], br#"{"id":7}"#);
        assert!(p.validate().is_ok());
        assert!(matches!(
            Publish::to("").validate(),
            Err(Error::InvalidTopic(_))
        ));
    }
}
