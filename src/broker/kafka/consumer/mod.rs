//! A Kafka consumer-group member, polled on its own thread.
//!
//! librdkafka's consumer must be polled, and its rebalance callbacks run on
//! the polling thread, so each member gets a thread that owns the
//! `BaseConsumer` and serves commands from the ConsumerConnection actor:
//! fetch (at most the actor's credit of records), commit, release, close.
//! Handlers therefore never block polling, and the actor never gets more
//! records than it has room for.
//!
//! Flow control: each assigned partition's records wait in their own queue
//! in librdkafka (split off the consumer's queue, see `queues`), and the
//! thread takes from them only as many records as the actor has room for.
//! The consumer's own queue then carries only the group's events, which
//! the thread serves whether or not the actor has room, so rebalances and
//! `max.poll.interval.ms` are served while handlers are busy. librdkafka
//! stops fetching a partition whose queue is full (`queued.min.messages`
//! records or `queued.max.messages.kbytes`, per partition; defaults here:
//! the subscription's `max_in_flight` with a floor of [`MIN_QUEUED`]
//! records, and [`QUEUED_KBYTES`]) and fetches again as soon as it is read:
//! no pause, which would drop what librdkafka prefetched and stall every
//! partition until it fetched again.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`):
//! only what the actor commits, which is its completed watermark.
//!
//! On revocation the callback hands the actor a `Revoked` event and blocks
//! (serving commit and release commands) until the actor has drained and
//! committed those partitions and released them, or until the revoke
//! deadline; only then does librdkafka give them up. Leaving the group
//! because `max.poll.interval.ms` passed is returned as a poll error, which
//! the actor turns into a supervised failure.
//!
//! This file holds the client, [`KafkaConsumer`]; the polling thread is in
//! `polling`, the partitions' queues in `queues`, the rebalance callbacks
//! in `rebalance`, what they share in `shared`, their work on partitions
//! in `partitions`, and the conversion of messages to records in `records`.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::oneshot;

use super::transaction::Transactions;
use super::{broker_error, KafkaConfig};
use crate::broker::{
    ConsumerClient, ConsumerConfig, ConsumerEvent, OffsetReset, TransactionFailed,
};
use crate::envelope::{OutgoingRecord, TopicPartition};
use crate::error::{Error, Result};

mod partitions;
mod polling;
mod queues;
mod rebalance;
mod records;
mod shared;
#[cfg(test)]
mod tests;

use polling::PollThread;
use queues::Signal;
use rebalance::Context;
pub(crate) use records::{to_record, Names};
use shared::{lock, Command, Fetch, Shared};

/// How long librdkafka waits before fetching again a partition whose
/// local queue was full (`fetch.queue.backoff.ms`; librdkafka's default is
/// 1,000). A setting of the user's takes precedence.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// The fewest records librdkafka keeps queued per assigned partition
/// (`queued.min.messages`) before it stops fetching it, whatever the
/// subscription's `max_in_flight`. Measured (kafka_consume, 300k records,
/// 3 partitions): 10,000 records and 2 MiB read 0.34 of a raw
/// `BaseConsumer`'s rate, 50,000 and 8 MiB 0.43, librdkafka's defaults
/// (100,000 and 64 MiB) 0.41.
pub(crate) const MIN_QUEUED: usize = 50_000;

/// The most librdkafka keeps queued per assigned partition, in KiB
/// (`queued.max.messages.kbytes`; librdkafka's default, 64 MiB, is for
/// the one queue of every partition).
pub(crate) const QUEUED_KBYTES: usize = 8_192;

/// A group member whose `BaseConsumer` lives on its own thread.
pub(crate) struct KafkaConsumer {
    commands: Mutex<Sender<Command>>,
    /// Wakes the polling thread for each command.
    signal: Arc<Signal>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The consumer, for the tests to look at.
    #[cfg(test)]
    consumer: std::sync::Weak<BaseConsumer<Context>>,
}

impl KafkaConsumer {
    pub(crate) fn start(kafka: &KafkaConfig, config: ConsumerConfig) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            commands: Mutex::new(rx),
            fetch: Mutex::new(None),
            records: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            queues: Mutex::default(),
            strays: Mutex::default(),
            signal: Arc::new(Signal::default()),
            closing: AtomicBool::new(false),
            revoke_timeout: config.revoke_timeout,
            group: config.group.clone(),
            transactions: Mutex::new(Transactions::new(kafka, &config.group)),
        });
        let consumer = Arc::new(create_consumer(kafka, &config, &shared)?);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| broker_error(&format!("subscribe to {topics:?}"), &e))?;
        let signal = shared.signal.clone();
        #[cfg(test)]
        let seen = Arc::downgrade(&consumer);
        let thread = std::thread::Builder::new()
            .name(format!("kafkactor-consumer-{}", config.group))
            .spawn(move || PollThread::new(consumer, shared).run())
            .map_err(|e| Error::client("start the polling thread", e, false))?;
        Ok(KafkaConsumer {
            commands: Mutex::new(tx),
            signal,
            thread: Mutex::new(Some(thread)),
            #[cfg(test)]
            consumer: seen,
        })
    }

    fn send(&self, command: Command) -> Result<()> {
        let sent = lock(&self.commands).send(command).map_err(|_| {
            Error::client(
                "reach the consumer's polling thread",
                "it has stopped",
                true,
            )
        });
        self.signal.notify();
        sent
    }
}

/// The member's `BaseConsumer`, with its rebalance callbacks sharing
/// `shared`; offsets are committed only on the actor's commands.
fn create_consumer(
    kafka: &KafkaConfig,
    config: &ConsumerConfig,
    shared: &Arc<Shared>,
) -> Result<BaseConsumer<Context>> {
    let reset = match config.reset {
        OffsetReset::Earliest => "earliest",
        OffsetReset::Latest => "latest",
    };
    let queued = config.prefetch.max(MIN_QUEUED).to_string();
    let queued_kbytes = QUEUED_KBYTES.to_string();
    let fetch_wait = config
        .fetch_wait
        .map(|wait| wait.as_millis().max(1).to_string());
    let mut defaults = vec![
        ("group.id", config.group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", reset),
        ("enable.partition.eof", "false"),
        // librdkafka stops fetching a partition whose local queue holds
        // `queued.min.messages` and looks again only after this; its
        // default (1 s) stalls a consumer that empties the queue faster
        // than that for the rest of the second.
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ("queued.min.messages", &queued),
        ("queued.max.messages.kbytes", &queued_kbytes),
    ];
    // A default: the user's own `fetch.wait.max.ms` wins (librdkafka's
    // mock cluster, which answers a fetch only when it times out, needs a
    // short one).
    if let Some(wait) = &fetch_wait {
        defaults.push(("fetch.wait.max.ms", wait));
    }
    kafka
        .client_config(&defaults)
        .create_with_context(Context {
            shared: shared.clone(),
            consumer: OnceLock::new(),
        })
        .map_err(|e| Error::Config(format!("Kafka consumer for group {}: {e}", config.group)))
}

impl ConsumerClient for KafkaConsumer {
    fn idle_poll_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn poll(
        &self,
        max_records: usize,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Fetch(Fetch {
            max: max_records,
            deadline: Instant::now() + timeout,
            reply,
        }));
        async move {
            sent?;
            rx.await.map_err(|_| {
                Error::client(
                    "reach the consumer's polling thread",
                    "it has stopped",
                    true,
                )
            })?
        }
        .boxed()
    }

    fn wake(&self) {
        let _ = self.send(Command::Wake);
    }

    /// A no-op: the polling thread takes no more records than the actor
    /// asks for, and librdkafka stops fetching a partition whose queue is
    /// full (see the module docs).
    fn pause(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }

    /// A no-op, as [`pause`](Self::pause).
    fn resume(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }

    /// Pauses or resumes the partitions in librdkafka, on the polling thread.
    fn hold(&self, partitions: &[TopicPartition], held: bool) -> Result<()> {
        self.send(Command::Hold(partitions.to_vec(), held))
    }

    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Commit(offsets, reply));
        async move {
            sent?;
            rx.await
                .map_err(|_| Error::commit("the consumer's polling thread has stopped", false))?
        }
        .boxed()
    }

    fn commit_transaction(
        &self,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, std::result::Result<(), TransactionFailed>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Transaction(records, offsets, reply));
        async move {
            sent?;
            rx.await
                .map_err(|_| Error::commit("the consumer's polling thread has stopped", false))?
        }
        .boxed()
    }

    fn release(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.send(Command::Release(partitions.to_vec()))
    }

    fn close(&self) {
        let _ = self.send(Command::Close);
        // The thread leaves the group and exits on its own; joining here
        // would block the actor's thread.
        drop(lock(&self.thread).take());
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.close();
    }
}
