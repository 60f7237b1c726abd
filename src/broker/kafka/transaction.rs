//! Kafka transactions of a consumer: the records a transactional
//! subscription's handlers published and the offsets of the records they
//! handled, committed as one (`send_offsets_to_transaction` with the
//! consumer's group metadata, so a member fenced by a rebalance cannot
//! commit). Run on the consumer's polling thread, which owns the consumer.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::producer::headers_of;
use super::{produce_error, KafkaConfig};
use crate::broker::TransactionFailed;
use crate::envelope::{OutgoingRecord, TopicPartition};
use crate::error::{Error, Result};

/// The delivery reports of a transaction's records: each record is sent
/// with its index among them, and a record the broker refused is noted
/// here, with why, when its report is served (while the commit flushes).
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Error)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((e, m)) = result {
            use rdkafka::message::Message;
            let error = produce_error(m.topic(), e);
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((index, error));
        }
    }
}

impl Reports {
    /// The records refused for good since the last call (a retriable
    /// failure is the whole transaction's, tried again as it is).
    fn refused(&self) -> Vec<(usize, Error)> {
        let mut reports = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused: Vec<(usize, Error)> = std::mem::take(&mut *reports)
            .into_iter()
            .filter(|(_, e)| !e.is_retriable())
            .collect();
        refused.sort_by_key(|(i, _)| *i);
        refused.dedup_by_key(|(i, _)| *i);
        refused
    }
}

/// How long one step of a transaction (init, offsets, commit, abort) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A consumer's transactional producer, made on its first transaction.
pub(super) struct Transactions {
    config: ClientConfig,
    producer: Option<BaseProducer<Reports>>,
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

    fn producer(&mut self) -> Result<&BaseProducer<Reports>> {
        if self.producer.is_none() {
            let producer: BaseProducer<Reports> = self
                .config
                .create_with_context(Reports::default())
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
    /// consumers) and, when the producer cannot go on, drops it. Records
    /// the broker refused for good (when enqueued, or in their delivery
    /// reports) are named in the failure.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        records: Vec<OutgoingRecord>,
        offsets: &[(TopicPartition, i64)],
    ) -> std::result::Result<(), TransactionFailed> {
        let metadata = consumer
            .group_metadata()
            .ok_or_else(|| Error::Commit("the consumer has no group metadata".into()))?;
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
                .map_err(|e| Error::Commit(e.to_string()))?;
        }
        let producer = self.producer()?;
        // Reports of an earlier transaction are not this one's.
        producer.context().refused();
        let mut refused = Vec::new();
        let result = (|| {
            producer
                .begin_transaction()
                .map_err(|e| failed("begin a transaction", &e))?;
            for (i, record) in records.iter().enumerate() {
                if let Err(e) = send(producer, i, record) {
                    if e.is_retriable() {
                        return Err(e);
                    }
                    refused.push((i, e));
                }
            }
            if !refused.is_empty() {
                return Err(Error::Commit(format!(
                    "transaction: {} of its {} records refused",
                    refused.len(),
                    records.len()
                )));
            }
            producer
                .send_offsets_to_transaction(&tpl, &metadata, STEP_TIMEOUT)
                .map_err(|e| failed("add offsets to the transaction", &e))?;
            producer
                .commit_transaction(STEP_TIMEOUT)
                .map_err(|e| failed("commit the transaction", &e))
        })();
        // Delivery reports still queued (a commit flushes and serves them).
        producer.poll(Duration::ZERO);
        let Err(error) = result else {
            producer.context().refused();
            return Ok(());
        };
        if producer.abort_transaction(STEP_TIMEOUT).is_err() {
            // Fenced, or in a state only a new producer leaves.
            self.producer = None;
        } else if let Some(producer) = &self.producer {
            producer.poll(Duration::ZERO);
            refused.extend(producer.context().refused());
        }
        refused.sort_by_key(|(i, _)| *i);
        refused.dedup_by_key(|(i, _)| *i);
        Err(TransactionFailed { error, refused })
    }
}

/// Enqueues `record` (the transaction's `index`th) in the open transaction,
/// waiting while the queue is full.
fn send(producer: &BaseProducer<Reports>, index: usize, record: &OutgoingRecord) -> Result<()> {
    let headers = headers_of(record);
    loop {
        let mut r = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&record.topic, index)
            .timestamp(record.timestamp_ms);
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
            Err((e, _)) => return Err(produce_error(&record.topic, &e)),
        }
    }
}

fn failed(what: &str, e: &KafkaError) -> Error {
    Error::Commit(format!("transaction: {what}: {e}"))
}
