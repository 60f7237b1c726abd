//! The `Producer` actor: [`Publish`] in, [`PublishOutcome`] out.
//!
//! Role: stamps the well-known headers (message id, timestamp), sends a
//! delayed record (`Publish::delay`/`at`) to its first delay bucket with the
//! `x-deliver-at` and `x-original-topic` headers, checks the record against
//! the maximum size, and hands it to the ProducerConnection.
//! When the connection fails with a retriable error or is being restarted,
//! the record is sent again (to the new incarnation) until the delivery
//! timeout; only then does the publisher get the error. A record sent twice
//! this way may be written twice (at-least-once publishing).
//!
//! Messages: [`Publish`] and [`PublishBatch`] sent to its address, the
//! writes that failed in a way that may pass (`Resend`), and `Shutdown`.
//! The records taken in one turn go to the connection as one batch. What
//! [`ProducerHandle`]s send does not pass through the actor: their intake
//! is drained by the producer connection itself (`intake.rs`), and only
//! their failed writes come back here to be sent again. Owns nothing but
//! its settings and the writes taken and not yet handed over; a restart
//! loses no state: writes the stopping incarnation had taken and not
//! answered answer `MailboxError::Closed` on its address (the publisher
//! sends them again), and a write failing after it stopped is sent again
//! by the next incarnation.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::buckets::Plan;
use crate::connection::producer::{hand_over, resend_after, ProducerConnection, Write};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};
use crate::observe::lineage::Tap;
use crate::observe::metrics::Metrics;
use crate::publish::{Publish, PublishOutcome};
use handle::IntakeReceiver;
pub(crate) use intake::ProducerIntake;
use queue::{Prepared, Replies, WriteQueue};
use reply::Awaiting;

pub(crate) mod handle;
mod intake;
mod prepare;
mod queue;
pub(crate) mod reply;
mod send_error;

pub use handle::ProducerHandle;
pub(crate) use prepare::{prepare, Delayed};
pub(crate) use reply::PublishReply;
pub use send_error::SendError;

/// Most writes handed to the connection in one message.
const FLUSH_BATCH: usize = 256;

/// What the Producer and its intake are made with.
#[derive(Clone)]
pub(crate) struct ProducerSettings {
    pub(crate) max_record_bytes: usize,
    pub(crate) delivery_timeout: Duration,
    /// The delay buckets, when delayed publishing is on.
    pub(crate) delays: Option<Arc<Plan>>,
    pub(crate) metrics: Metrics,
    pub(crate) lineage: Option<Tap>,
}

impl ProducerSettings {
    /// `publish` as the record to write (see [`prepare`]).
    #[inline]
    fn prepare(&self, publish: Publish) -> Prepared {
        prepare(publish, self.max_record_bytes, self.delays.as_deref())
    }
}

/// Publishes records; reach it through [`App::producer`](crate::App::producer).
pub struct Producer {
    connection: ChildRef<ProducerConnection<PublishReply>>,
    settings: ProducerSettings,
    /// Where this incarnation queues writes.
    queue: WriteQueue,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("max_record_bytes", &self.settings.max_record_bytes)
            .finish()
    }
}

impl Producer {
    /// A Producer found through `own` (where failed writes come back),
    /// writing through `connection`.
    pub(crate) fn new(
        own: ChildRef<Producer>,
        connection: ChildRef<ProducerConnection<PublishReply>>,
        settings: &ProducerSettings,
    ) -> Self {
        Producer {
            connection,
            settings: settings.clone(),
            queue: WriteQueue {
                unsent: Rc::default(),
                replies: Replies::new(own, settings),
            },
        }
    }

    /// The intake of `requests` (from [`ProducerHandle`]s) as the
    /// producer connection drains it; failed writes come back to `own`.
    pub(crate) fn intake(
        own: ChildRef<Producer>,
        requests: IntakeReceiver,
        settings: &ProducerSettings,
    ) -> ProducerIntake {
        ProducerIntake::new(requests, settings.clone(), Replies::new(own, settings))
    }
}

/// A publish whose write failed in a way that may pass: sent again after a
/// backoff, unless its delivery timeout would pass first.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Resend {
    record: OutgoingRecord,
    reply: PublishReply,
    error: Error,
}

/// The [`Producer`]'s immediate answer to a [`Publish`]: the record is
/// queued for its connection, and the publisher's reply waits beside it
/// until the broker has it (no future or task per publish). Not named by
/// users: `send` on the Producer's address resolves to the outcome.
pub struct Queued {
    prepared: Prepared,
    queue: WriteQueue,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("ok", &self.prepared.is_ok())
            .finish()
    }
}

impl MessageResponse<Producer, Publish> for Queued {
    fn handle(
        self,
        ctx: &mut Context<Producer>,
        tx: Option<OneshotSender<Result<PublishOutcome>>>,
    ) {
        // Handed over once the mailbox is drained: one batch per wake-up.
        if self.queue.one(self.prepared, Awaiting::One(tx)) {
            ctx.notify(Flush);
        }
    }
}

/// Hands the unsent to the connection.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Producer {
    /// Hands the writes taken so far to the current connection, waiting
    /// for one (without taking further publishes meanwhile, so they keep
    /// their order) up to the delivery timeout.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let writes = {
            let mut unsent = self.queue.unsent.borrow_mut();
            if unsent.writes.is_empty() {
                return;
            }
            let room = unsent.writes.len().min(FLUSH_BATCH);
            std::mem::replace(&mut unsent.writes, Vec::with_capacity(room))
        };
        hand_over(
            &self.connection,
            writes,
            self.settings.delivery_timeout,
            ctx,
        );
    }
}

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<Publish> for Producer {
    type Result = Queued;

    fn handle(&mut self, publish: Publish, _: &mut Context<Self>) -> Queued {
        Queued {
            prepared: self.settings.prepare(publish),
            queue: self.queue.clone(),
        }
    }
}

/// Many records to publish, in order, answered once with every outcome
/// (in the batch's order): for bulk publishers, one message to the
/// Producer instead of one per record.
///
/// ```
/// # use kafkactor::prelude::*;
/// # use kafkactor::PublishBatch;
/// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
/// let app = Kafkactor::builder().broker(Broker::memory()).start().await?;
/// let batch = (0..3)
///     .map(|i| Publish::to("orders").key(format!("order-{i}")).message(&i))
///     .collect::<Result<Vec<_>, _>>()?;
/// let outcomes = app.producer().send_batch(PublishBatch(batch)).await.expect("the Producer answers");
/// assert_eq!(outcomes.len(), 3);
/// assert!(outcomes.iter().all(|o| matches!(o, Ok(PublishOutcome::Direct { .. }))));
/// app.shutdown().await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PublishBatch(pub Vec<Publish>);

impl Message for PublishBatch {
    type Result = Vec<Result<PublishOutcome>>;
}

/// The [`Producer`]'s immediate answer to a [`PublishBatch`]: every record
/// queued for its connection, each outcome gathered as it comes. Not named
/// by users.
pub struct QueuedBatch {
    prepared: Vec<Prepared>,
    queue: WriteQueue,
}

impl std::fmt::Debug for QueuedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedBatch")
            .field("records", &self.prepared.len())
            .finish()
    }
}

impl MessageResponse<Producer, PublishBatch> for QueuedBatch {
    fn handle(
        self,
        ctx: &mut Context<Producer>,
        tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
    ) {
        if self.queue.batch(self.prepared, tx) {
            ctx.notify(Flush);
        }
    }
}

impl Handler<PublishBatch> for Producer {
    type Result = QueuedBatch;

    fn handle(
        &mut self,
        PublishBatch(publishes): PublishBatch,
        _: &mut Context<Self>,
    ) -> QueuedBatch {
        QueuedBatch {
            prepared: publishes
                .into_iter()
                .map(|p| self.settings.prepare(p))
                .collect(),
            queue: self.queue.clone(),
        }
    }
}

impl Handler<Flush> for Producer {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl Handler<Resend> for Producer {
    type Result = ();

    fn handle(&mut self, resend: Resend, ctx: &mut Context<Self>) {
        let Resend {
            record,
            mut reply,
            error,
        } = resend;
        let Some(backoff) = resend_after(
            reply.resends,
            reply.deadline(self.settings.delivery_timeout),
        ) else {
            return reply.send(Err(error));
        };
        reply.resends += 1;
        tracing::debug!(topic = %record.topic, %error, ?backoff, "publish failed; sending again");
        let write = Write::new(record, reply);
        ctx.run_later(backoff, move |act, ctx| {
            act.queue.unsent.borrow_mut().writes.push(write);
            act.flush(ctx);
        });
    }
}

impl Handler<Shutdown> for Producer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
