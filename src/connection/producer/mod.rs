//! `ProducerConnection`: owns the broker's producer client, and the one
//! write path every writer uses (the Producer, the Republisher, the
//! dead-letter handler).
//!
//! Messages: [`ProduceBatch`] (write these records, in order; each carries
//! where its answer goes) and `Shutdown` (flush, then stop); and, without a
//! message each, what comes through its writer's [`Intake`] (the
//! Producer's direct publishes, see `intake.rs`). It owns the
//! producer client, created when the actor starts, so a restart creates a
//! fresh client.
//!
//! A record is never copied on its way to the broker. Each [`Write`] holds
//! its record until the client has it, and a write that fails gives its
//! record back with the error (a [`Failed`]) to its writer, which sends it
//! again while the failure may pass and its delivery timeout allows. A write
//! dropped unanswered (the connection stopped or was restarted with it in
//! its mailbox or queue) answers "connection stopped" with its record, so
//! nothing is lost with an incarnation.
//!
//! Order: records are enqueued in the client in the order their writes
//! arrive. A topic seen for the first time is created (when missing) before
//! its first record, and a full client queue is waited out, both without
//! handling any other message meanwhile, so neither reorders records.
//!
//! Deliveries: a report known when the record is enqueued (the embedded
//! broker) is answered at once; one task per incarnation awaits every other
//! pending report (Kafka's) and answers it, so thousands of records awaiting
//! Kafka's acknowledgement cost one task, not one each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafkactor_actors::{fail, ChildRef, Shutdown};
use rustc_hash::FxHashSet;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{BrokerBackend, Enqueued, Failed, ProducerClient, ProducerConfig, WriteResult};
use crate::envelope::OutgoingRecord;
use crate::error::Error;
use crate::observe::trace::{batch_span, Batch};

mod intake;
mod writer;

pub(crate) use intake::{Intake, SharedIntake};
pub(crate) use writer::{resend_after, Writer};

/// Mailbox capacity of the writing actors (a producer connection and the
/// Producer; see `ChildSpec::mailbox_capacity`).
pub(crate) const WRITE_MAILBOX: usize = 1 << 20;

/// Where the answer to a write goes: each writer above the connection (the
/// Producer, the Republisher) implements it for its own reply, which rides
/// beside its record until the broker has it or refused it for good.
pub(crate) trait WriteReply: Send + Unpin + 'static {
    /// Answers the write: the broker has the record, or the failure (with
    /// the record, where it is still there).
    fn answer(self, result: WriteResult);

    /// The span the write follows from, when spans are on.
    fn span(&self) -> Option<&tracing::Span> {
        None
    }
}

/// Records to write, in order: one message per batch, not per record.
pub(crate) struct ProduceBatch<R: WriteReply>(pub(crate) Vec<Write<R>>);

impl<R: WriteReply> Message for ProduceBatch<R> {
    type Result = ();
}

/// One record to write and where its answer goes. Dropped unanswered, it
/// answers that the connection stopped, and gives its record back.
pub(crate) struct Write<R: WriteReply> {
    record: Option<OutgoingRecord>,
    reply: Option<AnswerTo<R>>,
}

/// Where the answer to a [`Write`] goes.
pub(crate) enum AnswerTo<R> {
    /// The writer's own reply.
    To(R),
    /// A write of a [`Writer`]: the answer, record included on failure.
    Channel(oneshot::Sender<WriteResult>),
}

impl<R: WriteReply> AnswerTo<R> {
    pub(crate) fn answer(self, result: WriteResult) {
        match self {
            AnswerTo::To(reply) => reply.answer(result),
            AnswerTo::Channel(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

impl<R: WriteReply> Write<R> {
    /// The span of the publish this writes, when spans are on.
    fn publish_span(&self) -> Option<&tracing::Span> {
        match &self.reply {
            Some(AnswerTo::To(reply)) => reply.span(),
            _ => None,
        }
    }

    /// A write answered through `reply`.
    pub(crate) fn new(record: OutgoingRecord, reply: R) -> Self {
        Write {
            record: Some(record),
            reply: Some(AnswerTo::To(reply)),
        }
    }

    fn with(record: OutgoingRecord, reply: AnswerTo<R>) -> Self {
        Write {
            record: Some(record),
            reply: Some(reply),
        }
    }

    /// The record and its reply, for writing.
    pub(crate) fn into_parts(mut self) -> (OutgoingRecord, AnswerTo<R>) {
        match (self.record.take(), self.reply.take()) {
            (Some(record), Some(reply)) => (record, reply),
            _ => unreachable!("a write's parts are taken once, by value"),
        }
    }

    pub(crate) fn record(&self) -> &OutgoingRecord {
        self.record.as_ref().expect("a write has its record")
    }
}

impl<R: WriteReply> Drop for Write<R> {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply.answer(Err(Box::new(Failed {
                error: Error::Unavailable("producer connection stopped".into()),
                record: self.record.take(),
            })));
        }
    }
}

type Pending<R> = (BoxFuture<'static, WriteResult>, AnswerTo<R>);

/// The producer connection of writers answered through `R`.
pub(crate) struct ProducerConnection<R: WriteReply> {
    backend: Arc<dyn BrokerBackend>,
    config: ProducerConfig,
    client: Option<Arc<dyn ProducerClient>>,
    known_topics: FxHashSet<Arc<str>>,
    deliveries: Option<mpsc::UnboundedSender<Pending<R>>>,
    /// Writes arrived and not yet handed to the client (while a topic is
    /// created or the client's queue is full), in order.
    queue: VecDeque<Write<R>>,
    /// The writer's intake, drained by each incarnation in turn.
    intake: Option<SharedIntake<R>>,
}

impl<R: WriteReply> ProducerConnection<R> {
    pub(crate) fn new(backend: Arc<dyn BrokerBackend>, config: ProducerConfig) -> Self {
        ProducerConnection {
            backend,
            config,
            client: None,
            known_topics: FxHashSet::default(),
            deliveries: None,
            queue: VecDeque::new(),
            intake: None,
        }
    }

    /// The same, also writing what comes through `intake`.
    pub(crate) fn with_intake(mut self, intake: SharedIntake<R>) -> Self {
        self.intake = Some(intake);
        self
    }

    /// Hands the queued writes to the client, in order, until one has to
    /// wait (a new topic, a full client queue): the rest wait with it,
    /// and no other message is handled meanwhile.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            // Dropped, each answers "connection stopped" with its record.
            self.queue.clear();
            return;
        };
        while let Some(write) = self.queue.pop_front() {
            if !self.known_topics.contains(&write.record().topic) {
                let topic = write.record().topic.clone();
                self.queue.push_front(write);
                ctx.wait(
                    self.backend
                        .ensure_topic(&topic, None)
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            match result {
                                Ok(()) => {
                                    act.known_topics.insert(topic);
                                }
                                Err(error) => {
                                    if let Some(write) = act.queue.pop_front() {
                                        let (record, reply) = write.into_parts();
                                        reply.answer(Err(Failed::new(error, record)));
                                    }
                                }
                            }
                            act.drain(ctx);
                        }),
                );
                return;
            }
            let (record, reply) = write.into_parts();
            match client.send(record) {
                Enqueued::Done(result) => reply.answer(result),
                Enqueued::Sent(delivery) => {
                    if let Some(deliveries) = &self.deliveries {
                        // Fails only once the task is gone, with the actor;
                        // the reply then answers as dropped.
                        let _ = deliveries.send((delivery, reply));
                    }
                }
                Enqueued::Full(record) => {
                    self.queue.push_front(Write::with(record, reply));
                    ctx.wait(
                        tokio::time::sleep(QUEUE_FULL_WAIT)
                            .into_actor(self)
                            .map(|(), act, ctx| act.drain(ctx)),
                    );
                    return;
                }
            }
        }
    }
}

/// How long to wait before retrying a record refused by a full client queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// Answers delivery reports as they arrive, until the actor is gone and
/// every report is in.
async fn answer_deliveries<R: WriteReply>(mut incoming: mpsc::UnboundedReceiver<Pending<R>>) {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some((delivery, reply)) => pending.push(async move {
                    reply.answer(delivery.await);
                }),
                None => break,
            },
            Some(()) = pending.next(), if !pending.is_empty() => {}
        }
    }
    while pending.next().await.is_some() {}
}

impl<R: WriteReply> Actor for ProducerConnection<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.backend.producer(self.config) {
            Ok(client) => self.client = Some(client),
            Err(e) => {
                fail(ctx, format!("cannot create producer: {e}"));
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.deliveries = Some(tx);
        actix_rt::spawn(answer_deliveries(rx));
        if self.intake.is_some() {
            ctx.spawn(intake::Drain);
        }
    }
}

/// The `broker_write` span of `writes`, following from each publish they
/// carry (when spans are on).
fn write_span<'a, R: WriteReply>(
    writes: impl ExactSizeIterator<Item = &'a Write<R>> + Clone,
) -> tracing::Span {
    let span = batch_span(Batch::BrokerWrite, None, writes.len());
    if !span.is_disabled() {
        for write in writes {
            if let Some(publish) = write.publish_span() {
                span.follows_from(publish);
            }
        }
    }
    span
}

impl<R: WriteReply> Handler<ProduceBatch<R>> for ProducerConnection<R> {
    type Result = ();

    fn handle(&mut self, ProduceBatch(writes): ProduceBatch<R>, ctx: &mut Context<Self>) {
        let span = write_span(writes.iter());
        let _entered = span.enter();
        if self.queue.is_empty() {
            self.queue = VecDeque::from(writes);
        } else {
            self.queue.extend(writes);
        }
        self.drain(ctx);
    }
}

impl<R: WriteReply> Handler<Shutdown> for ProducerConnection<R> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let flush = self.client.as_ref().map(|c| c.flush());
        Box::pin(
            async move {
                if let Some(flush) = flush {
                    if let Err(e) = flush.await {
                        tracing::warn!(error = %e, "flush on shutdown failed");
                    }
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

/// Hands `writes` to the current connection, or, while it is being
/// restarted, to the next one within `timeout`; the caller's actor handles
/// nothing else meanwhile, so writes keep their order. Writes no connection
/// took within the timeout answer that none was there.
pub(crate) fn hand_over<A, R: WriteReply>(
    connection: &ChildRef<ProducerConnection<R>>,
    writes: Vec<Write<R>>,
    timeout: Duration,
    ctx: &mut Context<A>,
) where
    A: Actor<Context = Context<A>>,
{
    if let Some(conn) = connection.get() {
        // Should it stop before handling them, each write answers
        // "connection stopped" with its record, and is sent again.
        return conn.do_send(ProduceBatch(writes));
    }
    let connection = connection.clone();
    ctx.wait(
        actix::fut::wrap_future::<_, A>(async move { connection.ready(timeout).await }).map(
            move |conn, _, _| match conn {
                Some(conn) => conn.do_send(ProduceBatch(writes)),
                None => {
                    for write in writes {
                        let (_, reply) = write.into_parts();
                        reply.answer(Err(Failed::without_record(Error::Unavailable(format!(
                            "no producer connection within the delivery timeout of {timeout:?}"
                        )))));
                    }
                }
            },
        ),
    );
}
