//! Internals the criterion micro-benchmarks (`benches/micro.rs`) measure.
//!
//! Hidden from the documentation and not part of the API: nothing here is
//! covered by semver. Each item is the code the runtime itself runs, not a
//! copy of it.

use actix::{Actor, Context};

use crate::codec::{content_type_of, ContentType};
use crate::envelope::Record;
use crate::subscription::route::Routes;

pub use crate::connection::watermark::Watermark;
pub use crate::partitioner::murmur2;

/// What a dispatcher decides for one record before it calls a handler:
/// the route (by the type-name header), the content type it is decoded
/// with, and the lane (by the key's murmur2 hash). Errors are the reason
/// the record would be dead-lettered.
pub fn dispatch_decision<A: Actor<Context = Context<A>>>(
    routes: &Routes<A>,
    record: &Record,
    lanes: usize,
) -> Result<(ContentType, usize), String> {
    routes
        .select(&record.headers)
        .map_err(|(_, reason)| reason)?;
    let content_type =
        content_type_of(&record.headers, ContentType::MsgPack).map_err(|e| e.to_string())?;
    Ok((
        content_type,
        crate::subscription::dispatcher::lane_of_key(record.key.as_deref(), 0, lanes),
    ))
}

/// A record as a broker hands it to a consumer.
pub fn record(
    topic: &str,
    offset: i64,
    key: Option<bytes::Bytes>,
    headers: crate::Headers,
    payload: bytes::Bytes,
) -> Record {
    Record::new(topic.into(), 0, offset, key, headers, Some(payload), 0)
}
