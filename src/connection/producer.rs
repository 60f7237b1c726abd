//! `ProducerConnection`: owns the broker's producer client.
//!
//! Messages: [`Produce`] (write one record; the answer, where it landed, goes
//! to the reply channel the message carries) and `Shutdown` (flush, then
//! stop). It owns the producer client, created when the actor starts, so a
//! restart creates a fresh client. `Produce` messages still in the mailbox
//! when it is restarted are dropped with their reply channels, which their
//! senders see as "connection stopped" and resend to the next incarnation.
//!
//! Order: records are enqueued in the client in the order their `Produce`
//! messages arrive. A topic seen for the first time is created (when missing)
//! before its first record, and a full client queue is waited out, both
//! without handling any other message meanwhile, so neither reorders records.
//!
//! Deliveries: one task per incarnation awaits every pending delivery report
//! and answers it, so thousands of records awaiting Kafka's acknowledgement
//! cost one task, not one each; a report already known when the record is
//! enqueued (the embedded broker) is answered at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use kafkactor_actors::{fail, Shutdown};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{BrokerBackend, Delivered, Enqueued, ProducerClient, ProducerConfig};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};

/// Where the answer to a [`Produce`] goes.
pub(crate) type Reply = oneshot::Sender<Result<Delivered>>;

/// Writes one record and answers on `reply`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Produce {
    pub(crate) record: OutgoingRecord,
    pub(crate) reply: Reply,
}

type Pending = (BoxFuture<'static, Result<Delivered>>, Reply);

pub(crate) struct ProducerConnection {
    backend: Arc<dyn BrokerBackend>,
    config: ProducerConfig,
    client: Option<Arc<dyn ProducerClient>>,
    known_topics: HashSet<Arc<str>>,
    deliveries: Option<mpsc::UnboundedSender<Pending>>,
}

impl ProducerConnection {
    pub(crate) fn new(backend: Arc<dyn BrokerBackend>, config: ProducerConfig) -> Self {
        ProducerConnection {
            backend,
            config,
            client: None,
            known_topics: HashSet::new(),
            deliveries: None,
        }
    }

    /// Hands `record` to the client now, or after room frees up in its queue.
    fn enqueue(&mut self, record: OutgoingRecord, reply: Reply, ctx: &mut Context<Self>) {
        let Some(client) = &self.client else {
            let _ = reply.send(Err(Error::Unavailable("producer client".into())));
            return;
        };
        match client.send(record) {
            Enqueued::Sent(mut delivery) => match (&mut delivery).now_or_never() {
                Some(result) => {
                    let _ = reply.send(result);
                }
                None => {
                    if let Some(deliveries) = &self.deliveries {
                        // Fails only once the task is gone, with the actor.
                        let _ = deliveries.send((delivery, reply));
                    }
                }
            },
            Enqueued::Full(record) => {
                ctx.wait(
                    tokio::time::sleep(QUEUE_FULL_WAIT)
                        .into_actor(self)
                        .map(move |(), act, ctx| act.enqueue(record, reply, ctx)),
                );
            }
        }
    }
}

/// How long to wait before retrying a record refused by a full client queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// Answers delivery reports as they arrive, until the actor is gone and
/// every report is in.
async fn answer_deliveries(mut incoming: mpsc::UnboundedReceiver<Pending>) {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some((delivery, reply)) => pending.push(async move {
                    let _ = reply.send(delivery.await);
                }),
                None => break,
            },
            Some(()) = pending.next(), if !pending.is_empty() => {}
        }
    }
    while pending.next().await.is_some() {}
}

impl Actor for ProducerConnection {
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
    }
}

impl Handler<Produce> for ProducerConnection {
    type Result = ();

    fn handle(&mut self, Produce { record, reply }: Produce, ctx: &mut Context<Self>) {
        if self.known_topics.contains(&record.topic) {
            return self.enqueue(record, reply, ctx);
        }
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
