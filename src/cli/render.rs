//! A record as the command shows it: as JSON (payload decoded by its
//! content type, headers as text) and as text.

use serde_json::{json, Map, Value};

use crate::codec::ContentType;
use crate::envelope::{header, Record};

/// `record` as a JSON object: where it is, its key, headers and payload.
pub(crate) fn record(record: &Record) -> Value {
    let headers: Map<String, Value> = record
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), text(value)))
        .collect();
    json!({
        "topic": &*record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.as_deref().map(text),
        "headers": headers,
        "payload": payload(record),
    })
}

/// The payload decoded by its `content-type` (JSON or MessagePack), else
/// as text, else its size; null for a tombstone.
fn payload(record: &Record) -> Value {
    if record.is_tombstone() {
        return Value::Null;
    }
    let decoded = record
        .headers
        .get_str(header::CONTENT_TYPE)
        .and_then(ContentType::from_mime)
        .and_then(|ct| ct.decode::<Value>(&record.payload).ok());
    decoded.unwrap_or_else(|| match std::str::from_utf8(&record.payload) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "bytes": record.payload.len() }),
    })
}

/// Bytes as text (lossy: a header or key is meant to be text).
fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// `record` as lines of text: where it is, key, each header, the payload.
pub(crate) fn record_text(record: &Record) -> String {
    let value = self::record(record);
    let mut out = format!(
        "{} [{}] offset {}  timestamp {}\n",
        record.topic, record.partition, record.offset, record.timestamp_ms
    );
    if let Some(key) = &record.key {
        out += &format!("  key: {}\n", String::from_utf8_lossy(key));
    }
    for (name, value) in record.headers.iter() {
        out += &format!("  {name}: {}\n", String::from_utf8_lossy(value));
    }
    out += &format!("  payload: {}\n", value["payload"]);
    out
}
