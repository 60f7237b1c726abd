//! The Kafka producer client: an idempotent librdkafka producer.
//!
//! Defaults (each can be overridden with `Broker::set`): `enable.idempotence=true`,
//! `acks=all`, `partitioner=murmur2_random`, the Java client's
//! partitioner, so keys land on the partitions the embedded broker and every
//! Java producer choose, and `message.timeout.ms` set to the application's
//! delivery timeout (librdkafka's own default is 300 s), so a record the
//! broker cannot take fails when the publisher was promised it would. Records are enqueued in librdkafka in call order;
//! the ProducerConnection creates missing topics before their first record.

use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{produce_error, KafkaConfig};
use crate::broker::{Delivered, Enqueued, Failed, ProducerClient, ProducerConfig};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};

/// How long `flush` waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct KafkaProducer {
    producer: FutureProducer,
}

impl KafkaProducer {
    pub(crate) fn new(config: &KafkaConfig, producer: ProducerConfig) -> Result<Self> {
        // librdkafka refuses 0; at least a millisecond.
        let timeout_ms = producer
            .delivery_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128);
        let linger = producer.linger.map(|l| l.as_millis().to_string());
        let mut defaults = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
        ];
        if let Some(linger) = &linger {
            defaults.push(("linger.ms", linger));
        }
        let timeout_ms = timeout_ms.to_string();
        defaults.push(("message.timeout.ms", &timeout_ms));
        let producer = config
            .client_config(&defaults)
            .create()
            .map_err(|e| Error::Config(format!("Kafka producer: {e}")))?;
        Ok(KafkaProducer { producer })
    }
}

pub(super) fn headers_of(record: &OutgoingRecord) -> Option<OwnedHeaders> {
    if record.headers.is_empty() {
        return None;
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in record.headers.iter_raw() {
        headers = headers.insert(Header { key, value });
    }
    Some(headers)
}

impl ProducerClient for KafkaProducer {
    fn send(&self, record: OutgoingRecord) -> Enqueued {
        let mut fr = FutureRecord::<[u8], [u8]>::to(&record.topic).timestamp(record.timestamp_ms);
        // No payload at all for a tombstone.
        if let Some(payload) = &record.payload {
            fr = fr.payload(&payload[..]);
        }
        if let Some(key) = &record.key {
            fr = fr.key(&key[..]);
        }
        if let Some(p) = record.partition {
            fr = fr.partition(p);
        }
        if let Some(h) = headers_of(&record) {
            fr = fr.headers(h);
        }
        let result = self.producer.send_result(fr).map_err(|(e, _)| e);
        match result {
            // librdkafka has its own copy of the bytes; the record waits
            // beside the delivery report, to be given back if it fails.
            Ok(delivery) => Enqueued::Sent(
                async move {
                    match delivery.await {
                        Ok(Ok(d)) => Ok(Delivered {
                            partition: d.partition,
                            offset: d.offset,
                        }),
                        Ok(Err((e, _))) => {
                            Err(Failed::new(produce_error(&record.topic, &e), record))
                        }
                        Err(_) => Err(Failed::new(
                            Error::Unavailable("the Kafka producer was closed".into()),
                            record,
                        )),
                    }
                }
                .boxed(),
            ),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                Enqueued::Full(record)
            }
            Err(e) => Enqueued::Done(Err(Failed::new(produce_error(&record.topic, &e), record))),
        }
    }

    fn flush(&self) -> BoxFuture<'static, Result<()>> {
        let producer = self.producer.clone();
        async move {
            tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT))
                .await
                .map_err(|e| Error::client("flush", e, false))?
                .map_err(|e| super::broker_error("flush", &e))
        }
        .boxed()
    }
}
