//! Kafka transactions of a consumer: the records a transactional
//! subscription's handlers published and the offsets of the records they
//! handled, committed as one (`send_offsets_to_transaction` with the
//! consumer's group metadata, so a member fenced by a rebalance cannot
//! commit). Run on the consumer's polling thread, which owns the consumer.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::producer::headers_of;
use super::KafkaConfig;
use crate::envelope::{OutgoingRecord, TopicPartition};
use crate::error::{Error, Result};

/// How long one step of a transaction (init, offsets, commit, abort) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A consumer's transactional producer, made on its first transaction.
pub(super) struct Transactions {
    config: ClientConfig,
    producer: Option<BaseProducer>,
}

impl Transactions {
    /// Transactions of a member of `group`: a transactional id of its own
    /// (zombie members are fenced by the group's generation instead).
    pub(super) fn new(kafka: &KafkaConfig, group: &str) -> Self {
        let id = format!("kafkactor-{group}-{}", uuid::Uuid::now_v7());
        Transactions {
            config: kafka.client_config(&[
                ("transactional.id", id.as_str()),
                // A transaction lasts one commit (well under a second); a
                // member killed inside one leaves it open this long, and
                // `read_committed` readers of its partitions wait meanwhile
                // (librdkafka's default is 60 s).
                ("transaction.timeout.ms", "10000"),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("partitioner", "murmur2_random"),
            ]),
            producer: None,
        }
    }

    fn producer(&mut self) -> Result<&BaseProducer> {
        if self.producer.is_none() {
            let producer: BaseProducer = self
                .config
                .create()
                .map_err(|e| Error::Config(format!("Kafka transactional producer: {e}")))?;
            producer
                .init_transactions(STEP_TIMEOUT)
                .map_err(|e| failed("init the transactional producer", &e))?;
            self.producer = Some(producer);
        }
        Ok(self.producer.as_ref().expect("made above"))
    }

    /// Writes `records` and commits `offsets` in one transaction; on a
    /// failure, aborts it (nothing of it is visible to `read_committed`
    /// consumers) and, when the producer cannot go on, drops it.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        records: Vec<OutgoingRecord>,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let metadata = consumer
            .group_metadata()
            .ok_or_else(|| Error::Commit("the consumer has no group metadata".into()))?;
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
                .map_err(|e| Error::Commit(e.to_string()))?;
        }
        let producer = self.producer()?;
        let result = (|| {
            producer
                .begin_transaction()
                .map_err(|e| failed("begin a transaction", &e))?;
            for record in &records {
                send(producer, record)?;
            }
            producer
                .send_offsets_to_transaction(&tpl, &metadata, STEP_TIMEOUT)
                .map_err(|e| failed("add offsets to the transaction", &e))?;
            producer
                .commit_transaction(STEP_TIMEOUT)
                .map_err(|e| failed("commit the transaction", &e))
        })();
        // Delivery reports: nothing reads them (the commit fails if a write did).
        producer.poll(Duration::ZERO);
        if result.is_err() && producer.abort_transaction(STEP_TIMEOUT).is_err() {
            // Fenced, or in a state only a new producer leaves.
            self.producer = None;
        }
        result
    }
}

/// Enqueues `record` in the open transaction, waiting while the queue is full.
fn send(producer: &BaseProducer, record: &OutgoingRecord) -> Result<()> {
    let headers = headers_of(record);
    loop {
        let mut r = BaseRecord::<[u8], [u8]>::to(&record.topic).timestamp(record.timestamp_ms);
        if let Some(payload) = &record.payload {
            r = r.payload(&payload[..]);
        }
        if let Some(key) = &record.key {
            r = r.key(&key[..]);
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        if let Some(h) = &headers {
            r = r.headers(h.clone());
        }
        match producer.send(r) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(failed(&format!("write to {}", record.topic), &e)),
        }
    }
}

fn failed(what: &str, e: &KafkaError) -> Error {
    Error::Commit(format!("transaction: {what}: {e}"))
}
