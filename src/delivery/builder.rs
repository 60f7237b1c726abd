//! [`DeliveryBuilder`]: a [`Delivery`] made by hand, to call a handler in a
//! unit test without an application.

use std::sync::Arc;

use bytes::Bytes;

use super::Delivery;
use crate::envelope::{header, Headers, Record};

/// Builds a [`Delivery`] by hand ([`Delivery::builder`]): topic `"test"`,
/// partition 0, offset 0, attempt 1, timestamp 0, no key and no header
/// unless set. A handler given it runs as it would in a subscription,
/// except that its publishes and replies have nowhere to go: they fail
/// with [`Error::Unavailable`](crate::Error::Unavailable).
///
/// ```
/// # use actix::prelude::*;
/// # use kafkactor::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Order { cents: u64 }
///
/// struct Billing;
/// impl Actor for Billing { type Context = Context<Self>; }
/// impl Handler<Delivery<Order>> for Billing {
///     type Result = Outcome;
///     fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
///         if d.message().cents == 0 { Outcome::reject("an order of nothing") } else { Outcome::Ack }
///     }
/// }
///
/// # #[actix::main] async fn main() {
/// let billing = Billing.start();
/// let empty = Delivery::builder(Order { cents: 0 }).key("o-1").attempt(2).build();
/// assert_eq!(billing.send(empty).await.unwrap(), Outcome::reject("an order of nothing"));
/// # }
/// ```
#[derive(Debug)]
pub struct DeliveryBuilder<T> {
    message: T,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    headers: Headers,
    attempt: u32,
    timestamp_ms: i64,
}

impl<T> Delivery<T> {
    /// A delivery of `message` made by hand (see [`DeliveryBuilder`]).
    pub fn builder(message: T) -> DeliveryBuilder<T> {
        DeliveryBuilder {
            message,
            topic: Arc::from("test"),
            partition: 0,
            offset: 0,
            key: None,
            headers: Headers::new(),
            attempt: 1,
            timestamp_ms: 0,
        }
    }
}

impl<T> DeliveryBuilder<T> {
    /// The topic it was read from.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topic = Arc::from(topic);
        self
    }

    /// The partition it was read from.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Its offset in the partition.
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// Its key.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// A header (replacing one of the same name).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .insert(name, Bytes::copy_from_slice(value.as_ref()));
        self
    }

    /// Its correlation id (header `x-correlation-id`).
    pub fn correlation_id(self, id: &str) -> Self {
        self.header(header::CORRELATION_ID, id)
    }

    /// Its tenant (header `x-tenant`).
    pub fn tenant(self, tenant: &str) -> Self {
        self.header(header::TENANT, tenant)
    }

    /// Which attempt this is, from 1.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// Its broker timestamp, milliseconds since the Unix epoch.
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// The delivery.
    pub fn build(self) -> Delivery<T> {
        let record = Record::new(
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self.headers,
            Some(Bytes::new()),
            self.timestamp_ms,
        );
        Delivery::new(self.message, Arc::new(record), self.attempt)
    }
}
