#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
//! kafkactor

mod broker;
mod codec;
mod consumer;
mod envelope;
mod error;
mod partitioner;
mod retry;

pub use broker::{Broker, MemoryBroker, OffsetReset};
pub use codec::{type_name_of, ContentType};
pub use envelope::{header, Headers, Record, TopicPartition};
pub use error::{Error, Result};
pub use partitioner::{murmur2, partition_for_key};
pub use retry::RetryPolicy;
