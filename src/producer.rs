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
//! Messages: [`Publish`], `Shutdown`. Owns nothing but its settings; a
//! restart loses no state. Users reach it through a [`ProducerHandle`],
//! which finds the running incarnation on every call; publishes in flight
//! when the Producer itself is restarted answer `MailboxError::Closed`, and
//! the publisher sends them again through the same handle.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use futures_util::future::Either;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::broker::{Delivered, Failed, WriteResult};
use crate::connection::producer::{resend_after, ProduceBatch, ProducerConnection, Reply, Write};
use crate::delay::Plan;
use crate::envelope::{header, new_message_id, OutgoingRecord};
use crate::error::{Error, Result};
use crate::publish::{epoch_ms_rounded_up, Publish, PublishOutcome};

/// Publishes records; reach it through [`App::producer`](crate::App::producer).
pub struct Producer {
    connection: ChildRef<ProducerConnection>,
    max_message_bytes: usize,
    delivery_timeout: Duration,
    delays: Option<Arc<Plan>>,
    outbox: Rc<RefCell<Outbox>>,
    /// This incarnation, where failed writes come back to be sent again.
    me: Option<Arc<Recipient<Resend>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(
        connection: ChildRef<ProducerConnection>,
        max_message_bytes: usize,
        delivery_timeout: Duration,
        delays: Option<Arc<Plan>>,
    ) -> Self {
        Producer {
            connection,
            max_message_bytes,
            delivery_timeout,
            delays,
            outbox: Rc::default(),
            me: None,
        }
    }
}

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
    let now = SystemTime::now();
    let timestamp_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if !headers.contains(header::MESSAGE_ID) {
        headers.append_known_copy(header::MESSAGE_ID, &new_message_id(timestamp_ms));
    }
    let mut decimal = itoa::Buffer::new();
    headers.insert_known_copy(header::TIMESTAMP, decimal.format(timestamp_ms).as_bytes());
    let mut topic = topic;
    let mut delayed = None;
    // Due later than this millisecond: delayed; otherwise published now.
    let deliver_at = due
        .map(|d| d.at_ms(now))
        .filter(|&at| at > epoch_ms_rounded_up(now));
    if let Some(deliver_at) = deliver_at {
        let plan = delays.ok_or_else(|| {
            Error::Config(
                "Publish::delay/at: delayed publishing is off; turn it on with AppBuilder::delays"
                    .into(),
            )
        })?;
        let remaining = Duration::from_millis((deliver_at - timestamp_ms) as u64);
        let (bucket_topic, bucket) = plan.first_bucket(remaining);
        headers.insert(header::DELIVER_AT, deliver_at.to_string());
        headers.insert(header::ORIGINAL_TOPIC, topic.to_string());
        if let Some(p) = partition.take() {
            headers.insert(header::DELIVER_PARTITION, p.to_string());
        }
        topic = bucket_topic;
        delayed = Some(Delayed { deliver_at, bucket });
    }
    let record = OutgoingRecord {
        topic,
        partition,
        key,
        headers,
        payload,
        timestamp_ms,
    };
    let size = record.byte_size();
    if size > max_bytes {
        return Err(Error::RecordTooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok((record, delayed))
}

/// The answer a publisher gets, once its record's fate is known: a
/// [`Write`]'s reply. A failure that may pass goes back to the Producer
/// incarnation that took the publish, which sends the record again.
pub(crate) struct PublishReply {
    to: Answer,
    delayed: Option<Delayed>,
    deadline: Instant,
    /// Sends made so far after the first.
    resends: u32,
    producer: Arc<Recipient<Resend>>,
}

impl PublishReply {
    pub(crate) fn answer(self, result: WriteResult) {
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
                let producer = self.producer.clone();
                let resend = Resend {
                    write: Write::new(record, Reply::Publish(self)),
                    error,
                };
                match producer.try_send(resend) {
                    Ok(()) => return,
                    // That Producer is gone: the failure is final.
                    Err(SendError::Closed(resend) | SendError::Full(resend)) => {
                        let Resend { write, error } = resend;
                        let (_, reply) = write.into_parts();
                        match reply {
                            Reply::Publish(reply) => return reply.send(Err(error)),
                            Reply::Channel(_) => unreachable!("a publish has a publish reply"),
                        }
                    }
                }
            }
            Failed { error, .. } => error,
        };
        self.send(Err(error))
    }

    fn send(self, result: Result<PublishOutcome>) {
        match (self.to, result) {
            (Answer::One(Some(tx)), result) => {
                let _ = tx.send(result);
            }
            (Answer::One(None), Err(e)) => tracing::warn!(error = %e, "a do_send publish failed"),
            (Answer::One(None), Ok(_)) => {}
            (Answer::Batch { batch, index }, result) => batch.set(index, result),
        }
    }
}

/// Who waits for a publish's outcome.
enum Answer {
    /// A [`Publish`]'s sender (None for a `do_send`: failures are logged).
    One(Option<OneshotSender<Result<PublishOutcome>>>),
    /// One record of a [`PublishBatch`].
    Batch {
        batch: Arc<BatchAnswer>,
        index: usize,
    },
}

/// The outcomes of a [`PublishBatch`] as they come; sent, in the batch's
/// order, once the last one is in.
struct BatchAnswer {
    state: std::sync::Mutex<BatchState>,
}

struct BatchState {
    outcomes: Vec<Option<Result<PublishOutcome>>>,
    left: usize,
    tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>,
}

impl BatchAnswer {
    /// Answers an empty batch.
    fn set_empty(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = state.tx.take() {
            let _ = tx.send(Vec::new());
        }
    }

    fn new(len: usize, tx: Option<OneshotSender<Vec<Result<PublishOutcome>>>>) -> Arc<Self> {
        Arc::new(BatchAnswer {
            state: std::sync::Mutex::new(BatchState {
                outcomes: (0..len).map(|_| None).collect(),
                left: len,
                tx,
            }),
        })
    }

    fn set(&self, index: usize, outcome: Result<PublishOutcome>) {
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

/// A publish whose write failed in a way that may pass: sent again after a
/// backoff, unless its delivery timeout would pass first.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Resend {
    write: Write,
    error: Error,
}

/// The writes taken since the Producer last handed a batch to its connection.
#[derive(Default)]
struct Outbox {
    writes: Vec<Write>,
}

/// The [`Producer`]'s immediate answer to a [`Publish`]: the record is
/// queued for its connection, and the publisher's reply waits beside it
/// until the broker has it (no future or task per publish). Not named by
/// users: `send` on the Producer's address resolves to the outcome.
pub struct Queued {
    prepared: Result<(OutgoingRecord, Option<Delayed>)>,
    outbox: Rc<RefCell<Outbox>>,
    producer: Option<Arc<Recipient<Resend>>>,
    delivery_timeout: Duration,
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
        let (record, delayed) = match self.prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(e));
                } else {
                    tracing::warn!(error = %e, "a do_send publish failed");
                }
                return;
            }
        };
        let Some(producer) = self.producer else {
            return; // not started: cannot happen once it handles messages
        };
        let reply = PublishReply {
            to: Answer::One(tx),
            delayed,
            deadline: crate::clock::deadline_in(self.delivery_timeout),
            resends: 0,
            producer,
        };
        let mut outbox = self.outbox.borrow_mut();
        if outbox.writes.is_empty() {
            // Handed over once the mailbox is drained: one batch per wake-up.
            ctx.notify(Flush);
        }
        outbox
            .writes
            .push(Write::new(record, Reply::Publish(reply)));
    }
}

/// Hands the outbox to the connection.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

impl Producer {
    /// Hands the writes taken so far to the current connection, waiting
    /// for one (without taking further publishes meanwhile, so they keep
    /// their order) up to the delivery timeout.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let writes = std::mem::take(&mut self.outbox.borrow_mut().writes);
        if writes.is_empty() {
            return;
        }
        if let Some(conn) = self.connection.get() {
            // Should it stop before handling them, each write answers
            // "connection stopped" with its record, and is sent again.
            return conn.do_send(ProduceBatch(writes));
        }
        let (connection, timeout) = (self.connection.clone(), self.delivery_timeout);
        ctx.wait(
            async move { connection.ready(timeout).await }
                .into_actor(self)
                .map(move |conn, _, _| match conn {
                    Some(conn) => conn.do_send(ProduceBatch(writes)),
                    None => {
                        for write in writes {
                            let (_, reply) = write.into_parts();
                            reply.answer(Err(Failed::without_record(Error::Unavailable(format!(
                                "no producer connection within the delivery timeout of {timeout:?}"
                            )))));
                        }
                    }
                }),
        );
    }
}

impl Actor for Producer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(Arc::new(ctx.address().recipient()));
    }
}

impl Handler<Publish> for Producer {
    type Result = Queued;

    fn handle(&mut self, publish: Publish, _: &mut Context<Self>) -> Queued {
        Queued {
            prepared: prepare(publish, self.max_message_bytes, self.delays.as_deref()),
            outbox: self.outbox.clone(),
            producer: self.me.clone(),
            delivery_timeout: self.delivery_timeout,
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
    prepared: Vec<Result<(OutgoingRecord, Option<Delayed>)>>,
    outbox: Rc<RefCell<Outbox>>,
    producer: Option<Arc<Recipient<Resend>>>,
    delivery_timeout: Duration,
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
        let Some(producer) = self.producer else {
            return; // not started: cannot happen once it handles messages
        };
        let batch = BatchAnswer::new(self.prepared.len(), tx);
        if self.prepared.is_empty() {
            return batch.set_empty();
        }
        let deadline = crate::clock::deadline_in(self.delivery_timeout);
        let mut outbox = self.outbox.borrow_mut();
        if outbox.writes.is_empty() {
            ctx.notify(Flush);
        }
        outbox.writes.reserve(self.prepared.len());
        for (index, prepared) in self.prepared.into_iter().enumerate() {
            match prepared {
                Err(e) => batch.set(index, Err(e)),
                Ok((record, delayed)) => {
                    let reply = PublishReply {
                        to: Answer::Batch {
                            batch: batch.clone(),
                            index,
                        },
                        delayed,
                        deadline,
                        resends: 0,
                        producer: producer.clone(),
                    };
                    outbox
                        .writes
                        .push(Write::new(record, Reply::Publish(reply)));
                }
            }
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
                .map(|p| prepare(p, self.max_message_bytes, self.delays.as_deref()))
                .collect(),
            outbox: self.outbox.clone(),
            producer: self.me.clone(),
            delivery_timeout: self.delivery_timeout,
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

    fn handle(&mut self, Resend { mut write, error }: Resend, ctx: &mut Context<Self>) {
        let Reply::Publish(reply) = write.reply_mut() else {
            unreachable!("the Producer resends publishes only");
        };
        let Some(backoff) = resend_after(reply.resends, reply.deadline) else {
            let (_, reply) = write.into_parts();
            if let Reply::Publish(reply) = reply {
                reply.send(Err(error));
            }
            return;
        };
        reply.resends += 1;
        tracing::debug!(topic = %write.record().topic, %error, ?backoff, "publish failed; sending again");
        ctx.run_later(backoff, move |act, ctx| {
            act.outbox.borrow_mut().writes.push(write);
            act.flush(ctx);
        });
    }
}

/// The application's publisher, from [`App::producer`](crate::App::producer):
/// a handle on the [`Producer`] actor that stays valid for the life of the
/// application, across the actor's restarts. Keep it as long as you like.
///
/// [`send`](ProducerHandle::send) answers as `Addr<Producer>::send` does
/// (`producer.send(publish).await??`). Each call reaches the incarnation
/// running at that moment, or, while the Producer is being restarted, the
/// next one (waiting up to the application's delivery timeout); publishes
/// reach it in call order. A publish the stopping incarnation had not
/// answered yet fails with `MailboxError::Closed` (it may or may not have
/// been written): send it again.
///
/// ```
/// # use kafkactor::prelude::*;
/// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
/// let app = Kafkactor::builder().broker(Broker::memory()).start().await?;
/// let producer = app.producer();                 // a ProducerHandle
/// let outcome = producer.send(Publish::to("orders").message(&"hello")?).await??;
/// assert!(matches!(outcome, PublishOutcome::Direct { .. }));
/// app.shutdown().await
/// # }
/// ```
#[derive(Clone)]
pub struct ProducerHandle {
    producer: ChildRef<Producer>,
    wait: Duration,
}

impl std::fmt::Debug for ProducerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerHandle")
            .field("running", &self.producer.get().is_some())
            .finish()
    }
}

impl ProducerHandle {
    pub(crate) fn new(producer: ChildRef<Producer>, wait: Duration) -> Self {
        ProducerHandle { producer, wait }
    }

    /// Publishes `publish`: `Ok(Ok(outcome))` once it is written,
    /// `Ok(Err(error))` when publishing failed, `Err(MailboxError)` when no
    /// Producer took the message (the application stopped, or the Producer
    /// stopped before it answered).
    pub fn send(
        &self,
        publish: Publish,
    ) -> impl Future<Output = std::result::Result<Result<PublishOutcome>, MailboxError>> + 'static
    {
        self.send_message(publish)
    }

    /// Publishes many records in one message, in order; the answer holds
    /// every outcome, in the batch's order. `Err(MailboxError)` when no
    /// Producer took the batch (none of it was published) or the Producer
    /// stopped before answering (some of it may have been).
    pub fn send_batch(
        &self,
        batch: PublishBatch,
    ) -> impl Future<Output = std::result::Result<Vec<Result<PublishOutcome>>, MailboxError>> + 'static
    {
        self.send_message(batch)
    }

    /// Sends `message` to the running incarnation now (so messages keep the
    /// order of the calls), or to the next one within the wait.
    fn send_message<M>(
        &self,
        message: M,
    ) -> impl Future<Output = std::result::Result<M::Result, MailboxError>> + 'static
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Producer: Handler<M>,
    {
        let mut message = Some(message);
        let sent = self
            .producer
            .with(|addr, _| addr.send(message.take().expect("taken once")));
        match (sent, message) {
            (Some(request), _) => Either::Left(request),
            (None, message) => {
                let message = message.expect("not taken");
                let (producer, wait) = (self.producer.clone(), self.wait);
                Either::Right(async move {
                    match producer.ready(wait).await {
                        Some(addr) => addr.send(message).await,
                        None => Err(MailboxError::Closed),
                    }
                })
            }
        }
    }

    /// Publishes without waiting for the outcome (lost if no Producer runs
    /// within the delivery timeout; failures are logged, not returned).
    pub fn do_send(&self, publish: Publish) {
        let mut publish = Some(publish);
        let sent = self
            .producer
            .with(|addr, _| addr.do_send(publish.take().expect("taken once")));
        let Some(publish) = publish.filter(|_| sent.is_none()) else {
            return;
        };
        let sent = self.send(publish);
        actix_rt::spawn(async move {
            match sent.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "a do_send publish failed"),
                Err(e) => tracing::warn!(error = %e, "a do_send publish reached no producer"),
            }
        });
    }

    /// The address of the Producer incarnation running now, if one is.
    pub fn addr(&self) -> Option<Addr<Producer>> {
        self.producer.get()
    }
}

impl Handler<Shutdown> for Producer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
