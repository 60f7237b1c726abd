//! The writes of publishes, each with the reply that answers its publisher
//! ([`Replies`]), and where a Producer incarnation queues them
//! ([`WriteQueue`]) until they are handed to the connection ([`Unsent`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use actix::dev::OneshotSender;
use kafkactor_actors::ChildRef;

use super::reply::{Awaiting, BatchAnswer, Published, TakenBy};
use super::{Delayed, Producer, ProducerSettings, PublishReply};
use crate::connection::producer::Write;
use crate::envelope::{header, OutgoingRecord};
use crate::error::Result;
use crate::observe::lineage::Tap;
use crate::observe::metrics::{Metrics, PerTopic};
use crate::publish::PublishOutcome;

/// Prepared records waiting for their outcome: what [`WriteQueue`] takes.
pub(super) type Prepared = Result<(OutgoingRecord, Option<Delayed>)>;

/// What the reply of every write is made with: shared by a Producer
/// incarnation's [`WriteQueue`] and the intake its connection drains.
#[derive(Clone)]
pub(super) struct Replies {
    /// The Producer, where failed writes come back to be sent again
    /// (whichever incarnation runs when one fails).
    pub(super) producer: ChildRef<Producer>,
    pub(super) metrics: Metrics,
    /// What the publishes to each topic share.
    pub(super) taken_by: Rc<RefCell<PerTopic<Arc<TakenBy>>>>,
    pub(super) lineage: Option<Tap>,
}

impl Replies {
    /// The replies of writes taken with `settings`; failed writes go back
    /// to `producer`.
    pub(super) fn new(producer: ChildRef<Producer>, settings: &ProducerSettings) -> Self {
        Replies {
            producer,
            metrics: settings.metrics.clone(),
            taken_by: Rc::default(),
            lineage: settings.lineage.clone(),
        }
    }

    /// What the publishes to `topic` share.
    fn taken_by(&self, topic: &Arc<str>) -> Arc<TakenBy> {
        let mut all = self.taken_by.borrow_mut();
        let taken_by = all.get(topic, |topic| {
            Arc::new(TakenBy {
                producer: self.producer.clone(),
                counters: self.metrics.on().then(|| self.metrics.publish(topic)),
            })
        });
        taken_by.clone()
    }

    /// What the lineage event of `record` needs, when lineage is on.
    fn lineage_of(&self, record: &OutgoingRecord) -> Option<Box<Published>> {
        let tap = self.lineage.as_ref().filter(|t| t.covers(&record.topic))?;
        Some(Box::new(Published {
            tap: tap.clone(),
            topic: record.topic.clone(),
            message_id: record
                .headers
                .get_str(header::MESSAGE_ID)
                .map(str::to_string),
        }))
    }

    /// The write of one prepared record, or None when it failed (its
    /// publisher is answered).
    #[inline]
    pub(super) fn one(&self, prepared: Prepared, to: Awaiting) -> Option<Write<PublishReply>> {
        let (record, delayed) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                to.send(Err(e));
                return None;
            }
        };
        Some(self.write(record, delayed, to, crate::clock::now_ticks()))
    }

    fn write(
        &self,
        record: OutgoingRecord,
        delayed: Option<Delayed>,
        to: Awaiting,
        taken: u64,
    ) -> Write<PublishReply> {
        let reply = PublishReply {
            to,
            delayed,
            taken,
            resends: 0,
            taken_by: self.taken_by(&record.topic),
            lineage: self.lineage_of(&record),
        };
        Write::new(record, reply)
    }

    /// The writes of a batch's prepared records, answered together once
    /// every outcome is in, each handed to `push` in order.
    pub(super) fn batch(
        &self,
        prepared: Vec<Prepared>,
        tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
        spans: Vec<tracing::Span>,
        mut push: impl FnMut(Write<PublishReply>),
    ) {
        let batch = BatchAnswer::new(prepared.len(), tx, spans);
        if prepared.is_empty() {
            return batch.set_empty();
        }
        let taken = crate::clock::now_ticks();
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Err(e) => batch.set(index, Err(e)),
                Ok((record, delayed)) => {
                    let to = Awaiting::Batch {
                        batch: batch.clone(),
                        index,
                    };
                    push(self.write(record, delayed, to, taken));
                }
            }
        }
    }
}

/// Where a Producer incarnation queues writes, each with the reply that
/// answers its publisher: shared by its message handlers (through their
/// responses, which do not see the actor).
#[derive(Clone)]
pub(super) struct WriteQueue {
    pub(super) unsent: Rc<RefCell<Unsent>>,
    pub(super) replies: Replies,
}

impl WriteQueue {
    /// Queues one record, or answers its failure; returns whether the
    /// unsent was empty before.
    pub(super) fn one(&self, prepared: Prepared, to: Awaiting) -> bool {
        let Some(write) = self.replies.one(prepared, to) else {
            return false;
        };
        let mut unsent = self.unsent.borrow_mut();
        let was_empty = unsent.writes.is_empty();
        unsent.writes.push(write);
        was_empty
    }

    /// Queues a batch's records, answered together once every outcome is
    /// in; returns whether the unsent was empty before.
    pub(super) fn batch(
        &self,
        prepared: Vec<Prepared>,
        tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
    ) -> bool {
        let mut unsent = self.unsent.borrow_mut();
        let was_empty = unsent.writes.is_empty();
        unsent.writes.reserve(prepared.len());
        self.replies
            .batch(prepared, tx, Vec::new(), |write| unsent.writes.push(write));
        was_empty && !unsent.writes.is_empty()
    }
}

/// The writes taken since the Producer last handed a batch to its connection.
#[derive(Default)]
pub(super) struct Unsent {
    pub(super) writes: Vec<Write<PublishReply>>,
}
