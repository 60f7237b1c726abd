//! What a publisher gets back: a [`PublishReply`] rides beside each write
//! until the broker has the record (or refused it for good), then answers
//! the one publish or the one record of a batch it belongs to.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::dev::{OneshotSender, SendError};
use kafkactor_actors::ChildRef;

use crate::broker::{Delivered, Failed, WriteResult};
use crate::connection::producer::WriteReply;
use crate::error::Result;
use crate::observe::lineage::{Event, Tap};
use crate::observe::metrics::PublishMetrics;
use crate::producer::{Delayed, Producer, Resend};
use crate::publish::PublishOutcome;

/// The answer a publisher gets, once its record's fate is known: a
/// [`Write`]'s reply. A failure that may pass goes back to the Producer
/// (the incarnation running then), which sends the record again.
pub(crate) struct PublishReply {
    pub(super) to: Awaiting,
    pub(super) delayed: Option<Delayed>,
    /// When the Producer took the publish ([`now_ticks`](crate::clock::now_ticks)).
    pub(super) taken: u64,
    /// Sends made so far after the first.
    pub(super) resends: u32,
    /// Where it goes back to be sent again, and its topic's counters.
    pub(super) taken_by: Arc<TakenBy>,
    /// Its lineage event's makings, when lineage is on.
    pub(super) lineage: Option<Box<Published>>,
}

/// What every publish to one topic shares: one reference per record (not
/// one per field).
pub(crate) struct TakenBy {
    /// Where a failed write goes back to be sent again: the Producer
    /// incarnation running when it fails.
    pub(super) producer: ChildRef<Producer>,
    /// The topic's counters (None: metrics are off).
    pub(super) counters: Option<PublishMetrics>,
}

/// What a publish's lineage event says besides where the record landed.
pub(crate) struct Published {
    pub(super) tap: Tap,
    pub(super) topic: Arc<str>,
    pub(super) message_id: Option<String>,
}

impl WriteReply for PublishReply {
    /// The publisher's `publish` span, when spans are on: the broker write
    /// follows from it.
    fn span(&self) -> Option<&tracing::Span> {
        match &self.to {
            Awaiting::One(_) => None,
            Awaiting::Traced(traced) => Some(&traced.1),
            Awaiting::Batch { batch, index } => batch.spans.get(*index),
        }
    }

    fn answer(self, result: WriteResult) {
        self.answer_with(result)
    }
}

impl PublishReply {
    /// When resending must stop: the delivery timeout after the publish was taken.
    pub(super) fn deadline(&self, delivery_timeout: Duration) -> Instant {
        crate::clock::deadline_after(crate::clock::instant_of(self.taken), delivery_timeout)
    }

    fn answer_with(self, result: WriteResult) {
        let failed = match result {
            Ok(delivered) => {
                let outcome = outcome(delivered, self.delayed);
                return self.send(Ok(outcome));
            }
            Err(failed) => *failed,
        };
        let error = match failed {
            Failed {
                error,
                record: Some(record),
            } if error.is_retriable() => {
                let taken_by = self.taken_by.clone();
                let resend = Resend {
                    record,
                    reply: self,
                    error,
                };
                let sent = match taken_by.producer.get() {
                    Some(producer) => producer.try_send(resend),
                    None => Err(SendError::Closed(resend)),
                };
                match sent {
                    Ok(()) => return,
                    // No Producer runs: the failure is final.
                    Err(SendError::Closed(resend) | SendError::Full(resend)) => {
                        return resend.reply.send(Err(resend.error));
                    }
                }
            }
            Failed { error, .. } => error,
        };
        self.send(Err(error))
    }

    /// Answers the publisher, and counts the outcome.
    pub(super) fn send(self, result: Result<PublishOutcome>) {
        match &result {
            Ok(outcome) => {
                if let Some(note) = &self.lineage {
                    let (partition, offset) = match *outcome {
                        PublishOutcome::Direct { partition, offset }
                        | PublishOutcome::Delayed {
                            partition, offset, ..
                        } => (partition, offset),
                        // The Producer never answers this (a transaction's
                        // records do not pass through it).
                        PublishOutcome::Transactional => (-1, -1),
                    };
                    note.tap.emit(Event::Published {
                        service: note.tap.service.clone(),
                        topic: note.topic.clone(),
                        partition,
                        offset,
                        message_id: note.message_id.clone(),
                        at: crate::envelope::now_ms(),
                    });
                }
                if let Some(counters) = &self.taken_by.counters {
                    counters.ok.inc();
                    let latency = crate::clock::Stopwatch::new().since(self.taken);
                    counters.latency.observe(latency);
                }
            }
            Err(_) => {
                if let Some(counters) = &self.taken_by.counters {
                    counters.error.inc();
                }
            }
        }
        self.to.send(result);
    }
}

/// Who waits for a publish's outcome.
pub(super) enum Awaiting {
    /// A [`Publish`]'s sender (None for a `do_send`: failures are logged).
    One(Option<OneshotSender<Result<PublishOutcome>>>),
    /// The same with the publisher's `publish` span, when spans are on
    /// (boxed: the answer of every other publish stays small).
    Traced(Box<(OneshotSender<Result<PublishOutcome>>, tracing::Span)>),
    /// One record of a [`PublishBatch`].
    Batch {
        batch: Arc<BatchAnswer>,
        index: usize,
    },
}

impl Awaiting {
    /// Gives the publisher `result`.
    pub(super) fn send(self, result: Result<PublishOutcome>) {
        match (self, result) {
            (Awaiting::One(Some(tx)), result) => {
                let _ = tx.send(result);
            }
            (Awaiting::Traced(traced), result) => {
                let _ = traced.0.send(result);
            }
            (Awaiting::One(None), Err(e)) => tracing::warn!(error = %e, "a do_send publish failed"),
            (Awaiting::One(None), Ok(_)) => {}
            (Awaiting::Batch { batch, index }, result) => batch.set(index, result),
        }
    }
}

/// The outcomes of a [`PublishBatch`] as they come; sent, in the batch's
/// order, once the last one is in.
pub(super) struct BatchAnswer {
    state: std::sync::Mutex<BatchState>,
    /// The publishers' `publish` spans by index, when spans are on.
    spans: Vec<tracing::Span>,
}

struct BatchState {
    outcomes: Vec<Option<Result<PublishOutcome>>>,
    left: usize,
    tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
}

impl BatchAnswer {
    /// Answers an empty batch.
    pub(super) fn set_empty(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = state.tx.take() {
            let _ = tx.send(Vec::new());
        }
    }

    pub(super) fn new(
        len: usize,
        tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
        spans: Vec<tracing::Span>,
    ) -> Arc<Self> {
        Arc::new(BatchAnswer {
            state: std::sync::Mutex::new(BatchState {
                outcomes: (0..len).map(|_| None).collect(),
                left: len,
                tx,
            }),
            spans,
        })
    }

    pub(super) fn set(&self, index: usize, outcome: Result<PublishOutcome>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.outcomes[index].is_some() {
            return;
        }
        if let Err(e) = &outcome {
            if state.tx.is_none() {
                tracing::warn!(error = %e, "a do_send publish of a batch failed");
            }
        }
        state.outcomes[index] = Some(outcome);
        state.left -= 1;
        if state.left == 0 {
            let outcomes = std::mem::take(&mut state.outcomes)
                .into_iter()
                .map(|o| o.expect("every outcome is in"))
                .collect();
            if let Some(tx) = state.tx.take() {
                let _ = tx.send(outcomes);
            }
        }
    }
}

/// Where a record published now or delayed went.
fn outcome(Delivered { partition, offset }: Delivered, delayed: Option<Delayed>) -> PublishOutcome {
    match delayed {
        None => PublishOutcome::Direct { partition, offset },
        Some(Delayed { deliver_at, bucket }) => PublishOutcome::Delayed {
            deliver_at: SystemTime::UNIX_EPOCH + Duration::from_millis(deliver_at.max(0) as u64),
            bucket,
            partition,
            offset,
        },
    }
}
