//! Kafka transactions of a consumer: the records a transactional
//! subscription's handlers published and the offsets of the records they
//! handled, committed as one (`send_offsets_to_transaction` with the
//! consumer's group metadata, so a member fenced by a rebalance cannot
//! commit). Run on the consumer's polling thread, which owns the consumer.
//!
//! A commit whose outcome the client cannot tell (the broker went away
//! while it committed: retriable errors past a few tries, or a fatal one)
//! is resolved before anything is written again: a new producer with the
//! member's transactional id finishes or aborts the old transaction when
//! it starts (`init_transactions`), and the group's committed offsets then
//! say which it was (the offsets commit with the outputs). Writing the
//! outputs again without that wrote them twice whenever the first commit
//! had in fact gone through.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::producer::headers_of;
use super::{commit_error, produce_error, KafkaConfig};
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
/// They run on the consumer's polling thread, which serves the group's
/// rebalances too: a step waiting longer than the transaction itself may
/// last (`transaction.timeout.ms`, 10 s) would hold a revocation past its
/// deadline for nothing.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new transactional producer may take to start (the
/// coordinator may be loading after a broker restart, and it settles a
/// transaction the member's previous producer left open).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

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
                .init_transactions(INIT_TIMEOUT)
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
            .ok_or_else(|| Error::commit("the consumer has no group metadata", false))?;
        let tpl = offsets_list(offsets)?;
        let producer = self.producer()?;
        // Reports of an earlier transaction are not this one's.
        producer.context().refused();
        let mut refused = Vec::new();
        let result = write_and_commit(producer, &records, &tpl, &metadata, &mut refused);
        // Delivery reports still queued (a commit flushes and serves them).
        producer.poll(Duration::ZERO);
        match result {
            Ok(()) => {
                producer.context().refused();
                Ok(())
            }
            Err(Undecided::No(error)) => Err(self.abort(error, refused)),
            Err(Undecided::Yes(error)) => self.resolve(consumer, offsets, error),
        }
    }

    /// Aborts the failed transaction (dropping the producer when it cannot
    /// abort), and the failure, naming every record refused (`refused`,
    /// and those the last delivery reports name).
    fn abort(&mut self, error: Error, mut refused: Vec<(usize, Error)>) -> TransactionFailed {
        let aborted = self
            .producer
            .as_ref()
            .is_some_and(|producer| producer.abort_transaction(STEP_TIMEOUT).is_ok());
        if !aborted {
            // Fenced, or in a state only a new producer leaves.
            self.producer = None;
        } else if let Some(producer) = &self.producer {
            producer.poll(Duration::ZERO);
            refused.extend(producer.context().refused());
        }
        refused.sort_by_key(|(i, _)| *i);
        refused.dedup_by_key(|(i, _)| *i);
        TransactionFailed {
            error,
            refused,
            undetermined: false,
        }
    }

    /// Settles a transaction whose commit outcome is unknown (`error`): a
    /// new producer decides it, and the group's committed offsets tell
    /// whether it went through.
    fn resolve<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &[(TopicPartition, i64)],
        error: Error,
    ) -> std::result::Result<(), TransactionFailed> {
        // The commit may have gone through: a new producer decides
        // the old transaction, and the committed offsets tell.
        tracing::warn!(%error, "transaction outcome unknown: resolving it before anything more is written");
        self.producer = None;
        match self.committed_already(consumer, offsets) {
            Ok(true) => Ok(()),
            Ok(false) => Err(error.into()),
            Err(e) => Err(TransactionFailed {
                error: e,
                refused: Vec::new(),
                undetermined: true,
            }),
        }
    }

    /// Whether `consumer`'s group has committed at least `offsets`: asked
    /// once a new producer (made here) has settled the transaction an old
    /// one left open.
    fn committed_already<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<bool> {
        self.producer()?;
        let mut tpl = TopicPartitionList::new();
        for (tp, _) in offsets {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        // The broker may be coming back still: a few tries.
        let mut tries = 0;
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), STEP_TIMEOUT) {
                Ok(committed) => break committed,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "reading the committed offsets failed: trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(failed("read the group's committed offsets", &e)),
            }
        };
        Ok(offsets.iter().all(|(tp, offset)| {
            committed
                .find_partition(&tp.topic, tp.partition)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *offset))
        }))
    }
}

/// `offsets` as the list a transaction commits.
fn offsets_list(offsets: &[(TopicPartition, i64)]) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|e| commit_error("offsets", &e))?;
    }
    Ok(tpl)
}

/// The steps of one transaction, in order: begin it, enqueue `records`,
/// add the offsets `tpl` (with the group's `metadata`), commit. Records
/// refused for good are noted in `refused`.
fn write_and_commit(
    producer: &BaseProducer<Reports>,
    records: &[OutgoingRecord],
    tpl: &TopicPartitionList,
    metadata: &ConsumerGroupMetadata,
    refused: &mut Vec<(usize, Error)>,
) -> std::result::Result<(), Undecided> {
    producer
        .begin_transaction()
        .map_err(|e| failed("begin a transaction", &e))?;
    send_all(producer, records, refused)?;
    producer
        .send_offsets_to_transaction(tpl, metadata, STEP_TIMEOUT)
        .map_err(|e| failed("add offsets to the transaction", &e))?;
    commit_retrying(producer)
}

/// Enqueues every record in the open transaction: a retriable failure
/// fails it at once; records refused for good are noted in `refused`, and
/// fail it once every record was tried.
fn send_all(
    producer: &BaseProducer<Reports>,
    records: &[OutgoingRecord],
    refused: &mut Vec<(usize, Error)>,
) -> Result<()> {
    for (i, record) in records.iter().enumerate() {
        if let Err(e) = send(producer, i, record) {
            if e.is_retriable() {
                return Err(e);
            }
            refused.push((i, e));
        }
    }
    if !refused.is_empty() {
        return Err(Error::commit(
            format!(
                "transaction: {} of its {} records refused",
                refused.len(),
                records.len()
            ),
            false,
        ));
    }
    Ok(())
}

/// Why a transaction failed, and whether its commit may have gone
/// through all the same.
enum Undecided {
    /// It did not commit (an abort makes sure).
    No(Error),
    /// It may have committed: the broker did not say.
    Yes(Error),
}

impl From<Error> for Undecided {
    fn from(error: Error) -> Self {
        Undecided::No(error)
    }
}

/// How many times a commit answered with a retriable error is tried
/// again before its outcome is taken as unknown.
const COMMIT_TRIES: usize = 3;

/// Commits the open transaction, again while the error says so
/// (librdkafka: the same commit may be retried); an error needing an abort
/// means it did not commit; a fatal one, or retriable ones past
/// [`COMMIT_TRIES`], leave the outcome unknown.
fn commit_retrying(producer: &BaseProducer<Reports>) -> std::result::Result<(), Undecided> {
    let mut tries = 0;
    loop {
        let e = match producer.commit_transaction(STEP_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let error = failed("commit the transaction", &e);
        match &e {
            KafkaError::Transaction(t) if t.txn_requires_abort() => {
                return Err(Undecided::No(error))
            }
            KafkaError::Transaction(t) if t.is_retriable() && tries + 1 < COMMIT_TRIES => {
                tries += 1;
                tracing::debug!(%error, tries, "commit failed: trying it again");
            }
            _ => return Err(Undecided::Yes(error)),
        }
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
    commit_error(&format!("transaction: {what}"), e)
}
