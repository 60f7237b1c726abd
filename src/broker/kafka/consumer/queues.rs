//! Where records wait in librdkafka until the actor has room for them:
//! one queue per assigned partition, split off the consumer's queue, so
//! the consumer's own queue carries only the group's events.
//!
//! The polling thread serves the group's events (rebalances, errors) from
//! the consumer's queue at every round, and takes records from the
//! partition queues only while a fetch has room. Records the actor has no
//! room for stay in librdkafka, which stops fetching a partition whose
//! queue holds `queued.min.messages` records or `queued.max.messages.kbytes`
//! and fetches again once it is read: no pause, so no prefetched data is
//! dropped and no partition stalls while the actor catches up.
//!
//! Every queue, the consumer's included, wakes the polling thread's
//! [`Signal`] when it becomes non-empty, as do the actor's commands, so the
//! thread sleeps while nothing happens.

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::rebalance::Context;
use super::records::{to_record_raw, Names};
use super::shared::lock;
use crate::envelope::{Record, TopicPartition};

/// Most records taken from one partition's queue before the next
/// partition's turn, so every assigned partition progresses.
const TURN: usize = 64;

/// Wakes the polling thread: set by queues becoming non-empty and by the
/// actor's commands, cleared by the thread's wait.
#[derive(Default)]
pub(super) struct Signal {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    pub(super) fn notify(&self) {
        *lock(&self.woken) = true;
        self.cond.notify_one();
    }

    /// Waits until notified (at once if it was since the last wait) or
    /// until `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
        let mut woken = lock(&self.woken);
        if !*woken {
            woken = self
                .cond
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
    }
}

/// One assigned partition's queue: rdkafka's handle, which wakes the
/// [`Signal`] when it becomes non-empty, and a handle of our own to the
/// same queue, read in batches (`rd_kafka_consume_batch_queue`, which
/// rdkafka does not offer: one lock and no event per message).
struct Queue {
    tp: TopicPartition,
    raw: RawQueue,
    /// Kept for its callback; dropped after `raw` is released.
    _watched: PartitionQueue<Context>,
}

/// A handle to a partition's queue, released when dropped.
struct RawQueue(*mut rdsys::rd_kafka_queue_t);

// SAFETY: librdkafka's queue handles are thread-safe; the pointer is only
// passed to librdkafka's functions.
unsafe impl Send for RawQueue {}

impl Drop for RawQueue {
    fn drop(&mut self) {
        // SAFETY: a handle of our own (see `RawQueue::of`), released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

impl RawQueue {
    /// A handle to `tp`'s queue in `consumer`.
    fn of(consumer: &BaseConsumer<Context>, tp: &TopicPartition) -> Option<Self> {
        let topic = std::ffi::CString::new(tp.topic.as_bytes()).ok()?;
        // SAFETY: a new handle to the partition's queue, which stays valid
        // while the handle lives (librdkafka counts it).
        let queue = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                tp.partition,
            )
        };
        (!queue.is_null()).then_some(RawQueue(queue))
    }

    /// Moves up to `max` (at most [`TURN`]) messages into `records`, and
    /// errors into `errors`; returns how many messages it took.
    fn take(
        &self,
        records: &mut Vec<Arc<Record>>,
        max: usize,
        names: &mut Names,
        errors: &mut Vec<KafkaError>,
    ) -> usize {
        let mut batch = [std::ptr::null_mut::<rdsys::rd_kafka_message_t>(); TURN];
        let want = max.min(TURN);
        // SAFETY: a live handle; librdkafka writes at most `want` message
        // pointers into `batch`, each ours to destroy.
        let n = unsafe { rdsys::rd_kafka_consume_batch_queue(self.0, 0, batch.as_mut_ptr(), want) };
        let Ok(n) = usize::try_from(n) else {
            // SAFETY: reads the calling thread's last librdkafka error.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            errors.push(KafkaError::MessageConsumption(code.into()));
            return 0;
        };
        for &m in &batch[..n.min(want)] {
            // SAFETY: a message librdkafka handed us, destroyed right after.
            let err = unsafe { (*m).err };
            if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                // SAFETY: live until destroyed below.
                records.push(Arc::new(unsafe { to_record_raw(m, names) }));
            } else {
                errors.push(KafkaError::MessageConsumption(err.into()));
            }
            // SAFETY: ours, and not used after this.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        n
    }
}

/// The assigned partitions' queues, taken from in turn.
#[derive(Default)]
pub(super) struct Queues {
    queues: Vec<Queue>,
    /// The queue whose turn is next.
    next: usize,
}

impl Queues {
    /// Splits the partitions' messages off the consumer's queue. Done
    /// before librdkafka assigns them, so none is fetched into the
    /// consumer's queue first.
    pub(super) fn split(
        &mut self,
        consumer: &Arc<BaseConsumer<Context>>,
        partitions: &[TopicPartition],
        signal: &Arc<Signal>,
    ) {
        self.remove(partitions);
        for tp in partitions {
            match consumer
                .split_partition_queue(&tp.topic, tp.partition)
                .and_then(|queue| Some((RawQueue::of(consumer, tp)?, queue)))
            {
                Some((raw, mut watched)) => {
                    let signal = signal.clone();
                    watched.set_nonempty_callback(move || signal.notify());
                    self.queues.push(Queue {
                        tp: tp.clone(),
                        raw,
                        _watched: watched,
                    });
                }
                // Its records then come in the consumer's queue, which
                // the poll loop takes as strays.
                None => tracing::warn!(%tp, "could not split the partition's queue"),
            }
        }
    }

    /// Drops the partitions' queues: what they hold was never handed out,
    /// and the next owner reads it again from the committed offset.
    pub(super) fn remove(&mut self, partitions: &[TopicPartition]) {
        self.queues.retain(|q| !partitions.contains(&q.tp));
        self.next = 0;
    }

    pub(super) fn clear(&mut self) {
        self.queues.clear();
        self.next = 0;
    }

    /// Moves records from the queues, a turn each, into `records` until it
    /// holds `max` or every queue is empty. Returns the errors met.
    pub(super) fn take(
        &mut self,
        records: &mut Vec<Arc<Record>>,
        max: usize,
        names: &mut Names,
    ) -> Vec<KafkaError> {
        let mut errors = Vec::new();
        let count = self.queues.len();
        let mut idle = 0;
        while records.len() < max && idle < count {
            let queue = &self.queues[self.next % count];
            let taken = queue
                .raw
                .take(records, max - records.len(), names, &mut errors);
            if taken == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            self.next = (self.next + 1) % count;
        }
        errors
    }
}

/// Records that came in the consumer's own queue: only of a partition
/// whose queue could not be split. Handed out before the partition
/// queues', which hold later records.
pub(super) type Strays = VecDeque<Arc<Record>>;

/// The consumer's own queue, watched: it wakes the [`Signal`] when it
/// becomes non-empty, and tells how many events wait.
pub(super) struct MainQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Kept alive while librdkafka may call back with a pointer to it.
    _signal: Arc<Signal>,
}

// SAFETY: librdkafka's queue handles are thread-safe; the pointer is only
// passed to librdkafka's functions.
unsafe impl Send for MainQueue {}

impl MainQueue {
    pub(super) fn watch(consumer: &BaseConsumer<Context>, signal: Arc<Signal>) -> Self {
        // SAFETY: the client outlives this handle (the polling thread
        // drops it first); the callback's opaque is the signal, which this
        // handle keeps alive until the callback is disabled in `drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if !queue.is_null() {
            unsafe {
                rdsys::rd_kafka_queue_cb_event_enable(
                    queue,
                    Some(wake),
                    Arc::as_ptr(&signal) as *mut c_void,
                )
            };
        }
        MainQueue {
            queue,
            _signal: signal,
        }
    }

    /// How many events (or stray records) wait in the consumer's queue.
    pub(super) fn len(&self) -> usize {
        if self.queue.is_null() {
            return 0;
        }
        // SAFETY: a live queue handle (see `watch`).
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        if self.queue.is_null() {
            return;
        }
        // SAFETY: disabling takes the queue's lock, so no callback runs
        // once it returns; then the handle is released.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

unsafe extern "C" fn wake(_: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Signal` a live `MainQueue` keeps alive.
    let signal = unsafe { &*(opaque as *const Signal) };
    signal.notify();
}

/// How many messages librdkafka holds in a partition's queue.
#[cfg(test)]
pub(super) fn queued(consumer: &BaseConsumer<Context>, tp: &TopicPartition) -> usize {
    let topic = std::ffi::CString::new(tp.topic.as_ref()).unwrap();
    // SAFETY: a new handle to the partition's queue (not forwarded
    // anywhere by this), released at once.
    unsafe {
        let queue = rdsys::rd_kafka_queue_get_partition(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.partition,
        );
        if queue.is_null() {
            return 0;
        }
        let len = rdsys::rd_kafka_queue_length(queue);
        rdsys::rd_kafka_queue_destroy(queue);
        len
    }
}
