//! The `Producer` actor: [`Publish`] in, [`PublishOutcome`] out.
//!
//! Role: stamps the well-known headers (message id, timestamp), checks the
//! record against the maximum size, and hands it to the ProducerConnection.
//! Messages: [`Publish`], `Shutdown`. Owns nothing but its settings; a
//! restart loses no state. A publish in flight during a restart of the
//! connection answers `Error::Unavailable`, which says a retry can help.

use std::sync::Arc;

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::connection::producer::{Produce, ProducerConnection};
use crate::envelope::{header, now_ms, OutgoingRecord};
use crate::error::{Error, Result};
use crate::publish::{Publish, PublishOutcome};

/// Publishes records; get its address from [`App::producer`](crate::App::producer).
pub struct Producer {
    connection: ChildRef<ProducerConnection>,
    max_message_bytes: usize,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(connection: ChildRef<ProducerConnection>, max_message_bytes: usize) -> Self {
        Producer {
            connection,
            max_message_bytes,
        }
    }
}

/// Turns a `Publish` into the record to write, stamping id and timestamp.
pub(crate) fn prepare(publish: Publish, max_bytes: usize) -> Result<OutgoingRecord> {
    publish.validate()?;
    let Publish {
        topic,
        partition,
        key,
        mut headers,
        payload,
        ..
    } = publish;
    let timestamp_ms = now_ms();
    if !headers.contains(header::MESSAGE_ID) {
        headers.insert(header::MESSAGE_ID, uuid::Uuid::now_v7().to_string());
    }
    headers.insert(header::TIMESTAMP, timestamp_ms.to_string());
    let record = OutgoingRecord {
        topic: Arc::from(topic),
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
    Ok(record)
}

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<Publish> for Producer {
    type Result = ResponseFuture<Result<PublishOutcome>>;

    fn handle(&mut self, publish: Publish, _: &mut Context<Self>) -> Self::Result {
        let record = match prepare(publish, self.max_message_bytes) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let Some(connection) = self.connection.get() else {
            return Box::pin(async { Err(Error::Unavailable("producer connection".into())) });
        };
        Box::pin(async move {
            let delivered = connection.send(Produce(record)).await??;
            Ok(PublishOutcome::Direct {
                partition: delivered.partition,
                offset: delivered.offset,
            })
        })
    }
}

impl Handler<Shutdown> for Producer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
