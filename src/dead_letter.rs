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
//! `x-group` and `x-failed-at`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::connection::producer::ProducerConnection;
use crate::envelope::{header, now_ms, OutgoingRecord, Record};
use crate::error::Result;
use crate::producer::produce;

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
}

impl FailureKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Rejected => "rejected",
            FailureKind::RetriesExhausted => "retries-exhausted",
            FailureKind::Panic => "panic",
            FailureKind::Decode => "decode",
            FailureKind::Unroutable => "unroutable",
            FailureKind::TooLarge => "too-large",
        }
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
    connection: ChildRef<ProducerConnection>,
    delivery_timeout: Duration,
}

impl DeadLetter {
    pub(crate) fn new(
        connection: ChildRef<ProducerConnection>,
        delivery_timeout: Duration,
    ) -> Self {
        DeadLetter {
            connection,
            delivery_timeout,
        }
    }
}

fn dead_letter_record(msg: DeadLetterRecord) -> OutgoingRecord {
    let r = &msg.record;
    let mut headers = r.headers.clone();
    headers.insert(header::ERROR_KIND, msg.kind.as_str());
    headers.insert(header::ERROR_REASON, msg.reason);
    headers.insert(header::ATTEMPT, msg.attempts.to_string());
    headers.insert(header::ORIGINAL_TOPIC, r.topic.to_string());
    headers.insert(header::ORIGINAL_PARTITION, r.partition.to_string());
    headers.insert(header::ORIGINAL_OFFSET, r.offset.to_string());
    headers.insert(header::GROUP, msg.group.to_string());
    headers.insert(header::FAILED_AT, now_ms().to_string());
    OutgoingRecord {
        topic: msg.topic,
        partition: None,
        key: r.key.clone(),
        headers,
        payload: r.payload.clone(),
        timestamp_ms: r.timestamp_ms,
    }
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
        let record = dead_letter_record(msg);
        let write = produce(self.connection.clone(), record, self.delivery_timeout);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}

impl Handler<Shutdown> for DeadLetter {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
