//! A reader of one partition of the embedded broker, in no group.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::Notify;

use super::MemoryBroker;
use crate::broker::ReaderClient;
use crate::envelope::Record;
use crate::error::{Error, Result};

pub(crate) struct MemoryReader {
    broker: Arc<MemoryBroker>,
    topic: Arc<str>,
    partition: usize,
    /// The next offset to return.
    next: Arc<AtomicI64>,
    /// Notified by every write to the topic (a permit kept when nobody
    /// waits, so a write between a look and a wait is not missed).
    notify: Arc<Notify>,
}

impl MemoryReader {
    /// Reads `topic`'s `partition` from `from`; the topic must have it.
    pub(crate) fn open(
        broker: Arc<MemoryBroker>,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Result<Self> {
        let notify = Arc::new(Notify::new());
        let topic: Arc<str> = {
            let mut state = broker.lock();
            let (name, t) = state
                .topics
                .get_key_value(topic)
                .ok_or_else(|| Error::Config(format!("topic {topic:?} does not exist")))?;
            if !(0..t.partitions.len() as i32).contains(&partition) {
                return Err(Error::no_partition_to_read(
                    topic,
                    partition,
                    t.partitions.len(),
                ));
            }
            let name = name.clone();
            state.readers.retain(|(_, n)| n.strong_count() > 0);
            state.readers.push((name.clone(), Arc::downgrade(&notify)));
            name
        };
        Ok(MemoryReader {
            broker,
            topic,
            partition: partition as usize,
            next: Arc::new(AtomicI64::new(from.max(0))),
            notify,
        })
    }
}

impl ReaderClient for MemoryReader {
    fn poll(&self, max: usize, timeout: Duration) -> BoxFuture<'static, Result<Vec<Arc<Record>>>> {
        let (broker, topic, partition) = (self.broker.clone(), self.topic.clone(), self.partition);
        let (next, notify) = (self.next.clone(), self.notify.clone());
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let from = next.load(Ordering::Acquire);
                let records: Vec<Arc<Record>> = {
                    let state = broker.lock();
                    let log = &state.topics[&*topic].partitions[partition];
                    let start = (from as usize).min(log.len());
                    log[start..(start + max).min(log.len())].to_vec()
                };
                if let Some(last) = records.last() {
                    next.store(last.offset + 1, Ordering::Release);
                    return Ok(records);
                }
                if tokio::time::timeout_at(deadline, notify.notified())
                    .await
                    .is_err()
                {
                    return Ok(Vec::new());
                }
            }
        }
        .boxed()
    }
}
