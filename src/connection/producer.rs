//! `ProducerConnection`: owns the broker's producer client.
//!
//! Messages: [`Produce`] (write one record, answer where it landed) and
//! `Shutdown` (flush, then stop). It owns the producer client, created when the
//! actor starts, so a restart creates a fresh client. Requests in flight when it
//! is restarted fail with `Error::Unavailable`; their senders decide to retry.
//!
//! Order: records are enqueued in the client in the order their `Produce`
//! messages arrive. A topic seen for the first time is created (when missing)
//! before its first record, and a full client queue is waited out, both
//! without handling any other message meanwhile, so neither reorders records.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use kafkactor_actors::{fail, Shutdown};
use tokio::sync::oneshot;

use crate::broker::{BrokerBackend, Delivered, Enqueued, ProducerClient};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};

/// Writes one record.
#[derive(Debug, Message)]
#[rtype(result = "Result<Delivered>")]
pub(crate) struct Produce(pub(crate) OutgoingRecord);

pub(crate) struct ProducerConnection {
    backend: Arc<dyn BrokerBackend>,
    client: Option<Arc<dyn ProducerClient>>,
    known_topics: HashSet<Arc<str>>,
}

type Reply = oneshot::Sender<Result<Delivered>>;

impl ProducerConnection {
    pub(crate) fn new(backend: Arc<dyn BrokerBackend>) -> Self {
        ProducerConnection {
            backend,
            client: None,
            known_topics: HashSet::new(),
        }
    }

    /// Hands `record` to the client now, or after room frees up in its queue.
    fn enqueue(&mut self, record: OutgoingRecord, reply: Reply, ctx: &mut Context<Self>) {
        let Some(client) = &self.client else {
            let _ = reply.send(Err(Error::Unavailable("producer client".into())));
            return;
        };
        match client.send(record) {
            Enqueued::Sent(delivery) => {
                // The delivery report arrives on its own task, so a slow broker
                // never holds the mailbox.
                actix_rt::spawn(async move {
                    let _ = reply.send(delivery.await);
                });
            }
            Enqueued::Full(record) => self.retry_when_room(record, reply, ctx),
        }
    }

    /// Waits (handling nothing else) and enqueues `record` again.
    fn retry_when_room(&mut self, record: OutgoingRecord, reply: Reply, ctx: &mut Context<Self>) {
        ctx.wait(
            tokio::time::sleep(QUEUE_FULL_WAIT)
                .into_actor(self)
                .map(move |(), act, ctx| act.enqueue(record, reply, ctx)),
        );
    }
}

/// How long to wait before retrying a record refused by a full client queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

impl Actor for ProducerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.backend.producer() {
            Ok(client) => self.client = Some(client),
            Err(e) => fail(ctx, format!("cannot create producer: {e}")),
        }
    }
}

impl Handler<Produce> for ProducerConnection {
    type Result = Response<Result<Delivered>>;

    fn handle(&mut self, Produce(record): Produce, ctx: &mut Context<Self>) -> Self::Result {
        // Fast path: a known topic and a client that takes the record now. A
        // delivery that is already known (the embedded broker) is answered
        // at once, without spawning anything.
        if let (true, Some(client)) = (self.known_topics.contains(&record.topic), &self.client) {
            return match client.send(record) {
                Enqueued::Sent(mut delivery) => match (&mut delivery).now_or_never() {
                    Some(result) => Response::reply(result),
                    None => Response::fut(delivery),
                },
                Enqueued::Full(record) => {
                    let (reply, answer) = oneshot::channel();
                    self.retry_when_room(record, reply, ctx);
                    Response::fut(answered(answer))
                }
            };
        }
        let (reply, answer) = oneshot::channel();
        if self.known_topics.contains(&record.topic) {
            self.enqueue(record, reply, ctx);
        } else {
            let topic = record.topic.clone();
            ctx.wait(
                self.backend
                    .ensure_topic(&topic, None)
                    .into_actor(self)
                    .map(move |result, act, ctx| match result {
                        Ok(()) => {
                            act.known_topics.insert(topic);
                            act.enqueue(record, reply, ctx);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }),
            );
        }
        Response::fut(answered(answer))
    }
}

/// The answer sent on `answer`, or `Unavailable` if the connection stopped first.
async fn answered(answer: oneshot::Receiver<Result<Delivered>>) -> Result<Delivered> {
    answer
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable("producer connection stopped".into())))
}

impl Handler<Shutdown> for ProducerConnection {
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
