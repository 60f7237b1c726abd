//! Record conversion: a librdkafka message copied into a crate [`Record`],
//! with its topic and header names interned.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Message};
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

    fn topic(&mut self, topic: &str) -> Arc<str> {
        match &self.last_topic {
            Some(last) if **last == *topic => last.clone(),
            _ => {
                let t = self.shared(topic);
                self.last_topic = Some(t.clone());
                t
            }
        }
    }

    /// The name of the `i`th header of a record.
    fn header(&mut self, i: usize, name: &str) -> Name {
        if let Some(last) = self.last_headers.get(i).filter(|n| n.as_str() == name) {
            return last.clone();
        }
        let found = match header::known(name) {
            Some(known) => Name::Known(known),
            None => Name::Shared(self.shared(name)),
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

/// Copies a librdkafka message into a [`Record`]: its key, payload and
/// long header values in one buffer (one copy, one allocation), shared by
/// slices; short header values inline in the header list; names interned
/// (the well-known ones not allocated at all).
pub(crate) fn to_record(m: &BorrowedMessage<'_>, names: &mut Names) -> Record {
    let (key, payload) = (m.key(), m.payload());
    // The headers, read once (each read is a call into librdkafka).
    let mut raw: SmallVec<[RawHeader<'_>; 8]> = SmallVec::new();
    read_headers(m, &mut raw);
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
    Record::new(
        names.topic(m.topic()),
        m.partition(),
        m.offset(),
        key,
        headers,
        payload,
        m.timestamp().to_millis().unwrap_or(0),
    )
}
