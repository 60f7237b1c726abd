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

#[cfg(feature = "kafka")]
pub(crate) mod kafka;
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

/// A write that failed, with the record when it can be sent again.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: Error,
    /// The record, given back so it can be written again without having
    /// been copied (None once it is gone, e.g. into a dropped client).
    pub(crate) record: Option<OutgoingRecord>,
}

impl Failed {
    /// A failure giving `record` back (boxed: failures are rare, and a
    /// small `Ok` moves on every write).
    pub(crate) fn new(error: Error, record: OutgoingRecord) -> Box<Self> {
        Box::new(Failed {
            error,
            record: Some(record),
        })
    }

    /// A failure whose record is gone.
    pub(crate) fn without_record(error: Error) -> Box<Self> {
        Box::new(Failed {
            error,
            record: None,
        })
    }
}

/// Where a write landed, or why it did not.
pub(crate) type WriteResult = std::result::Result<Delivered, Box<Failed>>;

/// What [`ProducerClient::send`] did with a record.
pub(crate) enum Enqueued {
    /// Written (or refused) already: the embedded broker answers at once.
    Done(WriteResult),
    /// Enqueued; the future gives where it landed.
    Sent(BoxFuture<'static, WriteResult>),
    /// The client's queue is full: try again shortly, before anything else.
    Full(OutgoingRecord),
}

/// Why a transaction was not committed: nothing of it was written.
#[derive(Debug)]
pub(crate) struct TransactionFailed {
    pub(crate) error: Error,
    /// The records the broker refused for good, by their index among the
    /// transaction's records, with why: without them, the rest may commit.
    /// Empty when the transaction failed as a whole (it may be tried again
    /// as it is).
    pub(crate) refused: Vec<(usize, Error)>,
    /// Whether it may have committed all the same (the broker went away
    /// during the commit, and whether it did could not be found out):
    /// writing its records again could write them twice, dropping them
    /// could lose them. Only the committed offsets, read afresh, tell.
    pub(crate) undetermined: bool,
}

impl From<Error> for TransactionFailed {
    fn from(error: Error) -> Self {
        TransactionFailed {
            error,
            refused: Vec::new(),
            undetermined: false,
        }
    }
}

impl fmt::Display for TransactionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.refused.is_empty() {
            write!(f, " ({} records refused)", self.refused.len())?;
        }
        Ok(())
    }
}

/// The partition counts of topics, as far as they are known: filled by
/// the consumer connection of a transactional subscription for the topics
/// its handlers publish to, read where a publish joins a transaction (a
/// partition the topic does not have is refused there, when the count is
/// known). Shared by clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionCounts(Arc<std::sync::RwLock<rustc_hash::FxHashMap<Arc<str>, i32>>>);

impl PartitionCounts {
    /// The partitions of `topic`, if known.
    pub(crate) fn get(&self, topic: &str) -> Option<i32> {
        let counts = self.0.read().unwrap_or_else(|e| e.into_inner());
        counts.get(topic).copied()
    }

    /// Notes that `topic` has `partitions` partitions.
    pub(crate) fn set(&self, topic: Arc<str>, partitions: i32) {
        let mut counts = self.0.write().unwrap_or_else(|e| e.into_inner());
        counts.insert(topic, partitions);
    }
}

/// What a consumer group member is.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) reset: OffsetReset,
    /// How long a revoked partition may stay with this member while its
    /// in-flight records finish (Kafka holds the rebalance meanwhile).
    pub(crate) revoke_timeout: std::time::Duration,
    /// How many records a client may hold beyond what it handed out before
    /// it stops fetching (the subscription's in-flight bound).
    pub(crate) prefetch: usize,
    /// The longest a fetch waits at the broker for data, when not the
    /// client's default (the Republisher wants held partitions back quickly).
    pub(crate) fetch_wait: Option<std::time::Duration>,
}

/// Where a group stands in partition `p`: the offset it committed there
/// (`committed`, by partition, as [`BrokerBackend::committed`] gives it),
/// or the oldest offset the partition keeps (`low`) when it committed
/// nothing there or committed below what is kept.
pub(crate) fn position(committed: &[Option<i64>], p: usize, low: i64) -> i64 {
    committed.get(p).copied().flatten().unwrap_or(low).max(low)
}

/// The records a group has not committed, over the partitions whose low
/// and high watermarks are `watermarks` and whose commits are `committed`.
pub(crate) fn behind(watermarks: &[(i64, i64)], committed: &[Option<i64>]) -> i64 {
    watermarks
        .iter()
        .enumerate()
        .map(|(p, &(low, high))| (high - position(committed, p, low)).max(0))
        .sum()
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

/// What a producer client is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerConfig {
    /// How long the client may keep trying to deliver a record before it
    /// reports the record failed (Kafka's `message.timeout.ms`).
    pub(crate) delivery_timeout: std::time::Duration,
    /// How long the client may wait to fill a batch before it sends
    /// (Kafka's `linger.ms`; None: the client's default, or the user's).
    pub(crate) linger: Option<std::time::Duration>,
}

/// Clients, topic administration and inspection for one broker.
pub(crate) trait BrokerBackend: Send + Sync + fmt::Debug {
    fn producer(&self, config: ProducerConfig) -> Result<Arc<dyn ProducerClient>>;
    fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn ConsumerClient>>;
    /// A reader of `topic`'s `partition` from offset `from`, in no group
    /// (assigned: nothing to rebalance, nothing committed).
    fn reader(&self, topic: &str, partition: i32, from: i64) -> Result<Arc<dyn ReaderClient>>;
    /// Creates `topic` when missing, with `partitions` (or the broker default).
    fn ensure_topic(&self, topic: &str, partitions: Option<i32>) -> BoxFuture<'static, Result<()>>;
    /// Low and high watermark of every partition of `topic`, by partition.
    fn watermarks(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(i64, i64)>>>;
    /// What `group` committed for every partition of `topic`, by partition.
    fn committed(&self, group: &str, topic: &str) -> BoxFuture<'static, Result<Vec<Option<i64>>>>;
    /// Every record of `topic` present now, partition by partition in offset order.
    fn read_all(&self, topic: &str) -> BoxFuture<'static, Result<Vec<Record>>>;
    /// Up to `max` records of `topic`'s `partition` present now, from
    /// offset `from` (or the oldest one kept, when later), in offset order.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>>>;
    /// Whether the broker answers a metadata request within `timeout`.
    fn probe(&self, timeout: std::time::Duration) -> BoxFuture<'static, Result<()>>;
    /// How many partitions `topic` has (None: it does not exist).
    fn partitions(&self, topic: &str) -> BoxFuture<'static, Result<Option<i32>>>;
    /// The broker as errors and logs name it (`Apache Kafka at host:port`).
    fn describe(&self) -> String;
}

/// Writes records.
pub(crate) trait ProducerClient: Send + Sync {
    /// Enqueues one record now (so records keep the order of the calls) and
    /// returns a future resolving once the broker has it durably (or the
    /// answer itself, when it is known at once); or gives the record back
    /// when the client's queue is full. A failed write gives its record back
    /// where it can.
    fn send(&self, record: OutgoingRecord) -> Enqueued;
    /// Waits until everything sent is acknowledged.
    fn flush(&self) -> BoxFuture<'static, Result<()>>;
}

/// Reads one partition, assigned, in no group: from where it was opened,
/// on and on.
pub(crate) trait ReaderClient: Send + Sync {
    /// Waits up to `timeout` for records after the last ones returned; at
    /// most `max`, in offset order (none when the time passed first).
    fn poll(
        &self,
        max: usize,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<Arc<Record>>>>;
}

/// A member of a consumer group. All methods take `&self`: the connection
/// actor polls while it commits and pauses.
pub(crate) trait ConsumerClient: Send + Sync {
    /// Waits up to `timeout` for events; at most `max_records` records.
    /// One poll at a time. Not cancel-safe: an answer already given when the
    /// future is dropped is lost with the events in it, so the connection
    /// never drops a poll it still needs (it uses [`wake`](Self::wake)).
    fn poll(
        &self,
        max_records: usize,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>>;
    /// Makes the poll under way answer now, with whatever it has (nothing,
    /// or events that arrived meanwhile). A wake with no poll under way may
    /// end the next one early.
    fn wake(&self);
    /// How long a poll may wait when nothing arrives. The embedded broker
    /// wakes pollers itself, so it waits long; Kafka's polling thread stops
    /// polling between polls, so a stalled actor thread shows up as a
    /// `max.poll.interval.ms` failure soon after.
    fn idle_poll_timeout(&self) -> std::time::Duration;
    /// Stops fetching these partitions (records already returned are unaffected).
    fn pause(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Fetches these partitions again.
    fn resume(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Stops (`held`) or restarts fetching these partitions for a while,
    /// whatever the client's own flow control does meanwhile; records
    /// already fetched are still returned, in order.
    fn hold(&self, partitions: &[TopicPartition], held: bool) -> Result<()> {
        if held {
            self.pause(partitions)
        } else {
            self.resume(partitions)
        }
    }
    /// Commits next-offset-to-read positions of owned partitions.
    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>>;
    /// Writes `records` and commits `offsets` in one transaction: a
    /// `read_committed` consumer sees all of it or, when this fails, none.
    /// Records the broker refuses for good (a partition the topic does not
    /// have, a record too large) are named in the failure.
    fn commit_transaction(
        &self,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, std::result::Result<(), TransactionFailed>>;
    /// Gives revoked partitions back to the group once their work is committed.
    fn release(&self, partitions: &[TopicPartition]) -> Result<()>;
    /// Leaves the group, releasing every partition.
    fn close(&self);
}

/// The broker an application talks to: the embedded in-memory broker, or
/// Apache Kafka (with the `kafka` feature, on by default).
///
/// Cloning shares the broker: two applications given clones of one
/// `Broker::memory()` see the same topics, groups and offsets.
#[derive(Clone, Debug)]
pub struct Broker {
    kind: Kind,
    /// Settings [`Broker::set`] refused, with why: starting an application
    /// on this broker fails with them.
    refused: Vec<String>,
}

/// Why kafkactor refuses `key = value` through [`Broker::set`]: settings
/// its delivery guarantees rest on.
fn refusal(key: &str, value: &str) -> Option<&'static str> {
    let value = value.trim().to_ascii_lowercase();
    match key {
        "enable.auto.commit" if value != "false" => Some(
            "kafkactor commits an offset only once every record below it is finished; \
             automatic commits would commit records still being handled, lost on a crash",
        ),
        "enable.auto.offset.store" if value != "false" => Some(
            "kafkactor stores an offset only once every record below it is finished; \
             automatic stores would commit records still being handled, lost on a crash",
        ),
        "group.id" => Some(
            "each subscription is its own consumer group: name it with Subscription::group \
             (and the Republisher's with Delays::group)",
        ),
        "enable.idempotence" if value != "true" => Some(
            "the producer is idempotent so that a resent record is written once and \
             records of a partition keep their order",
        ),
        "acks" if value != "all" && value != "-1" => Some(
            "a record counts as written only once every in-sync replica has it (acks=all); \
             with fewer, an acknowledged record can be lost with a broker",
        ),
        _ => None,
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Memory(Arc<MemoryBroker>),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConfig),
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

    /// Whether this is the embedded broker.
    #[cfg(feature = "cli")]
    pub(crate) fn is_memory(&self) -> bool {
        matches!(self.kind, Kind::Memory(_))
    }

    fn from_memory(memory: Arc<MemoryBroker>) -> Self {
        Broker {
            kind: Kind::Memory(memory),
            refused: Vec::new(),
        }
    }

    /// Apache Kafka at `bootstrap_servers` (`"host:port[,host:port...]"`).
    ///
    /// The producer is idempotent (`enable.idempotence=true`, `acks=all`) by
    /// default; every librdkafka setting can be passed with [`Broker::set`].
    /// Topics kafkactor needs (subscribed, dead-letter, published to) are
    /// created when missing with [`Broker::topic_partitions`] partitions,
    /// unless [`Broker::create_topics`] is turned off.
    #[cfg(feature = "kafka")]
    pub fn kafka(bootstrap_servers: impl Into<String>) -> Self {
        Broker {
            kind: Kind::Kafka(kafka::KafkaConfig::new(bootstrap_servers.into())),
            refused: Vec::new(),
        }
    }

    /// Passes a librdkafka setting (`"linger.ms"`, `"security.protocol"`,
    /// ...) to every Kafka client of the application. The embedded broker
    /// has no such settings and ignores it.
    ///
    /// Settings the delivery guarantees rest on are refused, on either
    /// broker: `enable.auto.commit` and `enable.auto.offset.store` other
    /// than `false`, `group.id`, `enable.idempotence` other than `true`,
    /// `acks` other than `all`. Starting an application on a broker with a
    /// refused setting fails with [`Error::Config`] naming the key and why.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        if let Some(why) = refusal(&key, &value) {
            self.refused
                .push(format!("Broker::set({key:?}, {value:?}) is refused: {why}"));
            return self;
        }
        match self.kind {
            #[cfg(feature = "kafka")]
            Kind::Kafka(config) => Broker {
                kind: Kind::Kafka(config.set(key, value)),
                refused: self.refused,
            },
            Kind::Memory(_) => self,
        }
    }

    /// Partitions of the topics kafkactor creates on Kafka (default 3). The
    /// embedded broker takes its count from [`Broker::memory_with_partitions`].
    ///
    /// Fewer than one is taken as one.
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub fn topic_partitions(self, partitions: i32) -> Self {
        match self.kind {
            #[cfg(feature = "kafka")]
            Kind::Kafka(config) => Broker {
                kind: Kind::Kafka(config.topic_partitions(partitions)),
                refused: self.refused,
            },
            Kind::Memory(_) => self,
        }
    }

    /// Replicas of every partition of the topics kafkactor creates on Kafka.
    /// By default (and for fewer than one) the broker's own
    /// `default.replication.factor`. The embedded broker keeps one copy and
    /// ignores it.
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub fn topic_replication(self, replicas: i32) -> Self {
        match self.kind {
            #[cfg(feature = "kafka")]
            Kind::Kafka(config) => Broker {
                kind: Kind::Kafka(config.topic_replication(replicas)),
                refused: self.refused,
            },
            Kind::Memory(_) => self,
        }
    }

    /// Whether kafkactor creates missing topics on Kafka (default true). When
    /// off, starting an application whose subscriptions or dead-letter topics
    /// do not exist fails with a clear error.
    #[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
    pub fn create_topics(self, create: bool) -> Self {
        match self.kind {
            #[cfg(feature = "kafka")]
            Kind::Kafka(config) => Broker {
                kind: Kind::Kafka(config.create_topics(create)),
                refused: self.refused,
            },
            Kind::Memory(_) => self,
        }
    }

    /// The embedded broker behind this handle, for inspection (None on Kafka).
    pub fn as_memory(&self) -> Option<&MemoryBroker> {
        match &self.kind {
            Kind::Memory(m) => Some(m),
            #[cfg(feature = "kafka")]
            Kind::Kafka(_) => None,
        }
    }

    /// The clients of this broker (for Kafka: connects the admin client).
    pub(crate) fn backend(&self) -> Result<Arc<dyn BrokerBackend>> {
        if !self.refused.is_empty() {
            return Err(Error::Config(self.refused.join("; ")));
        }
        match &self.kind {
            Kind::Memory(m) => Ok(Arc::new(m.clone())),
            #[cfg(feature = "kafka")]
            Kind::Kafka(config) => Ok(config.backend()?),
        }
    }

    /// Creates `topic` with `partitions` partitions if it does not exist yet.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        crate::error::check_topic(topic)?;
        if partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        self.backend()?.ensure_topic(topic, Some(partitions)).await
    }

    /// Records of `topic` that `group` has not committed yet, over all
    /// partitions (a partition without a commit counts from its first record).
    pub async fn lag(&self, group: &str, topic: &str) -> Result<i64> {
        let backend = self.backend()?;
        let watermarks = backend.watermarks(topic).await?;
        let committed = backend.committed(group, topic).await?;
        Ok(behind(&watermarks, &committed))
    }

    /// The offsets `group` committed for each partition of `topic`, by
    /// partition (None where it committed nothing).
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> Result<Vec<Option<i64>>> {
        self.backend()?.committed(group, topic).await
    }

    /// Every record of `topic` present now, partition by partition in offset
    /// order (empty if the topic does not exist). For tests and tools; reads
    /// the whole topic into memory.
    pub async fn read_topic(&self, topic: &str) -> Result<Vec<Record>> {
        self.backend()?.read_all(topic).await
    }
}
