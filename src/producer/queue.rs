//! Where a Producer incarnation queues writes ([`WriteQueue`]), each with
//! the reply that answers its publisher, until they are handed to the
//! connection ([`Unsent`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use actix::dev::OneshotSender;
use actix::Recipient;

use super::reply::{Awaiting, BatchAnswer, Published, TakenBy};
use super::{Delayed, PublishReply, Resend};
use crate::connection::producer::Write;
use crate::envelope::{header, OutgoingRecord};
use crate::error::Result;
use crate::observe::lineage::Tap;
use crate::observe::metrics::{Metrics, PerTopic};
use crate::publish::PublishOutcome;

/// Prepared records waiting for their outcome: what [`WriteQueue`] takes.
pub(super) type Prepared = Result<(OutgoingRecord, Option<Delayed>)>;

/// Where a Producer incarnation queues writes, each with the reply that
/// answers its publisher: shared by its message handlers (through their
/// responses, which do not see the actor) and its intake.
#[derive(Clone)]
pub(super) struct WriteQueue {
    pub(super) unsent: Rc<RefCell<Unsent>>,
    /// This incarnation, where failed writes come back to be sent again.
    pub(super) producer: Arc<Recipient<Resend>>,
    pub(super) metrics: Metrics,
    /// What the publishes to each topic share.
    pub(super) taken_by: Rc<RefCell<PerTopic<Arc<TakenBy>>>>,
    pub(super) lineage: Option<Tap>,
}

impl WriteQueue {
    /// What the publishes to `topic` share.
    fn taken_by(&self, topic: &Arc<str>) -> Arc<TakenBy> {
        let mut all = self.taken_by.borrow_mut();
        let taken_by = all.get(topic, |topic| {
            Arc::new(TakenBy {
                producer: (*self.producer).clone(),
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

    /// Queues one record, or answers its failure; returns whether the
    /// unsent was empty before.
    pub(super) fn one(&self, prepared: Prepared, to: Awaiting) -> bool {
        let (record, delayed) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                to.send(Err(e));
                return false;
            }
        };
        let reply = PublishReply {
            to,
            delayed,
            taken: crate::clock::now_ticks(),
            resends: 0,
            taken_by: self.taken_by(&record.topic),
            lineage: self.lineage_of(&record),
        };
        let mut unsent = self.unsent.borrow_mut();
        let was_empty = unsent.writes.is_empty();
        unsent.writes.push(Write::new(record, reply));
        was_empty
    }

    /// Queues a batch's records, answered together once every outcome is
    /// in; returns whether the unsent was empty before.
    pub(super) fn batch(
        &self,
        prepared: Vec<Prepared>,
        tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
        spans: Vec<tracing::Span>,
    ) -> bool {
        let batch = BatchAnswer::new(prepared.len(), tx, spans);
        if prepared.is_empty() {
            batch.set_empty();
            return false;
        }
        let taken = crate::clock::now_ticks();
        let mut unsent = self.unsent.borrow_mut();
        let was_empty = unsent.writes.is_empty();
        unsent.writes.reserve(prepared.len());
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Err(e) => batch.set(index, Err(e)),
                Ok((record, delayed)) => {
                    let reply = PublishReply {
                        to: Awaiting::Batch {
                            batch: batch.clone(),
                            index,
                        },
                        delayed,
                        taken,
                        resends: 0,
                        taken_by: self.taken_by(&record.topic),
                        lineage: self.lineage_of(&record),
                    };
                    unsent.writes.push(Write::new(record, reply));
                }
            }
        }
        was_empty
    }
}

/// The writes taken since the Producer last handed a batch to its connection.
#[derive(Default)]
pub(super) struct Unsent {
    pub(super) writes: Vec<Write<PublishReply>>,
}
