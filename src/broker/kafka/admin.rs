//! Topic administration and inspection on Kafka: creating missing topics,
//! watermarks, a group's committed offsets, reading a whole topic.
//!
//! librdkafka's calls here block, so each runs on tokio's blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{to_record, Names};
use super::{broker_error, code_error, KafkaConfig};
use crate::envelope::Record;
use crate::error::{Error, Result};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Admin and metadata clients, shared by the backend and its producers.
#[derive(Clone)]
pub(crate) struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    metadata: BaseConsumer,
    /// One offsets client per group asked about (committed offsets are read
    /// with the group's id).
    offsets: std::sync::Mutex<std::collections::HashMap<String, Arc<BaseConsumer>>>,
}

impl Admin {
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        let admin = config
            .client_config(&[])
            .create()
            .map_err(|e| Error::Config(format!("Kafka admin client: {e}")))?;
        let metadata = config
            .client_config(&[("allow.auto.create.topics", "false")])
            .create()
            .map_err(|e| Error::Config(format!("Kafka metadata client: {e}")))?;
        Ok(Admin {
            inner: Arc::new(Inner {
                config: config.clone(),
                admin,
                metadata,
                offsets: Default::default(),
            }),
        })
    }

    /// Runs blocking work on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        let inner = self.inner.clone();
        async move {
            tokio::task::spawn_blocking(move || work(&inner))
                .await
                .map_err(|e| Error::client("admin task", e, false))?
        }
        .boxed()
    }

    /// Creates `topic` unless it exists; fails clearly when it is missing and
    /// topic creation is off.
    pub(crate) fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> BoxFuture<'static, Result<()>> {
        let topic = topic.to_string();
        let admin = self.clone();
        async move {
            if admin.partitions(&topic).await?.is_some() {
                return Ok(());
            }
            if !admin.inner.config.creates_topics() {
                return Err(Error::Config(format!(
                    "topic {topic:?} does not exist and topic creation is off"
                )));
            }
            admin.create(&topic, partitions).await?;
            admin.wait_until_listed(&topic).await
        }
        .boxed()
    }

    /// Creates `topic` with `partitions` (one created meanwhile by someone
    /// else will do).
    async fn create(&self, topic: &str, partitions: i32) -> Result<()> {
        let replication = TopicReplication::Fixed(self.inner.config.replication());
        let new = NewTopic::new(topic, partitions, replication);
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = self
            .inner
            .admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| broker_error(&format!("create topic {topic}"), &e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(code_error(&format!("create topic {name}"), code)),
            }
        }
        Ok(())
    }

    /// Waits until the new `topic` shows in metadata, so clients use it at once.
    async fn wait_until_listed(&self, topic: &str) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.partitions(topic).await?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::client(
                    format!("create topic {topic}"),
                    "it was created but does not show in metadata",
                    true,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many partitions `topic` has (None: it does not exist).
    pub(crate) fn partitions(&self, topic: &str) -> BoxFuture<'static, Result<Option<i32>>> {
        let topic = topic.to_string();
        self.blocking(move |inner| inner.partition_count(&topic))
    }

    /// A metadata request for no topic: whether a broker answers.
    pub(crate) fn probe(&self, timeout: Duration) -> BoxFuture<'static, Result<()>> {
        self.blocking(move |inner| {
            inner
                .metadata
                // One topic, not all of them (a metadata request for every
                // topic of a large cluster is large); it need not exist,
                // and this client never creates it.
                .fetch_metadata(Some("__kafkactor_probe"), timeout)
                .map(drop)
                .map_err(|e| broker_error("metadata request", &e))
        })
    }

    pub(crate) fn watermarks(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(i64, i64)>>> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let Some(n) = inner.partition_count(&topic)? else {
                return Ok(Vec::new());
            };
            (0..n)
                .map(|p| {
                    inner
                        .metadata
                        .fetch_watermarks(&topic, p, TIMEOUT)
                        .map_err(|e| broker_error(&format!("watermarks of {topic}[{p}]"), &e))
                })
                .collect()
        })
    }

    pub(crate) fn committed(
        &self,
        group: &str,
        topic: &str,
    ) -> BoxFuture<'static, Result<Vec<Option<i64>>>> {
        let (group, topic) = (group.to_string(), topic.to_string());
        self.blocking(move |inner| {
            let Some(n) = inner.partition_count(&topic)? else {
                return Ok(Vec::new());
            };
            let consumer = inner.offsets_client(&group)?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..n {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, TIMEOUT)
                .map_err(|e| broker_error(&format!("committed offsets of {group}"), &e))?;
            Ok((0..n)
                .map(
                    |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Some(o),
                        _ => None,
                    },
                )
                .collect())
        })
    }

    pub(crate) fn read_all(&self, topic: &str) -> BoxFuture<'static, Result<Vec<Record>>> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let Some(n) = inner.partition_count(&topic)? else {
                return Ok(Vec::new());
            };
            let mut reader = TopicReader::new(inner, &topic)?;
            for p in 0..n {
                reader.read_partition(p)?;
            }
            Ok(reader.out)
        })
    }

    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>>> {
        let topic = topic.to_string();
        self.blocking(move |inner| {
            let mut reader = TopicReader::new(inner, &topic)?;
            reader.read_partition_from(partition, from, max)?;
            Ok(reader.out)
        })
    }
}

/// A whole topic being read (on the blocking pool): a client of its own,
/// and the records read so far.
struct TopicReader<'a> {
    inner: &'a Inner,
    topic: &'a str,
    consumer: BaseConsumer,
    names: Names,
    out: Vec<Record>,
}

impl<'a> TopicReader<'a> {
    /// A reader of `topic`, with a client that never commits.
    fn new(inner: &'a Inner, topic: &'a str) -> Result<Self> {
        let consumer: BaseConsumer = inner
            .config
            .client_config(&[
                ("group.id", "kafkactor-inspect"),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .map_err(|e| broker_error("reader client", &e))?;
        Ok(TopicReader {
            inner,
            topic,
            consumer,
            names: Names::default(),
            out: Vec::new(),
        })
    }

    /// Reads partition `p`, from its low watermark to its high one.
    fn read_partition(&mut self, p: i32) -> Result<()> {
        self.read_partition_from(p, 0, usize::MAX)
    }

    /// Reads up to `max` records of partition `p` from offset `from` (or
    /// its low watermark, when later), to its high watermark at most.
    fn read_partition_from(&mut self, p: i32, from: i64, max: usize) -> Result<()> {
        let (low, high) = self
            .inner
            .metadata
            .fetch_watermarks(self.topic, p, TIMEOUT)
            .map_err(|e| broker_error("watermarks", &e))?;
        let low = low.max(from);
        let high = high.min(low.saturating_add(i64::try_from(max).unwrap_or(i64::MAX)));
        if high <= low {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, p, Offset::Offset(low))
            .map_err(|e| broker_error("assign", &e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| broker_error("assign", &e))?;
        self.read_range(p, low, high)
    }

    /// Polls partition `p`, assigned at `low`, until past `high`: the
    /// records to `out`; an error past a deadline.
    fn read_range(&mut self, p: i32, low: i64, high: i64) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT * 3;
        let mut next = low;
        while next < high {
            if Instant::now() > deadline {
                return Err(Error::client(
                    format!("read {}[{p}]", self.topic),
                    format!("timed out at offset {next} of {high}"),
                    true,
                ));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    self.out.push(to_record(&m, &mut self.names));
                }
                Some(Err(e)) => return Err(broker_error("read", &e)),
                // Transaction markers take offsets and are never
                // returned: the position moves past them.
                None => next = next.max(self.position(p).unwrap_or(next)),
            }
        }
        Ok(())
    }

    /// The consumer's position in partition `p`, if it has one.
    fn position(&self, p: i32) -> Option<i64> {
        self.consumer.position().ok().and_then(|tpl| {
            match tpl.find_partition(self.topic, p)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }
        })
    }
}

impl Inner {
    fn offsets_client(&self, group: &str) -> Result<Arc<BaseConsumer>> {
        let mut clients = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(group) {
            return Ok(c.clone());
        }
        let consumer: BaseConsumer = self
            .config
            .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
            .create()
            .map_err(|e| broker_error("offsets client", &e))?;
        let consumer = Arc::new(consumer);
        clients.insert(group.to_string(), consumer.clone());
        Ok(consumer)
    }

    /// Partitions of `topic`, or None when it does not exist.
    fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        let metadata = self
            .metadata
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| broker_error(&format!("metadata of {topic}"), &e))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    }
}
