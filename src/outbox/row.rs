//! An outbox row: how a [`Publish`] is written to the table and read back.
//!
//! Headers are one `BYTEA` of their own encoding: per header, the name's
//! length (u16, big-endian) and bytes, then the value's length (i32,
//! big-endian; -1 for a null value) and bytes.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::Row as _;

use super::SHARDS;
use crate::envelope::Headers;
use crate::error::{Error, Result};
use crate::publish::{Due, Publish};

/// The columns of a row that are not taken from the publish as they are.
pub(super) struct Row {
    pub(super) shard: i16,
    pub(super) headers: Vec<u8>,
    pub(super) deliver_at_ms: Option<i64>,
}

impl Row {
    pub(super) fn of(publish: &Publish, now: SystemTime) -> Self {
        Row {
            shard: shard(publish),
            headers: encode_headers(&publish.headers),
            deliver_at_ms: publish.due.map(|due| due.at_ms(now)),
        }
    }
}

/// The shard of a record: by its key, or by its topic when it has none (so
/// the rows of one key, and the keyless rows of one topic, keep their order).
fn shard(publish: &Publish) -> i16 {
    let hashed = publish.key.as_deref().unwrap_or(publish.topic().as_bytes());
    (crate::partitioner::murmur2(hashed) % SHARDS as u32) as i16
}

fn encode_headers(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for (name, value) in headers.iter_raw() {
        // Kafka header names are short; a longer one is cut at 64 KiB.
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(value) => {
                out.extend_from_slice(&(value.len() as i32).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    out
}

pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<Headers> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if bytes.len() < n {
            return Err(Error::Decode("outbox headers cut short".into()));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut headers = Headers::new();
    while !bytes.is_empty() {
        let len = u16::from_be_bytes(take(&mut bytes, 2)?.try_into().expect("2 bytes"));
        let name = std::str::from_utf8(take(&mut bytes, len as usize)?)
            .map_err(|_| Error::Decode("an outbox header name is not UTF-8".into()))?
            .to_string();
        let len = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
        if len < 0 {
            headers.append_null(name);
        } else {
            let value = Bytes::copy_from_slice(take(&mut bytes, len as usize)?);
            headers.append(name, value);
        }
    }
    Ok(headers)
}

/// A row read by the relay: its id and the record to publish, or why the
/// row cannot be one.
pub(super) fn read(row: &PgRow) -> (i64, Result<Publish>) {
    let id: i64 = row.get("id");
    (id, publish_of(row))
}

fn publish_of(row: &PgRow) -> Result<Publish> {
    let column = |e: sqlx::Error| Error::Decode(format!("outbox row: {e}"));
    let topic: String = row.try_get("topic").map_err(column)?;
    let partition: Option<i32> = row.try_get("partition").map_err(column)?;
    let key: Option<Vec<u8>> = row.try_get("key").map_err(column)?;
    let headers: Vec<u8> = row.try_get("headers").map_err(column)?;
    let payload: Option<Vec<u8>> = row.try_get("payload").map_err(column)?;
    let deliver_at_ms: Option<i64> = row.try_get("deliver_at_ms").map_err(column)?;
    let mut publish = Publish::to(topic);
    publish.partition = partition;
    publish.key = key.map(Bytes::from);
    publish.headers = decode_headers(&headers)?;
    publish.payload = payload.map(Bytes::from);
    publish.due = deliver_at_ms
        .map(|ms| Due::At(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)));
    publish.validate()?;
    Ok(publish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_the_row_null_values_included() {
        let mut headers = Headers::new();
        headers.append("x-tenant", Bytes::from_static(b"acme"));
        headers.append_null("x-null");
        headers.append("x-tenant", Bytes::from_static(b""));
        let decoded = decode_headers(&encode_headers(&headers)).unwrap();
        assert_eq!(decoded, headers);
        assert!(decoded.is_null("x-null"));
    }

    #[test]
    fn cut_headers_are_a_typed_error() {
        let mut headers = Headers::new();
        headers.append("x-tenant", Bytes::from_static(b"acme"));
        let bytes = encode_headers(&headers);
        for cut in 1..bytes.len() {
            assert!(matches!(
                decode_headers(&bytes[..cut]),
                Err(Error::Decode(_))
            ));
        }
    }

    #[test]
    fn rows_of_one_key_share_a_shard() {
        let a = Publish::to("orders").key("k-1");
        let b = Publish::to("payments").key("k-1");
        assert_eq!(shard(&a), shard(&b));
        assert!((0..SHARDS).contains(&shard(&a)));
        let keyless = Publish::to("orders");
        assert_eq!(shard(&keyless), shard(&Publish::to("orders")));
    }
}
