//! The Kafka producer client: an idempotent librdkafka producer.
//!
//! Defaults (each can be overridden with `Broker::set`): `enable.idempotence=true`,
//! `acks=all`, and `partitioner=murmur2_random`, the Java client's
//! partitioner, so keys land on the partitions the embedded broker and every
//! Java producer choose. Topics are created on first use when missing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::admin::Admin;
use super::{produce_error, KafkaConfig};
use crate::broker::{Delivered, ProducerClient};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};

/// How long `flush` waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a send waits for room in librdkafka's queue before failing (retriably).
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct KafkaProducer {
    producer: FutureProducer,
    admin: Admin,
    partitions: i32,
    known_topics: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl KafkaProducer {
    pub(crate) fn new(config: &KafkaConfig, admin: Admin) -> Result<Self> {
        let producer = config
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("partitioner", "murmur2_random"),
            ])
            .create()
            .map_err(|e| Error::Config(format!("Kafka producer: {e}")))?;
        Ok(KafkaProducer {
            producer,
            admin,
            partitions: config.partitions,
            known_topics: Arc::default(),
        })
    }
}

fn headers_of(record: &OutgoingRecord) -> Option<OwnedHeaders> {
    if record.headers.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in record.headers.iter() {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    Some(headers)
}

impl ProducerClient for KafkaProducer {
    fn send(&self, record: OutgoingRecord) -> BoxFuture<'static, Result<Delivered>> {
        let producer = self.producer.clone();
        let admin = self.admin.clone();
        let partitions = self.partitions;
        let known = self.known_topics.clone();
        async move {
            let is_known = known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&record.topic);
            if !is_known {
                admin.ensure_topic(&record.topic, partitions).await?;
                known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(record.topic.clone());
            }
            let headers = headers_of(&record);
            let queue_deadline = std::time::Instant::now() + QUEUE_FULL_TIMEOUT;
            let delivery = loop {
                let mut fr = FutureRecord::<[u8], [u8]>::to(&record.topic)
                    .payload(&record.payload[..])
                    .timestamp(record.timestamp_ms);
                if let Some(key) = &record.key {
                    fr = fr.key(&key[..]);
                }
                if let Some(p) = record.partition {
                    fr = fr.partition(p);
                }
                if let Some(h) = &headers {
                    fr = fr.headers(h.clone());
                }
                match producer.send_result(fr) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if std::time::Instant::now() < queue_deadline =>
                    {
                        // librdkafka's queue is full: wait for deliveries to drain it.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(produce_error(&record.topic, &e)),
                }
            };
            match delivery.await {
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => Err(produce_error(&record.topic, &e)),
                Err(_) => Err(Error::Unavailable("the Kafka producer was closed".into())),
            }
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'static, Result<()>> {
        let producer = self.producer.clone();
        async move {
            tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT))
                .await
                .map_err(|e| Error::Broker(format!("flush task failed: {e}")))?
                .map_err(|e| Error::Broker(format!("flush: {e}")))
        }
        .boxed()
    }
}
