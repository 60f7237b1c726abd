//! Connection actors: the only actors that call the broker.

pub(crate) mod consumer;
pub(crate) mod producer;
pub(crate) mod protocol;
pub(crate) mod reader;
pub(crate) mod watermark;
