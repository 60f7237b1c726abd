//! The `DeadLetter` actor: writes records that failed for good to their
//! dead-letter topic, with the reason.
//!
//! Messages: [`DeadLetterRecord`] (answers once the record is durably written),
//! `Shutdown`. Owns nothing; the caller keeps the original record uncommitted
//! until the answer is `Ok`, so a restart loses nothing: an unanswered
//! request is simply sent again (the record may then be dead-lettered twice).
//!
//! A dead-letter record is the original record (key, payload and headers
//! untouched) plus: `x-error-kind`, `x-error-reason`, `x-attempt`,
//! `x-original-topic`, `x-original-partition`, `x-original-offset`,
//! `x-group` and `x-failed-at`, each once (a record that failed before
//! carries only the latest failure's); a record sent back by a replay
//! (`x-replay-count`) keeps its first failure's original topic,
//! partition, offset and group.
//!
//! A write that fails retriably is answered as such and the caller tries
//! again later. One the broker refuses for good (a record larger than the
//! dead-letter topic takes, ..) is written once more without its payload,
//! with `x-payload-dropped` (the refusal) and `x-payload-size`, and a
//! [`SupervisionEvent::Degraded`] says so: the partition keeps flowing and
//! what is left of the record is durable. If even that is refused, the
//! error is answered (the record stays uncommitted, the caller keeps
//! trying) and a `Degraded` event says the partition waits on it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor_actors::{Backoff, ChildRef, Shutdown};

use kafkactor_actors::{Events, SupervisionEvent};

use crate::broker::{Delivered, Failed, WriteResult};
use crate::connection::producer::Writer;
use crate::envelope::{header, now_ms, OutgoingRecord, Record};
use crate::error::{Error, Result};

/// The wait between two sends of a dead letter whose write failed.
const RETRY: Backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));

/// Sends `request` to the running dead-letter actor (waiting up to `wait`
/// for one): the one dead-letter send of the Dispatcher and the
/// Republisher. `Ok` once the dead letter is durable. On `Err` the caller
/// keeps the original record uncommitted and sends again after
/// [`retry_after`].
pub(crate) fn send(
    dead_letter: &ChildRef<DeadLetter>,
    request: DeadLetterRecord,
    wait: Duration,
) -> impl std::future::Future<Output = Result<()>> + 'static {
    let dead_letter = dead_letter.clone();
    async move {
        match dead_letter.ready(wait).await {
            Some(addr) => addr
                .send(request)
                .await
                .unwrap_or_else(|e| Err(Error::Unavailable(format!("dead-letter actor: {e}")))),
            None => Err(Error::Unavailable(format!(
                "no dead-letter actor running within {wait:?}"
            ))),
        }
    }
}

/// How long to wait before sending a dead letter again after `failures`
/// failed sends: 100 ms, doubling, at most 5 s.
pub(crate) fn retry_after(failures: u32) -> Duration {
    RETRY.delay(failures.saturating_sub(1))
}

/// Why a record was dead-lettered; written to the `x-error-kind` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler answered `Outcome::Reject`.
    Rejected,
    /// The handler kept answering `Outcome::Retry` until the policy gave up.
    RetriesExhausted,
    /// The handler panicked (or its actor stopped) on the last attempt.
    Panic,
    /// The payload or its headers could not be decoded.
    Decode,
    /// No handler of the subscription accepts the record's type.
    Unroutable,
    /// The record is larger than the subscription accepts.
    TooLarge,
    /// The handler did not answer within the subscription's handler timeout.
    Timeout,
    /// The broker refused, for good, a record the handler of a
    /// transactional subscription published (a partition its topic does
    /// not have, a record it does not take) when the transaction was
    /// committed.
    OutputRefused,
}

impl FailureKind {
    const ALL: [FailureKind; 8] = [
        FailureKind::Rejected,
        FailureKind::RetriesExhausted,
        FailureKind::Panic,
        FailureKind::Decode,
        FailureKind::Unroutable,
        FailureKind::TooLarge,
        FailureKind::Timeout,
        FailureKind::OutputRefused,
    ];

    /// The kind a header value names (its [`as_str`](FailureKind::as_str)),
    /// if it is one this version knows.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Rejected => "rejected",
            FailureKind::RetriesExhausted => "retries-exhausted",
            FailureKind::Panic => "panic",
            FailureKind::Decode => "decode",
            FailureKind::Unroutable => "unroutable",
            FailureKind::TooLarge => "too-large",
            FailureKind::Timeout => "timeout",
            FailureKind::OutputRefused => "output-refused",
        }
    }
}

/// What a dead letter says of its failure, read from its headers
/// ([`Record::dead_lettered`]): why, when, after how many attempts, and
/// where the record was first read. For tests and tools that look at a
/// dead-letter topic.
///
/// ```
/// # use kafkactor::{FailureKind, Record};
/// # fn check(dead: &Record) {
/// let failure = dead.dead_lettered().expect("a dead letter");
/// assert_eq!(failure.kind, Some(FailureKind::Rejected));
/// println!("{} at offset {:?} of {:?}: {}", failure.kind_name, failure.original_offset,
///     failure.original_topic, failure.reason);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLettered {
    /// The failure's kind, when this version knows it.
    pub kind: Option<FailureKind>,
    /// The failure's kind as written (`x-error-kind`).
    pub kind_name: String,
    /// Why (`x-error-reason`; empty when missing).
    pub reason: String,
    /// The topic it was first read from (`x-original-topic`).
    pub original_topic: Option<String>,
    /// The partition it was first read from (`x-original-partition`).
    pub original_partition: Option<i32>,
    /// The offset it was first read at (`x-original-offset`).
    pub original_offset: Option<i64>,
    /// The group that gave up on it (`x-group`).
    pub group: Option<String>,
    /// The attempts made (`x-attempt`).
    pub attempts: Option<u32>,
    /// When it failed for good, milliseconds since the Unix epoch
    /// (`x-failed-at`).
    pub failed_at_ms: Option<i64>,
    /// How many times it was replayed (`x-replay-count`; 0 when never).
    pub replays: u32,
}

impl Record {
    /// What this record says of its failure, when it is a dead letter (it
    /// has an `x-error-kind` header); `None` otherwise.
    pub fn dead_lettered(&self) -> Option<DeadLettered> {
        let h = &self.headers;
        let text = |name| h.get_str(name).map(str::to_string);
        let number = |name| h.get_str(name).and_then(|v| v.parse().ok());
        let kind_name = h.get_str(header::ERROR_KIND)?.to_string();
        Some(DeadLettered {
            kind: FailureKind::from_name(&kind_name),
            kind_name,
            reason: text(header::ERROR_REASON).unwrap_or_default(),
            original_topic: text(header::ORIGINAL_TOPIC),
            original_partition: number(header::ORIGINAL_PARTITION)
                .and_then(|p: i64| i32::try_from(p).ok()),
            original_offset: number(header::ORIGINAL_OFFSET),
            group: text(header::GROUP),
            attempts: number(header::ATTEMPT).and_then(|a: i64| u32::try_from(a).ok()),
            failed_at_ms: number(header::FAILED_AT),
            replays: number(header::REPLAY_COUNT)
                .and_then(|n: i64| u32::try_from(n).ok())
                .unwrap_or(0),
        })
    }
}

/// Writes `record` to `topic` with the failure headers.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct DeadLetterRecord {
    pub(crate) record: Arc<Record>,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
    pub(crate) attempts: u32,
}

pub(crate) struct DeadLetter {
    /// Writes through the application's producer connection.
    connection: Writer,
    delivery_timeout: Duration,
    events: Events,
}

impl DeadLetter {
    pub(crate) fn new(connection: Writer, delivery_timeout: Duration, events: Events) -> Self {
        DeadLetter {
            connection,
            delivery_timeout,
            events,
        }
    }
}

/// `record` without its payload, saying why and how big it was.
fn without_payload(mut record: OutgoingRecord, refusal: &crate::Error) -> OutgoingRecord {
    record
        .headers
        .insert(header::PAYLOAD_DROPPED, refusal.to_string());
    record.headers.insert(
        header::PAYLOAD_SIZE,
        record.payload.as_ref().map_or(0, |p| p.len()).to_string(),
    );
    // Empty, not null: on a compacted topic a null would delete the key.
    record.payload = Some(bytes::Bytes::new());
    record
}

/// The dead letter of `msg`: its record with the failure headers, each
/// set once (the latest failure's kind, reason, attempts and time replace
/// any earlier ones). A replayed record (`x-replay-count`) keeps the
/// provenance of its first failure (original topic, partition, offset and
/// group), which its replay carried back; a record read from a retry topic
/// (`x-not-before`) keeps where it was first read.
pub(crate) fn dead_letter_record(msg: DeadLetterRecord) -> OutgoingRecord {
    let r = &msg.record;
    let mut headers = r.headers.clone();
    headers.insert(header::ERROR_KIND, msg.kind.as_str());
    headers.insert(header::ERROR_REASON, msg.reason);
    headers.insert(header::ATTEMPT, msg.attempts.to_string());
    // Replayed, or read from a retry topic: where it was first read is
    // in its headers already.
    let replayed = headers.contains(header::REPLAY_COUNT) || headers.contains(header::NOT_BEFORE);
    let mut provenance = |name: &'static str, value: String| {
        if !(replayed && headers.contains(name)) {
            headers.insert(name, value);
        }
    };
    provenance(header::ORIGINAL_TOPIC, r.topic.to_string());
    provenance(header::ORIGINAL_PARTITION, r.partition.to_string());
    provenance(header::ORIGINAL_OFFSET, r.offset.to_string());
    provenance(header::GROUP, msg.group.to_string());
    headers.insert(header::FAILED_AT, now_ms().to_string());
    OutgoingRecord {
        topic: msg.topic,
        partition: None,
        key: r.key.clone(),
        headers,
        payload: r.payload_or_null(),
        timestamp_ms: r.timestamp_ms,
    }
}

/// The error reply to a request that failed for good (a record with
/// `x-reply-to`): to its reply topic and partition, with its correlation
/// id and the failure's kind and reason, and an empty payload. None for a
/// record that is not a request (or names a topic that cannot be one).
pub(crate) fn error_reply(msg: &DeadLetterRecord) -> Option<OutgoingRecord> {
    let request = &msg.record.headers;
    let topic = request.get_str(header::REPLY_TO)?;
    if crate::error::check_topic(topic).is_err() {
        return None;
    }
    let mut headers = crate::envelope::Headers::new();
    if let Some(id) = request.get(header::CORRELATION_ID) {
        headers.insert_known_copy(header::CORRELATION_ID, id);
    }
    headers.insert(header::ERROR_KIND, msg.kind.as_str());
    headers.insert(header::ERROR_REASON, msg.reason.clone());
    Some(OutgoingRecord {
        topic: Arc::from(topic),
        partition: request
            .get_str(header::REPLY_PARTITION)
            .and_then(|p| p.parse().ok()),
        key: None,
        headers,
        payload: Some(bytes::Bytes::new()),
        timestamp_ms: now_ms(),
    })
}

impl Actor for DeadLetter {
    type Context = Context<Self>;
}

impl Handler<DeadLetterRecord> for DeadLetter {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: DeadLetterRecord, _: &mut Context<Self>) -> Self::Result {
        tracing::warn!(
            topic = %msg.record.topic, partition = msg.record.partition, offset = msg.record.offset,
            kind = msg.kind.as_str(), reason = %msg.reason, "dead-lettering record"
        );
        let where_ = format!(
            "{} [{}] offset {}",
            msg.record.topic, msg.record.partition, msg.record.offset
        );
        let reply = error_reply(&msg);
        let record = dead_letter_record(msg);
        let (connection, timeout, events) = (
            self.connection.clone(),
            self.delivery_timeout,
            self.events.clone(),
        );
        let write = connection.write(record, timeout);
        Box::pin(async move {
            // A refused record comes back with its refusal: no copy kept.
            let answer = match refused_for_good(write.await) {
                ControlFlow::Break(answer) => answer,
                ControlFlow::Continue((refusal, record)) => {
                    let stripped = without_payload(record, &refusal);
                    let written = connection.write_record(stripped, timeout).await;
                    written_without_payload(written, &where_, &refusal, &events)
                }
            };
            // Once the dead letter is durable: the caller hears at once.
            if let (Ok(()), Some(reply)) = (&answer, reply) {
                if let Err(e) = connection.write_record(reply, timeout).await {
                    tracing::warn!(record = %where_, error = %e,
                        "the error reply to a failed request was not written: its caller times out");
                }
            }
            answer
        })
    }
}

/// The answer to a dead letter's write: final (`Break`: written, or a
/// failure that may pass, or one without its record), or refused for good
/// with the record back (`Continue`), to be written without its payload.
fn refused_for_good(written: WriteResult) -> ControlFlow<Result<()>, (Error, OutgoingRecord)> {
    match written.map_err(|failed| *failed) {
        Ok(_) => ControlFlow::Break(Ok(())),
        Err(Failed { error, .. }) if error.is_retriable() => ControlFlow::Break(Err(error)),
        Err(Failed {
            error,
            record: Some(record),
        }) => ControlFlow::Continue((error, record)),
        Err(Failed {
            error,
            record: None,
        }) => ControlFlow::Break(Err(error)),
    }
}

/// The answer to a dead letter refused for good (`refusal`), once written
/// without its payload (`written`): `Degraded` events say what became of
/// the record at `where_`.
fn written_without_payload(
    written: Result<Delivered>,
    where_: &str,
    refusal: &Error,
    events: &Events,
) -> Result<()> {
    match written {
        Ok(_) => {
            tracing::error!(record = %where_, error = %refusal,
                "the dead letter was refused for good: written without its payload");
            degraded(
                events,
                format!("dead letter of {where_} written without its payload: {refusal}"),
            );
            Ok(())
        }
        Err(e) => {
            if !e.is_retriable() {
                degraded(events, format!(
                    "dead letter of {where_} cannot be written ({e}): the record stays uncommitted and its partition waits"
                ));
            }
            Err(e)
        }
    }
}

/// Publishes that the dead-letter actor is degraded, for `reason`.
fn degraded(events: &Events, reason: String) {
    events.publish(SupervisionEvent::Degraded {
        supervisor: Arc::from("kafkactor"),
        child: Arc::from("dead-letter"),
        reason,
    })
}

impl Handler<Shutdown> for DeadLetter {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(FailureKind::from_name("a kind from a later version"), None);
    }

    #[test]
    fn a_dead_letter_reads_back_what_was_written() {
        let mut headers = crate::envelope::Headers::new();
        headers.insert(header::REPLAY_COUNT, "2");
        let record = Arc::new(Record::new(
            Arc::from("orders"),
            3,
            41,
            None,
            headers,
            Some(bytes::Bytes::from_static(b"x")),
            7,
        ));
        let written = dead_letter_record(DeadLetterRecord {
            record,
            topic: Arc::from("orders.dlq"),
            group: Arc::from("billing"),
            kind: FailureKind::Timeout,
            reason: "too slow".into(),
            attempts: 3,
        });
        let read = Record::new(
            written.topic,
            0,
            0,
            None,
            written.headers,
            written.payload,
            0,
        );
        let failure = read.dead_lettered().expect("a dead letter");
        assert_eq!(failure.kind, Some(FailureKind::Timeout));
        assert_eq!(failure.kind_name, "timeout");
        assert_eq!(failure.reason, "too slow");
        assert_eq!(failure.original_topic.as_deref(), Some("orders"));
        assert_eq!(
            (failure.original_partition, failure.original_offset),
            (Some(3), Some(41))
        );
        assert_eq!(failure.group.as_deref(), Some("billing"));
        assert_eq!((failure.attempts, failure.replays), (Some(3), 2));
        assert!(failure.failed_at_ms.is_some());
        let plain = Record::new(Arc::from("orders"), 0, 0, None, Default::default(), None, 0);
        assert_eq!(plain.dead_lettered(), None);
    }
}
