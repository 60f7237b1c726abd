//! A reader of one Kafka partition, assigned (no group membership, no
//! commits). librdkafka's poll blocks, so each poll runs on tokio's
//! blocking pool; it answers as soon as a record arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{to_record, Names};
use super::{broker_error, KafkaConfig};
use crate::broker::ReaderClient;
use crate::envelope::Record;
use crate::error::{Error, Result};

pub(crate) struct KafkaReader {
    consumer: Arc<BaseConsumer>,
    names: Arc<Mutex<Names>>,
}

impl KafkaReader {
    /// Reads `topic`'s `partition` from `from`, as `read_committed`.
    pub(crate) fn open(
        config: &KafkaConfig,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Self> {
        let consumer: BaseConsumer = config
            .client_config(&[
                // Named for librdkafka's sake; the reader never joins it
                // (assigned) nor commits.
                ("group.id", "kafkactor-reader"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("isolation.level", "read_committed"),
                ("fetch.wait.max.ms", "100"),
            ])
            .create()
            .map_err(|e| broker_error("reader client", &e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| broker_error("assign", &e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| broker_error("assign", &e))?;
        Ok(KafkaReader {
            consumer: Arc::new(consumer),
            names: Arc::default(),
        })
    }
}

impl ReaderClient for KafkaReader {
    fn poll(&self, max: usize, timeout: Duration) -> BoxFuture<'static, Result<Vec<Arc<Record>>>> {
        let (consumer, names) = (self.consumer.clone(), self.names.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = Vec::new();
                let mut wait = timeout;
                while out.len() < max {
                    match consumer.poll(wait) {
                        None => break,
                        Some(Ok(m)) => out.push(Arc::new(to_record(&m, &mut names))),
                        Some(Err(e)) => return Err(broker_error("read", &e)),
                    }
                    // What else has arrived, without waiting.
                    wait = Duration::ZERO;
                }
                Ok(out)
            })
            .await
            .map_err(|e| Error::client("reader task", e, false))?
        }
        .boxed()
    }
}
