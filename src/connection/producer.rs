//! `ProducerConnection`: owns the broker's producer client.
//!
//! Messages: [`Produce`] (write one record, answer where it landed) and
//! `Shutdown` (flush, then stop). It owns the producer client, created when the
//! actor starts, so a restart creates a fresh client. Requests in flight when it
//! is restarted fail with `Error::Unavailable`; their senders decide to retry.

use std::sync::Arc;

use actix::prelude::*;
use kafkactor_actors::{fail, Shutdown};

use crate::broker::{BrokerBackend, Delivered, ProducerClient};
use crate::envelope::OutgoingRecord;
use crate::error::Result;

/// Writes one record.
#[derive(Debug, Message)]
#[rtype(result = "Result<Delivered>")]
pub(crate) struct Produce(pub(crate) OutgoingRecord);

pub(crate) struct ProducerConnection {
    backend: Arc<dyn BrokerBackend>,
    client: Option<Arc<dyn ProducerClient>>,
}

impl ProducerConnection {
    pub(crate) fn new(backend: Arc<dyn BrokerBackend>) -> Self {
        ProducerConnection {
            backend,
            client: None,
        }
    }
}

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
    type Result = ResponseFuture<Result<Delivered>>;

    fn handle(&mut self, msg: Produce, _: &mut Context<Self>) -> Self::Result {
        match &self.client {
            Some(client) => client.send(msg.0),
            None => Box::pin(async { Err(crate::Error::Unavailable("producer client".into())) }),
        }
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
