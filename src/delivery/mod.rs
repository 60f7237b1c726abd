//! What a handler receives ([`Delivery`]) and what it answers ([`Outcome`]).

mod batch;
mod builder;
pub(crate) mod current;
mod failure;
mod handled;
pub(crate) mod outlet;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use actix::{Message, MessageResponse};
use serde::Serialize;

use crate::envelope::{header, Headers, Record};
use crate::error::{Error, Result};
use crate::observe::trace::TraceContext;
use crate::publish::{Publish, PublishOutcome};

pub use batch::{Batch, BatchOutcome};
pub use builder::DeliveryBuilder;
pub use failure::{Failure, OrReject};
pub use handled::Handled;
use outlet::OutletId;

/// A decoded message and where it came from. Handlers implement
/// `Handler<Delivery<T>>` and answer an [`Outcome`]; they publish and
/// reply through it ([`publish`](Delivery::publish),
/// [`reply`](Delivery::reply)).
pub struct Delivery<T> {
    message: T,
    record: Arc<Record>,
    attempt: u32,
    /// Where its publishes go (none for a delivery made without a
    /// subscription).
    outlet: Option<OutletId>,
}

impl<T> Delivery<T> {
    pub(crate) fn new(message: T, record: Arc<Record>, attempt: u32) -> Self {
        Delivery {
            message,
            record,
            attempt,
            outlet: None,
        }
    }

    /// A delivery whose publishes go through the outlet registered as
    /// `outlet`.
    #[inline]
    pub(crate) fn with_outlet(mut self, outlet: Option<OutletId>) -> Self {
        self.outlet = outlet;
        self
    }

    /// Publishes `publish` through the application's producer, answering
    /// once it is written: it inherits this record's tenant, correlation
    /// id and trace (unless it sets its own), and in a
    /// [transactional](crate::Subscription::transactional) subscription
    /// it joins the record's transaction (answered
    /// [`PublishOutcome::Transactional`] at once, written with the record's
    /// commit, dropped if the handling does not end in an acknowledgement).
    ///
    /// Call it from the handler (its async body included); a publish made
    /// after the handler answered (from a task it spawned) is written on
    /// its own, or, in a transactional subscription, refused with
    /// [`Error::Unavailable`], since the transaction is over.
    pub fn publish(
        &self,
        publish: Publish,
    ) -> impl Future<Output = Result<PublishOutcome>> + 'static {
        let sent = self.outlet().and_then(|outlet| match outlet {
            // The producer gives it the record's context and transaction
            // (a batch's other records give their own context first).
            outlet if current::handles(&self.record) => {
                let publish = if current::is_running(&self.record) {
                    publish
                } else {
                    publish.continuing(self)
                };
                Ok(outlet.publisher.publish(publish))
            }
            outlet if outlet.transactional => Err(Error::Unavailable(
                "the record's transaction is over: a transactional handler publishes \
                 before it answers"
                    .into(),
            )),
            outlet => Ok(outlet.publisher.publish(publish.continuing(self))),
        });
        async move { sent?.await }
    }

    /// Publishes `publish` to the application's broker named `broker`
    /// ([`AppBuilder::named_broker`](crate::AppBuilder::named_broker), or
    /// `"default"` for the one given to
    /// [`AppBuilder::broker`](crate::AppBuilder::broker)), as
    /// [`publish`](Delivery::publish) does to this record's own broker:
    /// it inherits the record's tenant, correlation id and trace. A
    /// transactional subscription's outputs are written in its own
    /// broker's transaction, so there a publish to another broker is
    /// refused with [`Error::Config`]; so is a broker name the
    /// application does not have.
    pub fn publish_on(
        &self,
        broker: &str,
        publish: Publish,
    ) -> impl Future<Output = Result<PublishOutcome>> + 'static {
        let sent = self.outlet().and_then(|outlet| match outlet {
            outlet if outlet.transactional => Err(Error::Config(format!(
                "a transactional subscription writes its outputs in its own broker's \
                 transaction: it cannot publish to broker {broker:?}"
            ))),
            outlet => match outlet.others.iter().find(|(name, _)| &**name == broker) {
                Some((_, publisher)) => Ok(publisher.publish(publish.continuing(self))),
                None => Err(Error::Config(format!(
                    "no broker named {broker:?} (the application has {})",
                    std::iter::once("this record's own")
                        .chain(outlet.others.iter().map(|(n, _)| &**n))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            },
        });
        async move { sent?.await }
    }

    /// Where this delivery's publishes go: its subscription's outlet, while
    /// the subscription runs.
    fn outlet(&self) -> Result<outlet::Outlet> {
        match self.outlet.map(outlet::find) {
            None => Err(Error::Unavailable(
                "this delivery was not made by a subscription: it has no producer to publish with"
                    .into(),
            )),
            // Its subscription is gone with its application.
            Some(None) => Err(Error::Shutdown),
            Some(Some(outlet)) => Ok(outlet),
        }
    }

    /// Replies `message` to the request this record is: to the topic (and
    /// partition) its `x-reply-to` header names, with its correlation id,
    /// as [`publish`](Delivery::publish) sends. [`Error::NoReplyTo`] when
    /// the record is not a request.
    pub fn reply<R: Serialize + ?Sized>(
        &self,
        message: &R,
    ) -> impl Future<Output = Result<PublishOutcome>> + 'static {
        let sent = self
            .replying()
            .and_then(|reply| reply.message(message))
            .map(|reply| self.publish(reply));
        async move { sent?.await }
    }

    /// A publish addressed as the reply to this request (its topic,
    /// partition and correlation id), for a reply built by hand (its own
    /// headers, a raw payload); send it with [`publish`](Delivery::publish).
    pub fn replying(&self) -> Result<Publish> {
        let topic = self.reply_to().ok_or(Error::NoReplyTo)?;
        let mut reply = Publish::to(topic);
        if let Some(partition) = self
            .record
            .headers
            .get_str(header::REPLY_PARTITION)
            .and_then(|p| p.parse().ok())
        {
            reply = reply.partition(partition);
        }
        if let Some(id) = self.correlation_id() {
            reply = reply.correlation_id(id);
        }
        Ok(reply)
    }

    /// The topic a reply to this record goes to (header `x-reply-to`), when
    /// it is a request.
    pub fn reply_to(&self) -> Option<&str> {
        self.record.headers.get_str(header::REPLY_TO)
    }

    /// The decoded message.
    pub fn message(&self) -> &T {
        &self.message
    }

    /// Takes the decoded message.
    pub fn into_message(self) -> T {
        self.message
    }

    /// Topic the record was read from.
    pub fn topic(&self) -> &str {
        &self.record.topic
    }

    /// Partition the record was read from.
    pub fn partition(&self) -> i32 {
        self.record.partition
    }

    /// Offset of the record in its partition.
    pub fn offset(&self) -> i64 {
        self.record.offset
    }

    /// The record's key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.record.key.as_deref()
    }

    /// The record's key as UTF-8 text, if it has one that is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The record's headers.
    pub fn headers(&self) -> &Headers {
        &self.record.headers
    }

    /// Whether the record has no payload at all (a tombstone), as opposed
    /// to an empty one. A `Delivery<Option<T>>` gets a tombstone as `None`.
    pub fn is_tombstone(&self) -> bool {
        self.record.is_tombstone()
    }

    /// The message id stamped by the producer, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.record.headers.get_str(header::MESSAGE_ID)
    }

    /// The tenant the record belongs to (header `x-tenant`), if any.
    pub fn tenant(&self) -> Option<&str> {
        self.record.headers.get_str(header::TENANT)
    }

    /// The correlation id (header `x-correlation-id`), if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.record.headers.get_str(header::CORRELATION_ID)
    }

    /// The publisher's trace context (header `traceparent`), if valid.
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::of(&self.record)
    }

    /// The record, shared (what a test harness keeps of a call).
    #[cfg(feature = "testing")]
    pub(crate) fn record_arc(&self) -> &Arc<Record> {
        &self.record
    }

    pub(crate) fn record(&self) -> &Record {
        &self.record
    }

    /// Which attempt this is, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Broker timestamp of the record, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.record.timestamp_ms
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.record.topic)
            .field("partition", &self.record.partition)
            .field("offset", &self.record.offset)
            .field("attempt", &self.attempt)
            .field("message", &self.message)
            .finish()
    }
}

impl<T: 'static> Message for Delivery<T> {
    type Result = Outcome;
}

/// A handler's verdict on one delivery; it decides the record's fate.
#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub enum Outcome {
    /// Done: the offset may be committed once all lower offsets are done.
    Ack,
    /// Failed for now: retried under the subscription's [`RetryPolicy`](crate::RetryPolicy),
    /// then dead-lettered with this reason.
    Retry(String),
    /// Failed for good: dead-lettered at once with this reason.
    Reject(String),
}

impl Outcome {
    /// `Outcome::Retry` with the error's text.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Outcome::Retry(reason.to_string())
    }

    /// `Outcome::Reject` with the error's text.
    pub fn reject(reason: impl fmt::Display) -> Self {
        Outcome::Reject(reason.to_string())
    }
}

/// `Ok` acknowledges; `Err` asks for a retry with the error's text.
impl<E: fmt::Display> From<Result<(), E>> for Outcome {
    fn from(r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Outcome::Ack,
            Err(e) => Outcome::retry(e),
        }
    }
}

/// What a publish made from a handler's [`Delivery`] takes of it (defined
/// here, above [`Publish`], which knows nothing of deliveries).
impl Publish {
    /// Continues `delivery`'s context: its tenant and correlation id (unless
    /// set already) and a `traceparent` that is a child of its trace. What
    /// a handler publishes while it runs gets this by itself; this is for
    /// publishes made elsewhere (a task the handler spawned, another actor).
    pub fn continuing<T>(mut self, delivery: &Delivery<T>) -> Self {
        crate::observe::trace::inherit(&mut self.headers, delivery.record(), None);
        self
    }
}
