//! The broker boundary. Everything kafkactor needs from a broker is in three
//! traits: [`BrokerBackend`] (clients and topic administration),
//! [`ProducerClient`] and [`ConsumerClient`]. The embedded broker implements
//! them in `memory/`; the Kafka implementation (rdkafka) fills the same traits,
//! and only the connection actors call them.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::error::{Error, Result};

pub(crate) mod memory;

pub use memory::MemoryBroker;

/// Where a consumer group starts when it has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the first record still in the log.
    #[default]
    Earliest,
    /// From the end: only records produced after the assignment.
    Latest,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What a consumer group member is.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) reset: OffsetReset,
}

/// What one poll returns, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConsumerEvent {
    /// These partitions are taken away: finish their in-flight work, commit,
    /// then call [`ConsumerClient::release`].
    Revoked(Vec<TopicPartition>),
    /// These partitions are now ours, starting at their committed offsets.
    Assigned(Vec<TopicPartition>),
    /// Records, in offset order within each partition.
    Records(Vec<Arc<Record>>),
}

/// Clients and topic administration for one broker.
pub(crate) trait BrokerBackend: Send + Sync + fmt::Debug {
    fn producer(&self) -> Result<Arc<dyn ProducerClient>>;
    fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn ConsumerClient>>;
    /// Creates `topic` when missing, with `partitions` (or the broker default).
    fn ensure_topic(&self, topic: &str, partitions: Option<i32>) -> BoxFuture<'static, Result<()>>;
}

/// Writes records.
pub(crate) trait ProducerClient: Send + Sync {
    /// Sends one record; resolves once the broker has it durably.
    fn send(&self, record: OutgoingRecord) -> BoxFuture<'static, Result<Delivered>>;
    /// Waits until everything sent is acknowledged.
    fn flush(&self) -> BoxFuture<'static, Result<()>>;
}

/// A member of a consumer group. All methods take `&self`: the connection
/// actor polls while it commits and pauses.
pub(crate) trait ConsumerClient: Send + Sync {
    /// Waits up to `timeout` for events; at most `max_records` records.
    /// Cancel-safe: dropping the future loses nothing.
    fn poll(
        &self,
        max_records: usize,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>>;
    /// Stops fetching these partitions (records already returned are unaffected).
    fn pause(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Fetches these partitions again.
    fn resume(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Commits next-offset-to-read positions of owned partitions.
    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>>;
    /// Gives revoked partitions back to the group once their work is committed.
    fn release(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Leaves the group, releasing every partition.
    fn close(&self);
}

/// The broker an application talks to: the embedded in-memory broker, or
/// (with the `kafka` feature, in a later release) Apache Kafka.
///
/// Cloning shares the broker: two applications given clones of one
/// `Broker::memory()` see the same topics, groups and offsets.
#[derive(Clone, Debug)]
pub struct Broker {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    memory: Option<Arc<MemoryBroker>>,
}

impl Broker {
    /// A new embedded in-memory broker with Kafka's semantics; topics are
    /// created on first use with 3 partitions.
    pub fn memory() -> Self {
        Self::from_memory(Arc::new(MemoryBroker::new(3)))
    }

    /// An embedded broker whose auto-created topics get `partitions` partitions.
    pub fn memory_with_partitions(partitions: i32) -> Result<Self> {
        if partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        Ok(Self::from_memory(Arc::new(MemoryBroker::new(partitions))))
    }

    fn from_memory(memory: Arc<MemoryBroker>) -> Self {
        Broker {
            backend: Arc::new(memory.clone()),
            memory: Some(memory),
        }
    }

    /// The embedded broker behind this handle, for inspection (None on Kafka).
    pub fn as_memory(&self) -> Option<&MemoryBroker> {
        self.memory.as_deref()
    }

    /// Creates `topic` with `partitions` partitions if it does not exist yet.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        crate::error::check_topic(topic)?;
        if partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        self.backend.ensure_topic(topic, Some(partitions)).await
    }
}
