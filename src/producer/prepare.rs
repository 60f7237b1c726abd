//! Record preparation: a [`Publish`] turned into the record to write, the
//! well-known headers (message id, timestamp) stamped, a delayed one sent
//! to its first delay bucket, and its size checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::buckets::{DelayHeaders, Plan};
use crate::envelope::{header, new_message_id, Headers, OutgoingRecord};
use crate::error::{Error, Result};
use crate::publish::{epoch_ms_rounded_up, Due, Publish};

/// Where a delayed record waits first: its due time (ms since the Unix
/// epoch) and the bucket's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delayed {
    pub(crate) deliver_at: i64,
    pub(crate) bucket: Duration,
}

/// Turns a `Publish` into the record to write, stamping id and timestamp;
/// a delayed one goes to its first delay bucket (`delays`).
pub(crate) fn prepare(
    publish: Publish,
    max_bytes: usize,
    delays: Option<&Plan>,
) -> Result<(OutgoingRecord, Option<Delayed>)> {
    publish.validate()?;
    let Publish {
        topic,
        mut partition,
        key,
        mut headers,
        payload,
        due,
        ..
    } = publish;
    let now = crate::clock::wall_now();
    // Seconds and milliseconds apart: no 128-bit division per record.
    let timestamp_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| {
        (d.as_secs() as i64)
            .saturating_mul(1000)
            .saturating_add(i64::from(d.subsec_millis()))
    });
    stamp(&mut headers, timestamp_ms);
    let (topic, delayed) = match deliver_at(due, now) {
        None => (topic, None),
        Some(deliver_at) => {
            let delay = DelayHeaders {
                deliver_at,
                destination: topic,
                partition: partition.take(),
            };
            let (bucket_topic, delayed) =
                to_first_bucket(delay, timestamp_ms, delays, &mut headers)?;
            (bucket_topic, Some(delayed))
        }
    };
    let record = OutgoingRecord {
        topic,
        partition,
        key,
        headers,
        payload,
        timestamp_ms,
    };
    check_size(&record, max_bytes)?;
    Ok((record, delayed))
}

/// Stamps the message id (unless the publisher set one) and the timestamp.
fn stamp(headers: &mut Headers, timestamp_ms: i64) {
    // One look for both (usually neither is there).
    let [has_id, has_timestamp] = headers.has_known([header::MESSAGE_ID, header::TIMESTAMP]);
    if !has_id {
        headers.append_known_copy(header::MESSAGE_ID, &new_message_id(timestamp_ms));
    }
    let mut decimal = itoa::Buffer::new();
    let timestamp = decimal.format(timestamp_ms).as_bytes();
    if has_timestamp {
        headers.insert_known_copy(header::TIMESTAMP, timestamp);
    } else {
        headers.append_known_copy(header::TIMESTAMP, timestamp);
    }
}

/// When a publish is due (ms since the Unix epoch), if that is later than
/// this millisecond: then it is delayed; otherwise published now.
fn deliver_at(due: Option<Due>, now: SystemTime) -> Option<i64> {
    due.map(|d| d.at_ms(now))
        .filter(|&at| at > epoch_ms_rounded_up(now))
}

/// Sends a delayed record to its first delay bucket: writes `delay` into
/// its `headers`, and returns the bucket's topic and where it waits.
fn to_first_bucket(
    delay: DelayHeaders,
    timestamp_ms: i64,
    delays: Option<&Plan>,
    headers: &mut Headers,
) -> Result<(Arc<str>, Delayed)> {
    let plan = delays.ok_or_else(|| {
        Error::Config(
            "Publish::delay/at: delayed publishing is off; turn it on with AppBuilder::delays"
                .into(),
        )
    })?;
    let deliver_at = delay.deliver_at;
    let remaining = Duration::from_millis((deliver_at - timestamp_ms) as u64);
    let (bucket_topic, bucket) = plan.first_bucket(remaining);
    delay.write(headers);
    Ok((bucket_topic, Delayed { deliver_at, bucket }))
}

/// Refuses a record larger than `max_bytes`.
fn check_size(record: &OutgoingRecord, max_bytes: usize) -> Result<()> {
    let size = record.byte_size();
    if size > max_bytes {
        return Err(Error::RecordTooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok(())
}
