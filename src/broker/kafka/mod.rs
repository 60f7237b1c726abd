//! Apache Kafka through rdkafka: the Kafka side of the broker boundary.
//!
//! Only the connection actors call into this module, through the
//! [`BrokerBackend`], [`ProducerClient`] and [`ConsumerClient`] traits; no
//! rdkafka type crosses that boundary. Errors are mapped to kafkactor's own
//! [`Error`], saying whether a retry can help.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use super::{
    BrokerBackend, ConsumerClient, ConsumerConfig, ProducerClient, ProducerConfig, ReaderClient,
};
use crate::envelope::Record;
use crate::error::{Error, ErrorCode, Result};

mod admin;
mod consumer;
mod headers;
mod producer;
mod reader;
mod transaction;

use admin::Admin;

/// Settings of a Kafka broker handle: where it is, the pass-through
/// librdkafka settings, and topic administration.
#[derive(Clone)]
pub(crate) struct KafkaConfig {
    bootstrap: String,
    settings: BTreeMap<String, String>,
    partitions: i32,
    /// Replicas of the topics it creates; None: the broker's default.
    replication: Option<i32>,
    create_topics: bool,
    /// The connected backend, shared by clones of the handle that have the
    /// same settings (every setter starts a new one).
    backend: Arc<OnceLock<Arc<KafkaBackend>>>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Setting values may hold credentials: show the keys only.
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("create_topics", &self.create_topics)
            .finish()
    }
}

impl KafkaConfig {
    pub(crate) fn new(bootstrap: String) -> Self {
        KafkaConfig {
            bootstrap,
            settings: BTreeMap::new(),
            partitions: 3,
            replication: None,
            create_topics: true,
            backend: Arc::default(),
        }
    }

    fn changed(mut self) -> Self {
        self.backend = Arc::default();
        self
    }

    pub(crate) fn set(mut self, key: String, value: String) -> Self {
        self.settings.insert(key, value);
        self.changed()
    }

    pub(crate) fn topic_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self.changed()
    }

    pub(crate) fn topic_replication(mut self, replicas: i32) -> Self {
        self.replication = Some(replicas);
        self.changed()
    }

    /// The replication factor a CreateTopics request asks for: -1 leaves it
    /// to the broker's `default.replication.factor`.
    pub(crate) fn replication(&self) -> i32 {
        self.replication.filter(|r| *r >= 1).unwrap_or(-1)
    }

    pub(crate) fn create_topics(mut self, create: bool) -> Self {
        self.create_topics = create;
        self.changed()
    }

    pub(crate) fn creates_topics(&self) -> bool {
        self.create_topics
    }

    /// A client configuration: `defaults` first, the user's settings over them.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.settings {
            config.set(k, v);
        }
        config
    }

    /// The connected backend for these settings.
    pub(crate) fn backend(&self) -> Result<Arc<KafkaBackend>> {
        if let Some(backend) = self.backend.get() {
            return Ok(backend.clone());
        }
        let backend = Arc::new(KafkaBackend::new(self.clone())?);
        Ok(self.backend.get_or_init(|| backend).clone())
    }
}

/// Clients of one Kafka cluster.
pub(crate) struct KafkaBackend {
    config: KafkaConfig,
    admin: Admin,
}

impl fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("config", &self.config)
            .finish()
    }
}

impl KafkaBackend {
    fn new(config: KafkaConfig) -> Result<Self> {
        // The settings without the slot that will hold this backend: a
        // backend that kept its own slot alive would never be dropped, nor
        // its clients and their threads.
        let config = KafkaConfig {
            backend: Arc::default(),
            ..config
        };
        let admin = Admin::new(&config)?;
        Ok(KafkaBackend { config, admin })
    }
}

impl BrokerBackend for KafkaBackend {
    fn producer(&self, config: ProducerConfig) -> Result<Arc<dyn ProducerClient>> {
        Ok(Arc::new(producer::KafkaProducer::new(
            &self.config,
            config,
        )?))
    }

    fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn ConsumerClient>> {
        Ok(Arc::new(consumer::KafkaConsumer::start(
            &self.config,
            config,
        )?))
    }

    fn reader(&self, topic: &str, partition: i32, from: i64) -> Result<Arc<dyn ReaderClient>> {
        Ok(Arc::new(reader::KafkaReader::open(
            &self.config,
            topic,
            partition,
            from,
        )?))
    }

    fn ensure_topic(&self, topic: &str, partitions: Option<i32>) -> BoxFuture<'static, Result<()>> {
        self.admin
            .ensure_topic(topic, partitions.unwrap_or(self.config.partitions))
    }

    fn watermarks(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(i64, i64)>>> {
        self.admin.watermarks(topic)
    }

    fn committed(&self, group: &str, topic: &str) -> BoxFuture<'static, Result<Vec<Option<i64>>>> {
        self.admin.committed(group, topic)
    }

    fn read_all(&self, topic: &str) -> BoxFuture<'static, Result<Vec<Record>>> {
        self.admin.read_all(topic)
    }

    fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>>> {
        self.admin.read_range(topic, partition, from, max)
    }

    fn probe(&self, timeout: std::time::Duration) -> BoxFuture<'static, Result<()>> {
        self.admin.probe(timeout)
    }

    fn describe(&self) -> String {
        format!(
            "Apache Kafka at {} (bootstrap.servers)",
            self.config.bootstrap
        )
    }

    fn partitions(&self, topic: &str) -> BoxFuture<'static, Result<Option<i32>>> {
        self.admin.partitions(topic)
    }
}

/// Whether an error code says that trying again can succeed.
pub(crate) fn retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        QueueFull
            | MessageTimedOut
            | RequestTimedOut
            | OperationTimedOut
            | TimedOutQueue
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | LeaderNotAvailable
            | NotLeaderForPartition
            | BrokerNotAvailable
            | NetworkException
            | AllBrokersDown
            | BrokerTransportFailure
            | UnknownTopicOrPartition
            | RebalanceInProgress
    )
}

/// kafkactor's name of `code`.
pub(crate) fn error_code(code: RDKafkaErrorCode) -> ErrorCode {
    ErrorCode::from_name(&format!("{code:?}"))
}

/// A commit failure, with the broker's code: retriable only when the code
/// says so.
pub(crate) fn commit_error(what: &str, error: &KafkaError) -> Error {
    let code = error.rdkafka_error_code();
    Error::Commit {
        reason: format!("{what}: {error}"),
        code: code.map(error_code),
        retriable: code.is_some_and(retriable),
    }
}

/// A produce failure for `topic`, with the broker's code.
pub(crate) fn produce_error(topic: &str, error: &KafkaError) -> Error {
    let code = error.rdkafka_error_code();
    Error::Produce {
        topic: topic.to_string(),
        reason: error.to_string(),
        code: code.map(error_code),
        retriable: code.is_some_and(retriable),
    }
}

/// Any other failure of `operation`, with the broker's code: retriable only
/// when the code says so.
pub(crate) fn broker_error(operation: &str, error: &KafkaError) -> Error {
    let code = error.rdkafka_error_code();
    Error::Broker {
        operation: operation.to_string(),
        reason: error.to_string(),
        code: code.map(error_code),
        retriable: code.is_some_and(retriable),
    }
}

/// A failure the broker answered with `code` alone.
pub(crate) fn code_error(operation: &str, code: RDKafkaErrorCode) -> Error {
    Error::Broker {
        operation: operation.to_string(),
        reason: code.to_string(),
        code: Some(error_code(code)),
        retriable: retriable(code),
    }
}
