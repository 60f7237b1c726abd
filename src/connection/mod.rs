//! Connection actors: the only actors that call the broker.

pub(crate) mod consumer;
pub(crate) mod producer;

pub(crate) use consumer::{Completed, ConsumerConnection, Deliver};
pub(crate) use producer::{Produce, ProducerConnection};
