//! The payload pipeline: serialization (MessagePack by default, or JSON).
//!
//! Stages run in a fixed, documented order: serialize, then (later issues)
//! compress, then encrypt; decoding runs them in reverse. The stages applied
//! are named in the `content-type` and `content-encoding` headers, so any
//! Kafka client can read what kafkactor writes.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::{header, Headers, Record};
use crate::error::{Error, Result};

/// How a payload is serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ContentType {
    /// MessagePack with named fields (`application/msgpack`), the default.
    #[default]
    MsgPack,
    /// JSON (`application/json`).
    Json,
}

impl ContentType {
    /// The MIME name written to the `content-type` header.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::MsgPack => "application/msgpack",
            ContentType::Json => "application/json",
        }
    }

    /// Parses a `content-type` header value (parameters such as `; charset=utf-8` are ignored).
    pub fn from_mime(value: &str) -> Option<Self> {
        let base = value.split(';').next().unwrap_or("").trim();
        let is = |name: &str| base.eq_ignore_ascii_case(name);
        if is("application/msgpack") || is("application/x-msgpack") || is("application/vnd.msgpack")
        {
            Some(ContentType::MsgPack)
        } else if is("application/json") {
            Some(ContentType::Json)
        } else {
            None
        }
    }

    /// Serializes `value`.
    ///
    /// A small payload is serialized into a reused buffer of this thread
    /// and copied out at its exact size (a short one into a buffer shared
    /// with other short copies, no allocation of its own); a large one
    /// keeps the buffer it was written into (no copy).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(ENCODE_CAPACITY));
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                self.encode_into(&mut buffer, value)?;
                if buffer.len() <= COPY_OUT_MAX {
                    return Ok(crate::envelope::small::copy(&buffer));
                }
                let full = std::mem::replace(&mut *buffer, Vec::with_capacity(ENCODE_CAPACITY));
                Ok(Bytes::from(full))
            }
            // Serializing from inside a serialization: a buffer of its own.
            Err(_) => {
                let mut buffer = Vec::with_capacity(ENCODE_CAPACITY);
                self.encode_into(&mut buffer, value)?;
                Ok(Bytes::from(buffer))
            }
        })
    }

    fn encode_into<T: Serialize + ?Sized>(self, buffer: &mut Vec<u8>, value: &T) -> Result<()> {
        match self {
            ContentType::MsgPack => rmp_serde::encode::write_named(buffer, value)
                .map_err(|e| Error::Encode(e.to_string())),
            ContentType::Json => {
                serde_json::to_writer(buffer, value).map_err(|e| Error::Encode(e.to_string()))
            }
        }
    }

    /// Deserializes `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            ContentType::MsgPack => {
                rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(format!("msgpack: {e}")))
            }
            ContentType::Json => {
                serde_json::from_slice(bytes).map_err(|e| Error::Decode(format!("json: {e}")))
            }
        }
    }

    /// Decodes a record without a payload (a tombstone) as this format's
    /// null: an `Option<T>` becomes `None`, anything else cannot take it.
    pub(crate) fn decode_null<T: DeserializeOwned>(self) -> Result<T> {
        let null: &[u8] = match self {
            ContentType::MsgPack => &[0xc0],
            ContentType::Json => b"null",
        };
        self.decode(null).map_err(|e| {
            Error::Decode(format!(
                "the record has no payload (a tombstone), which {} cannot take ({e}): \
                 handle Delivery<Option<..>> to receive tombstones",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// The content type a record declares, or `default` when it declares none.
/// An unknown declared type or a content-encoding this build cannot undo is an error.
pub(crate) fn content_type_of(headers: &Headers, default: ContentType) -> Result<ContentType> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = String::from_utf8_lossy(enc);
        if !enc.trim().is_empty() && enc.trim() != "identity" {
            return Err(Error::Decode(format!(
                "unsupported content-encoding {enc:?}"
            )));
        }
    }
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(default),
        // What kafkactor stamps, told at a glance.
        Some(b"application/msgpack") => Ok(ContentType::MsgPack),
        Some(b"application/json") => Ok(ContentType::Json),
        Some(raw) => {
            let text = std::str::from_utf8(raw)
                .map_err(|_| Error::Decode("content-type header is not UTF-8".into()))?;
            ContentType::from_mime(text)
                .ok_or_else(|| Error::Decode(format!("unknown content-type {text:?}")))
        }
    }
}

/// What a handler's message is made from: any type serde can deserialize
/// (decoded by the record's `content-type`), or [`Raw`], the payload as it
/// came. Implemented for both; not meant to be implemented elsewhere.
pub trait Decode: Sized + Send + 'static {
    /// Whether records are routed to this type by their type name; if not,
    /// it takes every record no other route of its handler takes.
    #[doc(hidden)]
    const BY_TYPE_NAME: bool = true;

    /// The message of `record`; `default` is the content type of a record
    /// that declares none.
    #[doc(hidden)]
    fn decode_record(record: &Record, default: ContentType) -> Result<Self>;
}

impl<T: DeserializeOwned + Send + 'static> Decode for T {
    #[inline]
    fn decode_record(record: &Record, default: ContentType) -> Result<Self> {
        let ct = content_type_of(&record.headers, default)?;
        if record.is_tombstone() {
            ct.decode_null()
        } else {
            ct.decode(&record.payload)
        }
    }
}

impl Record {
    /// Decodes the record's payload as `T`, by its `content-type` header
    /// (MessagePack when it has none, as a subscription's default), as a
    /// handler of `Delivery<T>` would get it: for tests and tools reading a
    /// topic back. A tombstone decodes as an `Option`'s `None`.
    ///
    /// ```
    /// # use kafkactor::prelude::*;
    /// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
    /// let broker = Broker::memory();
    /// let app = Kafkactor::builder().broker(broker.clone()).start().await?;
    /// app.producer().send(Publish::to("orders").message(&42u64)?).await??;
    /// let records = broker.read_topic("orders").await?;
    /// assert_eq!(records[0].decode::<u64>()?, 42);
    /// # app.shutdown().await }
    /// ```
    pub fn decode<T: Decode>(&self) -> Result<T> {
        T::decode_record(self, ContentType::MsgPack)
    }
}

/// A record's payload as it came, not decoded: handle `Delivery<Raw>` to
/// read bytes of any format (or none) at no decoding cost. It takes every
/// record of its subscription whatever its type name (with
/// [`Routes`](crate::Routes), every record no other route takes). A
/// tombstone is an empty `Raw`
/// ([`Delivery::is_tombstone`](crate::Delivery::is_tombstone) tells it from
/// an empty payload).
///
/// ```
/// # use kafkactor::prelude::*;
/// let handler = |d: Delivery<Raw>| async move {
///     println!("{} bytes", d.message().len());
///     Outcome::Ack
/// };
/// # let _ = Kafkactor::builder().handle(Subscription::to("audit").group("g"), handler);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw(Bytes);

impl Raw {
    /// The payload (shared with the record, not copied).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Takes the payload.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for Raw {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Decode for Raw {
    const BY_TYPE_NAME: bool = false;

    #[inline]
    fn decode_record(record: &Record, _: ContentType) -> Result<Self> {
        Ok(Raw(record.payload.clone()))
    }
}

/// The buffer an encoding starts with.
const ENCODE_CAPACITY: usize = 256;
/// Payloads up to this size are copied out of the reused buffer.
const COPY_OUT_MAX: usize = 1024;

/// The name a message type is published and routed under: the type's own
/// name without its module path (`OrderPlaced` for `shop::events::OrderPlaced`).
pub fn type_name_of<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    // One pass over a short name, on every publish: the last segment of
    // the path before any generic arguments.
    let mut start = 0;
    for (i, b) in full.bytes().enumerate() {
        match b {
            b'<' => return &full[start..i],
            b':' => start = i + 1,
            _ => {}
        }
    }
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
    struct Order {
        id: u64,
        note: String,
        tags: Vec<String>,
    }

    proptest! {
        #[test]
        fn round_trips(id: u64, note in ".*", tags in proptest::collection::vec(".*", 0..4)) {
            let order = Order { id, note, tags };
            for ct in [ContentType::MsgPack, ContentType::Json] {
                let bytes = ct.encode(&order).unwrap();
                prop_assert_eq!(ct.decode::<Order>(&bytes).unwrap(), order.clone());
            }
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = ContentType::MsgPack
            .decode::<Order>(b"\xc1\xc1")
            .unwrap_err();
        assert!(matches!(err, Error::Decode(_)));
        let err = ContentType::Json.decode::<Order>(b"{").unwrap_err();
        assert!(matches!(err, Error::Decode(_)));
    }

    #[test]
    fn content_type_header() {
        let mut h = Headers::new();
        assert_eq!(
            content_type_of(&h, ContentType::Json).unwrap(),
            ContentType::Json
        );
        h.insert(header::CONTENT_TYPE, "application/json; charset=utf-8");
        assert_eq!(
            content_type_of(&h, ContentType::MsgPack).unwrap(),
            ContentType::Json
        );
        h.insert(header::CONTENT_TYPE, "text/csv");
        assert!(content_type_of(&h, ContentType::MsgPack).is_err());
        h.insert(header::CONTENT_TYPE, vec![0xffu8]);
        assert!(content_type_of(&h, ContentType::MsgPack).is_err());
    }

    #[test]
    fn short_type_names() {
        assert_eq!(type_name_of::<Order>(), "Order");
        assert_eq!(type_name_of::<Vec<u8>>(), "Vec");
        assert_eq!(type_name_of::<u64>(), "u64");
    }
}
