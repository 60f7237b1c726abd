//! Record conversion: a librdkafka message copied into a crate [`Record`],
//! with its topic and header names interned.

#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::CStr;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;
use smallvec::SmallVec;

use crate::broker::kafka::headers::{read_headers, RawHeader};
use crate::envelope::{header, Headers, Name, Record, INLINE};

/// Interned topic and header names: records share one allocation per name
/// instead of one per record, and well-known header names none. Records
/// of one producer mostly carry the same headers in the same order, so the
/// names of the last record are tried first.
#[derive(Default)]
pub(crate) struct Names {
    all: rustc_hash::FxHashMap<Box<str>, Arc<str>>,
    /// The last topic, and the last record's header names by position.
    last_topic: Option<Arc<str>>,
    last_headers: Vec<Name>,
}

impl Names {
    fn shared(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.all.get(name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.all.insert(name.into(), t.clone());
        t
    }

    /// The topic named `topic` (compared as bytes with the last one before
    /// anything else: Kafka's topic names are ASCII).
    fn topic(&mut self, topic: &[u8]) -> Arc<str> {
        match &self.last_topic {
            Some(last) if last.as_bytes() == topic => last.clone(),
            _ => {
                let t = self.shared(&String::from_utf8_lossy(topic));
                self.last_topic = Some(t.clone());
                t
            }
        }
    }

    /// The name of the `i`th header of a record: compared as bytes with
    /// the last record's, read as UTF-8 (lossily) only when it differs.
    fn header(&mut self, i: usize, name: &[u8]) -> Name {
        if let Some(last) = self
            .last_headers
            .get(i)
            .filter(|n| n.as_str().as_bytes() == name)
        {
            return last.clone();
        }
        let name: Cow<'_, str> = String::from_utf8_lossy(name);
        let found = match header::known(&name) {
            Some(known) => Name::Known(known),
            None => Name::Shared(self.shared(&name)),
        };
        if i < self.last_headers.len() {
            self.last_headers[i] = found.clone();
        } else if i == self.last_headers.len() && i < LAST_HEADERS {
            self.last_headers.push(found.clone());
        }
        found
    }
}

/// How many header names by position [`Names`] remembers.
const LAST_HEADERS: usize = 16;

/// Copies a librdkafka message into a [`Record`] (see [`to_record_raw`]).
pub(crate) fn to_record(m: &BorrowedMessage<'_>, names: &mut Names) -> Record {
    // SAFETY: `m` wraps a live message, borrowed for this call.
    unsafe { to_record_raw(m.ptr(), names) }
}

/// A part of a message: `len` bytes at `ptr`, or none when `ptr` is null.
///
/// # Safety
/// A non-null `ptr` points at `len` bytes that outlive `'m`.
unsafe fn part<'m>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'m [u8]> {
    // SAFETY: the caller's contract.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// Copies a librdkafka message into a [`Record`]: its key, payload and
/// long header values in one buffer (one copy, one allocation), shared by
/// slices; short header values inline in the header list; names interned
/// (the well-known ones not allocated at all).
///
/// # Safety
/// `m` is a live message, not destroyed during the call.
pub(super) unsafe fn to_record_raw(m: *mut rdsys::rd_kafka_message_t, names: &mut Names) -> Record {
    // SAFETY: live (the caller's contract); key and payload are owned by
    // the message, their lengths librdkafka's.
    let msg = unsafe { &*m };
    let (key, payload) = unsafe { (part(msg.key, msg.key_len), part(msg.payload, msg.len)) };
    // The headers, read once (each read is a call into librdkafka).
    let mut raw: SmallVec<[RawHeader<'_>; 8]> = SmallVec::new();
    // SAFETY: live for the call, as `raw` is.
    unsafe { read_headers(m, &mut raw) };
    /// A value too long to keep inline.
    fn long(v: Option<&[u8]>) -> Option<&[u8]> {
        v.filter(|v| v.len() > INLINE)
    }
    let size = key.map_or(0, <[u8]>::len)
        + payload.map_or(0, <[u8]>::len)
        + raw
            .iter()
            .filter_map(|(_, v)| long(*v))
            .map(<[u8]>::len)
            .sum::<usize>();
    let mut buffer = Vec::with_capacity(size);
    let longs = raw.iter().filter_map(|(_, v)| long(*v));
    for part in key.into_iter().chain(payload).chain(longs) {
        buffer.extend_from_slice(part);
    }
    let all = Bytes::from(buffer);
    let mut at = 0;
    let mut next = |len: usize| {
        at += len;
        all.slice(at - len..at)
    };
    let key = key.map(|k| next(k.len()));
    let payload = payload.map(|p| next(p.len()));
    let mut headers = Headers::with_capacity(raw.len());
    for (i, (name, value)) in raw.iter().enumerate() {
        let shared = long(*value).map(|v| next(v.len()));
        // Kept null: a dead letter carries it unchanged.
        headers.append_from(names.header(i, name), *value, shared);
    }
    // SAFETY: a live message's topic handle, whose name is NUL-terminated
    // and lives as long as the handle.
    let topic = unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(msg.rkt)) };
    let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: a live message.
    let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
    let timestamp = match kind {
        rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => 0,
        _ if timestamp == -1 => 0,
        _ => timestamp,
    };
    Record::new(
        names.topic(topic.to_bytes()),
        msg.partition,
        msg.offset,
        key,
        headers,
        payload,
        timestamp,
    )
}
