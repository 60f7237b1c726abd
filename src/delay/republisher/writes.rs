//! The Republisher's writes: a released record written to its destination,
//! to the next bucket or to the dead-letter topic, gathered into one
//! `ProduceBatch` per turn; the answers come back through a [`ForwardReply`]
//! each, into one shared list taken once per batch.

use std::sync::{Arc, Mutex};

use actix::prelude::*;

use crate::broker::WriteResult;
use crate::buckets::DelayHeaders;
use crate::connection::producer::{hand_over, Write, WriteReply};
use crate::connection::protocol::Stamp;
use crate::dead_letter::{self, DeadLetterRecord, FailureKind};
use crate::envelope::{now_ms, OutgoingRecord, Record};
use crate::error::{Error, Result};
use crate::observe::trace::{batch_span, Batch};
use crate::topics;

use super::{Republisher, Target, REWRITE_BACKOFF};

/// A write of a released record answered.
pub(super) struct Forwarded {
    pub(super) record: Arc<Record>,
    pub(super) target: Target,
    /// When and from where its bucket record was taken.
    pub(super) stamp: Stamp,
    pub(super) result: Result<()>,
}

/// Writes answered and not yet taken by their Republisher incarnation:
/// filled by the writes' replies wherever the answers come from, taken in
/// one [`TakeAnswered`] per batch.
pub(crate) struct Answered {
    pub(super) done: Mutex<Vec<Forwarded>>,
    pub(super) republisher: Recipient<TakeAnswered>,
}

impl Answered {
    fn push(&self, forwarded: Forwarded) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push(forwarded);
        if done.len() == 1 {
            self.republisher.do_send(TakeAnswered);
        }
    }
}

/// The answer of one Republisher write, given by the producer connection.
pub(crate) struct ForwardReply {
    pub(super) record: Arc<Record>,
    pub(super) target: Target,
    pub(super) stamp: Stamp,
    pub(super) answered: Arc<Answered>,
}

impl WriteReply for ForwardReply {
    fn answer(self, result: WriteResult) {
        let ForwardReply {
            record,
            target,
            stamp,
            answered,
        } = self;
        answered.push(Forwarded {
            record,
            target,
            stamp,
            result: result.map(|_| ()).map_err(|failed| failed.error),
        });
    }
}

/// Take the answered writes ([`Answered`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeAnswered;
/// Hand the writes gathered this turn to the producer connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct FlushWrites;
impl Handler<FlushWrites> for Republisher {
    type Result = ();

    fn handle(&mut self, _: FlushWrites, ctx: &mut Context<Self>) {
        let writes = std::mem::take(&mut self.unsent);
        if writes.is_empty() {
            return;
        }
        let span = batch_span(Batch::Republish, None, writes.len());
        let _entered = span.enter();
        hand_over(&self.producer, writes, self.delivery_timeout, ctx);
    }
}

impl Handler<TakeAnswered> for Republisher {
    type Result = ();

    fn handle(&mut self, _: TakeAnswered, ctx: &mut Context<Self>) {
        let Some(answered) = self.answered.clone() else {
            return;
        };
        let done = std::mem::take(&mut *answered.done.lock().unwrap_or_else(|e| e.into_inner()));
        let mut completed = Vec::with_capacity(done.len());
        for forwarded in done {
            self.after_write();
            if !self.feed.is_current(forwarded.stamp, &forwarded.record) {
                // That connection is gone, or the partition was given up: the
                // record is read again by whoever reads it next.
                continue;
            }
            match forwarded.result {
                Ok(()) => {
                    self.count_republished(&forwarded.record, &forwarded.target);
                    completed.push(forwarded.record)
                }
                Err(e) => {
                    self.rewrite_later(forwarded.record, forwarded.target, forwarded.stamp, e, ctx)
                }
            }
        }
        self.feed.complete(completed, Vec::new());
    }
}

impl Republisher {
    /// Writes a released record where it goes; the bucket record is
    /// answered once the write is acknowledged.
    pub(super) fn write(&mut self, record: Arc<Record>, target: Target, ctx: &mut Context<Self>) {
        let stamp = self.feed.stamp(&record);
        self.write_stamped(record, target, stamp, ctx)
    }

    /// Writes a record taken at `stamp` (its work counts only while the
    /// feed says that is current).
    pub(super) fn write_stamped(
        &mut self,
        record: Arc<Record>,
        target: Target,
        stamp: Stamp,
        ctx: &mut Context<Self>,
    ) {
        let Some(answered) = self.answered.clone() else {
            return; // not started: cannot happen once it handles messages
        };
        self.writing += 1;
        let (topic, partition, delivered) = match &target {
            Target::DeadLetter(reason) => {
                let reason = reason.clone();
                return self.write_dead_letter(record, target, reason, stamp, answered);
            }
            Target::Destination { topic, partition } => (topic.clone(), *partition, true),
            Target::Bucket(topic) => (topic.clone(), None, false),
        };
        let out = outgoing(&record, topic, partition, delivered);
        let reply = ForwardReply {
            record,
            target,
            stamp,
            answered,
        };
        if self.unsent.is_empty() {
            // Handed over once this turn is done: one batch per turn.
            ctx.notify(FlushWrites);
        }
        self.unsent.push(Write::new(out, reply));
    }

    /// Counts a record written to `target` (its destination, the next
    /// bucket or the dead-letter topic), by its bucket.
    fn count_republished(&mut self, record: &Arc<Record>, target: &Target) {
        let metrics = &self.metrics;
        let counters = self.counters.get(&record.topic, |bucket| {
            Arc::new(
                ["destination", "bucket", "dead_letter"]
                    .map(|target| metrics.republished(bucket, target)),
            )
        });
        counters[match target {
            Target::Destination { .. } => 0,
            Target::Bucket(_) => 1,
            Target::DeadLetter(_) => 2,
        }]
        .inc();
    }

    /// The write of `record` (taken at `stamp`) to `target` failed with
    /// `e`: it stays uncommitted and is written again after a backoff (to
    /// the dead-letter topic if `target` refuses it for good).
    fn rewrite_later(
        &mut self,
        record: Arc<Record>,
        target: Target,
        stamp: Stamp,
        e: Error,
        ctx: &mut Context<Self>,
    ) {
        let target = match target {
            // A destination that refuses the record for good: dead-letter it.
            Target::Destination { .. } | Target::Bucket(_) if !e.is_retriable() => {
                Target::DeadLetter(format!("cannot republish: {e}"))
            }
            other => other,
        };
        tracing::error!(topic = %record.topic, offset = record.offset, error = %e,
            "delayed record not written; it stays uncommitted and is written again");
        self.writing += 1; // the rewrite below is under way already
        ctx.run_later(REWRITE_BACKOFF, move |act, ctx| {
            act.after_write();
            // Not when its partition was given up meanwhile:
            // its next owner writes it.
            if !act.stopping && act.feed.is_current(stamp, &record) {
                act.write_stamped(record, target, stamp, ctx);
            }
        });
    }

    /// Writes a bad bucket record (taken at `stamp`) to the bucket's
    /// dead-letter topic with `reason`, answered into `answered` once
    /// durable.
    fn write_dead_letter(
        &mut self,
        record: Arc<Record>,
        target: Target,
        reason: String,
        stamp: Stamp,
        answered: Arc<Answered>,
    ) {
        tracing::warn!(topic = %record.topic, partition = record.partition,
            offset = record.offset, %reason, "bad delay-bucket record: dead-lettering it");
        let request = DeadLetterRecord {
            record: record.clone(),
            topic: Arc::from(topics::dead_letter(&record.topic, None)),
            group: self.group.clone(),
            kind: FailureKind::Decode,
            reason,
            attempts: 1,
        };
        let sent = dead_letter::send(&self.dead_letter, request, self.delivery_timeout);
        actix_rt::spawn(async move {
            let result = sent.await;
            answered.push(Forwarded {
                record,
                target,
                stamp,
                result,
            });
        });
    }

    pub(super) fn after_write(&mut self) {
        self.writing -= 1;
        if self.writing == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// What `record` is written as, to `topic` (and `partition`): into a
/// bucket untouched; to its destination (`delivered`) without the delay
/// headers.
fn outgoing(
    record: &Record,
    topic: Arc<str>,
    partition: Option<i32>,
    delivered: bool,
) -> OutgoingRecord {
    let mut headers = record.headers.clone();
    if delivered {
        DelayHeaders::remove(&mut headers);
    }
    OutgoingRecord {
        topic,
        partition,
        key: record.key.clone(),
        headers,
        payload: record.payload_or_null(),
        // In a bucket, its time there counts from now.
        timestamp_ms: now_ms(),
    }
}
