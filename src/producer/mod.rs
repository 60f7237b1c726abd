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
//! Messages: what [`ProducerHandle`]s send comes through the intake (see
//! `handle.rs`): one queue, drained in one turn per wake-up, that outlives
//! incarnations. The actor also handles [`Publish`] and [`PublishBatch`]
//! sent to its address, and `Shutdown`. Either way the records taken in one
//! turn go to the connection as one batch. Owns nothing but its settings
//! and the writes taken and not yet handed over; a restart loses no state:
//! publishes still in the intake are taken by the next incarnation, and
//! publishes the stopping one had taken but not answered answer
//! [`SendError::Unanswered`] through a [`ProducerHandle`]
//! (`MailboxError::Closed` on its address): the publisher sends them again.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{self, Poll};

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
use handle::{IntakeReceiver, Request};
use queue::{Prepared, Unsent, WriteQueue};
use reply::Awaiting;

pub(crate) mod handle;
mod prepare;
mod queue;
pub(crate) mod reply;
mod send_error;

pub use handle::ProducerHandle;
pub(crate) use prepare::{prepare, Delayed};
pub(crate) use reply::PublishReply;
pub use send_error::SendError;

/// Most requests taken from the intake at once, and rounds of that per
/// turn before the Producer lets its thread's other tasks run.
const DRAIN_BATCH: usize = 256;
const DRAIN_ROUNDS: usize = 16;

/// Publishes records; reach it through [`App::producer`](crate::App::producer).
pub struct Producer {
    connection: ChildRef<ProducerConnection<PublishReply>>,
    max_record_bytes: usize,
    delivery_timeout: Duration,
    delays: Option<Arc<Plan>>,
    /// Where this incarnation queues writes (set once it started).
    queue: Option<WriteQueue>,
    unsent: Rc<RefCell<Unsent>>,
    /// The intake, taken by each incarnation in turn.
    intake: Option<IntakeReceiver>,
    metrics: Metrics,
    lineage: Option<Tap>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("max_record_bytes", &self.max_record_bytes)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(
        connection: ChildRef<ProducerConnection<PublishReply>>,
        max_record_bytes: usize,
        delivery_timeout: Duration,
        delays: Option<Arc<Plan>>,
        intake: Option<IntakeReceiver>,
        metrics: Metrics,
        lineage: Option<Tap>,
    ) -> Self {
        Producer {
            connection,
            max_record_bytes,
            delivery_timeout,
            delays,
            queue: None,
            unsent: Rc::default(),
            intake,
            metrics,
            lineage,
        }
    }

    fn prepare(&self, publish: Publish) -> Result<(OutgoingRecord, Option<Delayed>)> {
        prepare(publish, self.max_record_bytes, self.delays.as_deref())
    }

    /// Queues what a request from the intake asks for.
    fn take(&mut self, request: Request) {
        let Some(queue) = self.queue.as_ref() else {
            return; // not started: cannot happen once it drains the intake
        };
        match request {
            Request::One(publish, tx) => {
                queue.one(self.prepare(publish), Awaiting::One(tx));
            }
            Request::Traced(traced) => {
                let (publish, tx, span) = *traced;
                queue.one(
                    self.prepare(publish),
                    Awaiting::Traced(Box::new((tx, span))),
                );
            }
            Request::Batch(PublishBatch(publishes), tx, spans) => {
                let prepared = publishes.into_iter().map(|p| self.prepare(p)).collect();
                queue.batch(prepared, Some(tx), spans);
            }
        }
    }
}

/// Takes everything waiting in the intake, then hands it to the
/// connection in one batch: a future of the Producer's context, woken when
/// the intake gets something. Ends once every [`ProducerHandle`] is gone.
struct Drain {
    taken: Vec<Request>,
}

impl ActorFuture<Producer> for Drain {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Producer,
        ctx: &mut Context<Producer>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let Some(intake) = act.intake.clone() else {
            return Poll::Ready(());
        };
        for _ in 0..DRAIN_ROUNDS {
            let polled = intake
                .borrow_mut()
                .poll_recv_many(task, &mut this.taken, DRAIN_BATCH);
            match polled {
                Poll::Pending => {
                    act.flush(ctx);
                    return Poll::Pending;
                }
                Poll::Ready(0) => {
                    act.flush(ctx);
                    return Poll::Ready(());
                }
                Poll::Ready(_) => {
                    for request in this.taken.drain(..) {
                        act.take(request);
                    }
                }
            }
        }
        act.flush(ctx);
        task.waker().wake_by_ref();
        Poll::Pending
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
    queue: Option<WriteQueue>,
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
        if self
            .queue
            .is_some_and(|q| q.one(self.prepared, Awaiting::One(tx)))
        {
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
            let mut unsent = self.unsent.borrow_mut();
            if unsent.writes.is_empty() {
                return;
            }
            let room = unsent.writes.len().min(DRAIN_BATCH);
            std::mem::replace(&mut unsent.writes, Vec::with_capacity(room))
        };
        hand_over(&self.connection, writes, self.delivery_timeout, ctx);
    }
}

impl Actor for Producer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.queue = Some(WriteQueue {
            unsent: self.unsent.clone(),
            producer: Arc::new(ctx.address().recipient()),
            metrics: self.metrics.clone(),
            taken_by: Rc::default(),
            lineage: self.lineage.clone(),
        });
        ctx.spawn(Drain {
            taken: Vec::with_capacity(DRAIN_BATCH),
        });
    }
}

impl Handler<Publish> for Producer {
    type Result = Queued;

    fn handle(&mut self, publish: Publish, _: &mut Context<Self>) -> Queued {
        Queued {
            prepared: self.prepare(publish),
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
    queue: Option<WriteQueue>,
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
        if self
            .queue
            .is_some_and(|q| q.batch(self.prepared, tx, Vec::new()))
        {
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
            prepared: publishes.into_iter().map(|p| self.prepare(p)).collect(),
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
        let Some(backoff) = resend_after(reply.resends, reply.deadline(self.delivery_timeout))
        else {
            return reply.send(Err(error));
        };
        reply.resends += 1;
        tracing::debug!(topic = %record.topic, %error, ?backoff, "publish failed; sending again");
        let write = Write::new(record, reply);
        ctx.run_later(backoff, move |act, ctx| {
            act.unsent.borrow_mut().writes.push(write);
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
