//! The `Republisher` actor: moves delayed records out of the delay buckets
//! when they are due.
//!
//! Role: it is the consumer of the bucket topics' ConsumerConnection (the
//! same connection, flow control and commit watermark as a subscription's).
//! For each bucket partition it looks at the head record:
//! - not released yet (a record stays `length` in its bucket): it sets one
//!   timer for that moment and, when it is further off than a second, sends
//!   the connection a [`Hold`] that pauses the partition until a second
//!   before (so the records about to be released are read and queued by
//!   then): no polling, no CPU while nothing is due;
//! - released with more than the hold (`Delays::hold_in_memory`) and a
//!   bucket's worth of delay remaining: it writes the record to the largest
//!   bucket that fits (headers, key and payload untouched);
//! - released with less remaining: it holds the record in an in-memory
//!   timer until its `x-deliver-at`, then writes it to its destination
//!   (`x-original-topic`) without the delay headers;
//! - without a valid `x-deliver-at` or `x-original-topic`: it writes it to
//!   `<bucket topic>.dlq` with the reason.
//!
//! A bucket record is reported completed to the connection (and so becomes
//! committable) only once the write that replaces it is acknowledged.
//!
//! Messages: `Deliver` (bucket records from the connection), `Released`
//! (bucket partitions given up: what it holds of them is dropped at once,
//! never forwarded; the next owner reads it again), `TakeAnswered` (writes
//! answered: their answers wait in a shared list, one message per batch),
//! `Shutdown` (stop taking records, wait for the writes under way, within
//! the delivery timeout). Writes go to its producer connection as one
//! `ProduceBatch` per turn, each answering through a [`ForwardReply`] (no
//! task, channel or message per record); completed bucket records go to the
//! consumer connection in one `Completed` per batch.
//!
//! Owns: the per-partition queues of records read and not yet released,
//! and the timer of records released and not yet due. Nothing of it is
//! durable: a restarted Republisher gets every unfinished record from the
//! connection again (`Ready`), so nothing pending is lost; a
//! record whose write was acknowledged but not yet reported may be written
//! twice (at-least-once).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};
use tokio::sync::oneshot;

use crate::buckets::Plan;
use crate::connection::consumer::ConsumerConnection;
use crate::connection::producer::{ProducerConnection, Write};
use crate::connection::protocol::{Arrival, Deliver, Feed, Ready, Refused, Released, Revoking};
use crate::dead_letter::DeadLetter;
use crate::envelope::{Record, TopicPartition};
use crate::observe::metrics::{Metrics, PerTopic};
use prometheus::IntCounter;

mod due;
mod writes;

pub(crate) use due::due_of;
use due::BucketQueue;
use writes::Answered;
pub(crate) use writes::ForwardReply;

/// Heads due sooner than this are waited for without pausing the partition:
/// a pause makes a Kafka client drop what it fetched ahead and fetch it
/// again, which costs more than the few records that arrive meanwhile.
const HOLD_MIN: Duration = Duration::from_millis(50);

/// How long before a held head's release its partition is resumed: the
/// records about to be released are fetched, handed over and queued here
/// before they are released (a partition resumed at the release itself
/// starts fetching then, and its first records come out as late as one
/// fetch of everything that piled up while it was paused).
const PREFETCH_LEAD: Duration = Duration::from_secs(1);

/// How long to wait before writing again after a write failed for good.
const REWRITE_BACKOFF: Duration = Duration::from_secs(1);

/// Where a released record goes.
#[derive(Debug, Clone)]
enum Target {
    /// Its destination, with the delay headers removed.
    Destination {
        topic: Arc<str>,
        partition: Option<i32>,
    },
    /// Another delay bucket, untouched.
    Bucket(Arc<str>),
    /// The bucket's dead-letter topic, with the reason.
    DeadLetter(String),
}

pub(crate) struct Republisher {
    plan: Arc<Plan>,
    group: Arc<str>,
    delivery_timeout: Duration,
    connection: ChildRef<ConsumerConnection>,
    producer: ChildRef<ProducerConnection<ForwardReply>>,
    dead_letter: ChildRef<DeadLetter>,
    /// The connection feeding us, and the bucket partitions given up.
    feed: Feed,
    queues: HashMap<TopicPartition, BucketQueue>,
    /// Released records waiting for their `x-deliver-at`, in due order
    /// (ties in the order they were released).
    due: BTreeMap<(i64, u64), (Arc<Record>, Target)>,
    released: u64,
    due_timer: Option<(i64, SpawnHandle)>,
    /// Writes under way.
    writing: usize,
    /// Writes gathered this turn, handed over together.
    unsent: Vec<Write<ForwardReply>>,
    /// Where this incarnation's writes answer (set once it started).
    answered: Option<Arc<Answered>>,
    stopping: bool,
    metrics: Metrics,
    /// Records moved out of each bucket, by where they went.
    counters: PerTopic<Arc<[IntCounter; 3]>>,
    /// Answers `Shutdown` once no write is under way.
    drained: Option<oneshot::Sender<()>>,
}

impl Republisher {
    pub(crate) fn new(
        plan: Arc<Plan>,
        group: Arc<str>,
        delivery_timeout: Duration,
        connection: ChildRef<ConsumerConnection>,
        producer: ChildRef<ProducerConnection<ForwardReply>>,
        dead_letter: ChildRef<DeadLetter>,
        metrics: Metrics,
    ) -> Self {
        Republisher {
            plan,
            group,
            delivery_timeout,
            connection,
            producer,
            dead_letter,
            feed: Feed::default(),
            queues: HashMap::new(),
            due: BTreeMap::new(),
            released: 0,
            due_timer: None,
            writing: 0,
            unsent: Vec::new(),
            answered: None,
            stopping: false,
            metrics,
            counters: PerTopic::default(),
            drained: None,
        }
    }
}

impl Actor for Republisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.answered = Some(Arc::new(Answered {
            done: Mutex::new(Vec::new()),
            republisher: ctx.address().recipient(),
        }));
        // A restarted Republisher asks for every unfinished bucket record.
        if let Some(connection) = self.connection.get() {
            connection.do_send(Ready);
        }
        // A test's clock moving ahead: what waits may be due now.
        #[cfg(feature = "testing")]
        ctx.add_stream(futures_util::stream::unfold(
            crate::clock::skew::advances(),
            |mut advances| async move {
                advances.changed().await.ok()?;
                Some((ClockAdvanced, advances))
            },
        ));
    }
}

/// A test advanced the wall clock (feature `testing`).
#[cfg(feature = "testing")]
struct ClockAdvanced;

#[cfg(feature = "testing")]
impl StreamHandler<ClockAdvanced> for Republisher {
    fn handle(&mut self, _: ClockAdvanced, ctx: &mut Context<Self>) {
        // Every wait was measured against the clock before: look again,
        // lifting the holds on partitions whose heads waited.
        let waiting: Vec<TopicPartition> = self.queues.keys().cloned().collect();
        for tp in waiting {
            let queue = self.queues.get_mut(&tp).expect("listed");
            if let Some((_, handle)) = queue.wakeup.take() {
                ctx.cancel_future(handle);
                if let Some(connection) = self.connection.get() {
                    connection.do_send(crate::connection::consumer::Hold {
                        partition: tp.clone(),
                        until: std::time::Instant::now(),
                    });
                }
            }
            self.release(&tp, ctx);
        }
        if let Some((_, handle)) = self.due_timer.take() {
            ctx.cancel_future(handle);
        }
        self.deliver_due(ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The clock's announcements end only with the process.
    }
}

impl Handler<Deliver> for Republisher {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let arrival = self.feed.arrival(&msg);
        if arrival == Arrival::Stale {
            return;
        }
        if arrival == Arrival::Fresh {
            // A new connection incarnation reads everything unfinished again.
            for (_, queue) in self.queues.drain() {
                if let Some((_, handle)) = queue.wakeup {
                    ctx.cancel_future(handle);
                }
            }
            self.due.clear();
            if let Some((_, handle)) = self.due_timer.take() {
                ctx.cancel_future(handle);
            }
        }
        let mut touched: Vec<TopicPartition> = Vec::new();
        for record in msg.records {
            let tp = record.topic_partition();
            if touched.last() != Some(&tp) {
                touched.push(tp.clone());
            }
            self.queues.entry(tp).or_default().records.push_back(record);
        }
        for tp in touched {
            // A partition already waiting for its head keeps waiting.
            if self.queues.get(&tp).is_some_and(|q| q.wakeup.is_none()) {
                self.release(&tp, ctx);
            }
        }
    }
}

/// Nothing to give up: the Republisher's connection has no drain timeout
/// (what it holds of a revoked bucket partition is read again by the next
/// owner at once).
impl Handler<Revoking> for Republisher {
    type Result = ();

    fn handle(&mut self, _: Revoking, _: &mut Context<Self>) {}
}

impl Handler<Released> for Republisher {
    type Result = ();

    fn handle(&mut self, msg: Released, ctx: &mut Context<Self>) {
        let mut dropped = 0;
        self.feed.released(&msg.partitions);
        for tp in &msg.partitions {
            if let Some(queue) = self.queues.remove(tp) {
                dropped += queue.records.len();
                if let Some((_, handle)) = queue.wakeup {
                    ctx.cancel_future(handle);
                }
            }
        }
        let before = self.due.len();
        self.due
            .retain(|_, (record, _)| !msg.partitions.contains(&record.topic_partition()));
        dropped += before - self.due.len();
        if let Some((_, handle)) = self.due_timer.take() {
            ctx.cancel_future(handle);
        }
        self.arm_due_timer(ctx);
        tracing::debug!(partitions = ?msg.partitions, dropped,
            "bucket partitions given up: what was held of them is read again by their next owner");
    }
}

impl Handler<Refused> for Republisher {
    type Result = ();

    /// Never sent: the Republisher's connection commits no transactions.
    fn handle(&mut self, Refused(records): Refused, _: &mut Context<Self>) {
        tracing::error!(
            records = records.len(),
            "bucket records refused as a transaction's: left uncommitted, read again"
        );
    }
}

impl Handler<Shutdown> for Republisher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stopping = true;
        if self.writing == 0 {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let wait = self.delivery_timeout;
        Box::pin(
            async move {
                let _ = tokio::time::timeout(wait, rx).await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
