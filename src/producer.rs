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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::future::Either;
use kafkactor_actors::{ChildRef, Shutdown};
use tokio::sync::oneshot;

use crate::broker::Delivered;
use crate::connection::producer::{Produce, ProducerConnection};
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
        headers.insert_known(header::MESSAGE_ID, new_message_id(timestamp_ms));
    }
    headers.insert_known(header::TIMESTAMP, timestamp_ms.to_string());
    let mut topic: Arc<str> = Arc::from(topic);
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

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<Publish> for Producer {
    // A task per publish, not a future in the actor's context: actix polls
    // every future of a context on each wake-up, which is quadratic with
    // thousands of publishes awaiting Kafka's acknowledgement.
    type Result = ResponseFuture<Result<PublishOutcome>>;

    fn handle(&mut self, publish: Publish, _: &mut Context<Self>) -> Self::Result {
        let (record, delayed) =
            match prepare(publish, self.max_message_bytes, self.delays.as_deref()) {
                Ok(r) => r,
                Err(e) => return Box::pin(async move { Err(e) }),
            };
        let write = produce(self.connection.clone(), record, self.delivery_timeout);
        Box::pin(async move {
            let Delivered { partition, offset } = write.await?;
            Ok(match delayed {
                None => PublishOutcome::Direct { partition, offset },
                Some(Delayed { deliver_at, bucket }) => PublishOutcome::Delayed {
                    deliver_at: SystemTime::UNIX_EPOCH
                        + Duration::from_millis(deliver_at.max(0) as u64),
                    bucket,
                    partition,
                    offset,
                },
            })
        })
    }
}

/// Writes `record` through the current connection, resending after retriable
/// failures and connection restarts until `timeout` has passed.
///
/// The first attempt is enqueued in the connection's mailbox before this
/// returns, so records reach the broker in the order `produce` was called.
pub(crate) fn produce(
    connection: ChildRef<ProducerConnection>,
    record: OutgoingRecord,
    timeout: Duration,
) -> impl Future<Output = Result<Delivered>> + 'static {
    let send = |conn: &Addr<ProducerConnection>, record: OutgoingRecord| {
        let (reply, answer) = oneshot::channel();
        conn.do_send(Produce { record, reply });
        answer
    };
    let first = connection
        .get_numbered()
        .map(|(conn, n)| (send(&conn, record.clone()), n));
    async move {
        let deadline = crate::clock::deadline_in(timeout);
        let mut pending = first;
        let mut failed_incarnation = 0;
        let mut backoff = Duration::from_millis(5);
        loop {
            let (answer, incarnation) = match pending.take() {
                Some(first) => first,
                None => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let Some((conn, n)) =
                        connection.ready_after(failed_incarnation, remaining).await
                    else {
                        return Err(Error::Unavailable(format!(
                            "no producer connection within the delivery timeout of {timeout:?}"
                        )));
                    };
                    (send(&conn, record.clone()), n)
                }
            };
            let error = match answer.await {
                Ok(Ok(delivered)) => return Ok(delivered),
                Ok(Err(e)) if !e.is_retriable() => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => {
                    // The connection stopped before answering: wait for the next one.
                    failed_incarnation = incarnation;
                    Error::Unavailable("producer connection stopped".into())
                }
            };
            if Instant::now()
                .checked_add(backoff)
                .is_none_or(|t| t >= deadline)
            {
                return Err(error);
            }
            tracing::debug!(topic = %record.topic, %error, ?backoff, "publish failed; sending again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
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
        match self.producer.get() {
            // Enqueued now: publishes keep the order of the calls.
            Some(addr) => Either::Left(addr.send(publish)),
            None => {
                let (producer, wait) = (self.producer.clone(), self.wait);
                Either::Right(async move {
                    match producer.ready(wait).await {
                        Some(addr) => addr.send(publish).await,
                        None => Err(MailboxError::Closed),
                    }
                })
            }
        }
    }

    /// Publishes without waiting for the outcome (lost if no Producer runs
    /// within the delivery timeout; failures are logged, not returned).
    pub fn do_send(&self, publish: Publish) {
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
