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
//! A bucket record is reported finished to the connection (and so becomes
//! committable) only once the write that replaces it is acknowledged.
//!
//! Messages: `Deliver` (bucket records from the connection), `Released`
//! (bucket partitions given up: what it holds of them is dropped at once,
//! never forwarded; the next owner reads it again), `TakeFinished` (writes
//! finished: their answers wait in a shared list, one message per batch),
//! `Shutdown` (stop taking records, wait for the writes under way, within
//! the delivery timeout). Writes go to its producer connection as one
//! `ProduceBatch` per turn, each answering through a [`ForwardReply`] (no
//! task, channel or message per record); finished bucket records go to the
//! consumer connection in one `Completed` per batch.
//!
//! Owns: the per-partition queues of records read and not yet released,
//! and the timer of records released and not yet due. Nothing of it is
//! durable: a restarted Republisher gets every unfinished record from the
//! connection again (`Ready`), so nothing pending is lost; a
//! record whose write was acknowledged but not yet reported may be written
//! twice (at-least-once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};
use tokio::sync::oneshot;

use crate::broker::WriteResult;
use crate::buckets::{DelayHeaders, Plan};
use crate::connection::consumer::{ConsumerConnection, Hold};
use crate::connection::producer::{hand_over, ProducerConnection, Write, WriteReply};
use crate::connection::protocol::{Arrival, Deliver, Feed, Ready, Refused, Released, Stamp};
use crate::dead_letter::{self, DeadLetter, DeadLetterRecord, FailureKind};
use crate::envelope::{now_ms, OutgoingRecord, Record, TopicPartition};
use crate::error::Result;
use crate::observe::metrics::{Metrics, PerTopic};
use crate::observe::trace::{batch_span, Batch};
use crate::topics;
use prometheus::IntCounter;

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

/// What a bucket record says about itself.
pub(crate) struct Due {
    /// When it may be delivered, ms since the Unix epoch.
    deliver_at: i64,
    /// When it leaves its bucket, ms since the Unix epoch.
    released_at: i64,
    destination: Arc<str>,
    partition: Option<i32>,
}

/// Reads the delay headers of a bucket record, or says what is wrong with them.
pub(crate) fn due_of(plan: &Plan, record: &Record) -> std::result::Result<Due, String> {
    let DelayHeaders {
        deliver_at,
        destination,
        partition,
    } = DelayHeaders::read(&record.headers)?;
    let length = plan.length_of(&record.topic).unwrap_or_default();
    let released_at = record
        .timestamp_ms
        .max(0)
        .saturating_add(length.as_millis() as i64)
        .min(deliver_at);
    Ok(Due {
        deliver_at,
        released_at,
        destination,
        partition,
    })
}

/// The queue of one bucket partition: records read and not yet released.
#[derive(Default)]
struct Queue {
    records: VecDeque<Arc<Record>>,
    /// The timer for the head's release, and that time.
    wakeup: Option<(i64, SpawnHandle)>,
}

/// A write of a released record finished.
struct Forwarded {
    record: Arc<Record>,
    target: Target,
    /// When and from where its bucket record was taken.
    stamp: Stamp,
    result: Result<()>,
}

/// Writes finished and not yet taken by their Republisher incarnation:
/// filled by the writes' replies wherever the answers come from, taken in
/// one [`TakeFinished`] per batch.
pub(crate) struct Finished {
    done: Mutex<Vec<Forwarded>>,
    republisher: Recipient<TakeFinished>,
}

impl Finished {
    fn push(&self, forwarded: Forwarded) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push(forwarded);
        if done.len() == 1 {
            self.republisher.do_send(TakeFinished);
        }
    }
}

/// The answer of one Republisher write, given by the producer connection.
pub(crate) struct ForwardReply {
    record: Arc<Record>,
    target: Target,
    stamp: Stamp,
    finished: Arc<Finished>,
}

impl WriteReply for ForwardReply {
    fn answer(self, result: WriteResult) {
        let ForwardReply {
            record,
            target,
            stamp,
            finished,
        } = self;
        finished.push(Forwarded {
            record,
            target,
            stamp,
            result: result.map(|_| ()).map_err(|failed| failed.error),
        });
    }
}

/// Take the finished writes ([`Finished`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeFinished;

/// Hand the writes gathered this turn to the producer connection.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushWrites;

pub(crate) struct Republisher {
    plan: Arc<Plan>,
    group: Arc<str>,
    delivery_timeout: Duration,
    connection: ChildRef<ConsumerConnection>,
    producer: ChildRef<ProducerConnection<ForwardReply>>,
    dead_letter: ChildRef<DeadLetter>,
    /// The connection feeding us, and the bucket partitions given up.
    feed: Feed,
    queues: HashMap<TopicPartition, Queue>,
    /// Released records waiting for their `x-deliver-at`, in due order
    /// (ties in the order they were released).
    due: BTreeMap<(i64, u64), (Arc<Record>, Target)>,
    released: u64,
    due_timer: Option<(i64, SpawnHandle)>,
    /// Writes under way.
    writing: usize,
    /// Writes gathered this turn, handed over together.
    outbox: Vec<Write<ForwardReply>>,
    /// Where this incarnation's writes answer (set once it started).
    finished: Option<Arc<Finished>>,
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
            outbox: Vec::new(),
            finished: None,
            stopping: false,
            metrics,
            counters: PerTopic::default(),
            drained: None,
        }
    }

    /// Releases the partition's records from the head on, up to the first
    /// that must stay in its bucket longer.
    fn release(&mut self, tp: &TopicPartition, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        loop {
            let Some(queue) = self.queues.get_mut(tp) else {
                return;
            };
            let Some(head) = queue.records.front() else {
                return;
            };
            let target = match due_of(&self.plan, head) {
                Err(reason) => Target::DeadLetter(reason),
                Ok(due) if due.released_at > now => {
                    self.wait_for(tp.clone(), due.released_at, now, ctx);
                    return;
                }
                Ok(due) => {
                    let destination = Target::Destination {
                        topic: due.destination,
                        partition: due.partition,
                    };
                    if due.deliver_at <= now {
                        destination
                    } else {
                        let remaining = Duration::from_millis((due.deliver_at - now) as u64);
                        match self.plan.next_bucket(remaining) {
                            Some(bucket) => Target::Bucket(bucket.topic.clone()),
                            None => {
                                let record = queue.records.pop_front().expect("head");
                                self.released += 1;
                                self.due
                                    .insert((due.deliver_at, self.released), (record, destination));
                                self.arm_due_timer(ctx);
                                continue;
                            }
                        }
                    }
                }
            };
            let record = queue.records.pop_front().expect("head");
            self.write(record, target, ctx);
        }
    }

    /// Keeps the partition's head until `released_at`: the connection
    /// pauses the partition and one timer wakes us then.
    fn wait_for(
        &mut self,
        tp: TopicPartition,
        released_at: i64,
        now: i64,
        ctx: &mut Context<Self>,
    ) {
        let queue = self.queues.entry(tp.clone()).or_default();
        if queue
            .wakeup
            .as_ref()
            .is_some_and(|(at, _)| *at == released_at)
        {
            return;
        }
        if let Some((_, handle)) = queue.wakeup.take() {
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis((released_at - now) as u64);
        if wait >= HOLD_MIN + PREFETCH_LEAD {
            if let Some(connection) = self.connection.get() {
                connection.do_send(Hold {
                    partition: tp.clone(),
                    until: Instant::now() + (wait - PREFETCH_LEAD),
                });
            }
        }
        let woken = tp.clone();
        let handle = ctx.run_later(wait, move |act, ctx| {
            if let Some(q) = act.queues.get_mut(&woken) {
                q.wakeup = None;
            }
            act.release(&woken, ctx);
        });
        self.queues.get_mut(&tp).expect("queue").wakeup = Some((released_at, handle));
    }

    /// One timer, for the earliest record held until it is due.
    fn arm_due_timer(&mut self, ctx: &mut Context<Self>) {
        let Some((&(first, _), _)) = self.due.first_key_value() else {
            return;
        };
        if let Some((at, handle)) = self.due_timer {
            if at <= first {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis((first - now_ms()).max(0) as u64);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.due_timer = None;
            act.deliver_due(ctx);
        });
        self.due_timer = Some((first, handle));
    }

    /// Writes every held record that is due, in due order.
    fn deliver_due(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (record, target) = entry.remove();
            self.write(record, target, ctx);
        }
        self.arm_due_timer(ctx);
    }

    /// Writes a released record where it goes; the bucket record is
    /// finished once the write is acknowledged.
    fn write(&mut self, record: Arc<Record>, target: Target, ctx: &mut Context<Self>) {
        let stamp = self.feed.stamp(&record);
        self.write_stamped(record, target, stamp, ctx)
    }

    /// Writes a record taken at `stamp` (its work counts only while the
    /// feed says that is current).
    fn write_stamped(
        &mut self,
        record: Arc<Record>,
        target: Target,
        stamp: Stamp,
        ctx: &mut Context<Self>,
    ) {
        let Some(finished) = self.finished.clone() else {
            return; // not started: cannot happen once it handles messages
        };
        self.writing += 1;
        let (topic, partition, delivered) = match &target {
            Target::DeadLetter(reason) => {
                tracing::warn!(topic = %record.topic, partition = record.partition,
                    offset = record.offset, %reason, "bad delay-bucket record: dead-lettering it");
                let request = DeadLetterRecord {
                    record: record.clone(),
                    topic: Arc::from(topics::dead_letter(&record.topic, None)),
                    group: self.group.clone(),
                    kind: FailureKind::Decode,
                    reason: reason.clone(),
                    attempts: 1,
                };
                let sent = dead_letter::send(&self.dead_letter, request, self.delivery_timeout);
                actix_rt::spawn(async move {
                    let result = sent.await;
                    finished.push(Forwarded {
                        record,
                        target,
                        stamp,
                        result,
                    });
                });
                return;
            }
            Target::Destination { topic, partition } => (topic.clone(), *partition, true),
            Target::Bucket(topic) => (topic.clone(), None, false),
        };
        // Into a bucket the record goes untouched; to its destination
        // without the delay headers.
        let mut headers = record.headers.clone();
        if delivered {
            DelayHeaders::remove(&mut headers);
        }
        let out = OutgoingRecord {
            topic,
            partition,
            key: record.key.clone(),
            headers,
            payload: record.payload_or_null(),
            // In a bucket, its time there counts from now.
            timestamp_ms: now_ms(),
        };
        let reply = ForwardReply {
            record,
            target,
            stamp,
            finished,
        };
        if self.outbox.is_empty() {
            // Handed over once this turn is done: one batch per turn.
            ctx.notify(FlushWrites);
        }
        self.outbox.push(Write::new(out, reply));
    }

    fn after_write(&mut self) {
        self.writing -= 1;
        if self.writing == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for Republisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.finished = Some(Arc::new(Finished {
            done: Mutex::new(Vec::new()),
            republisher: ctx.address().recipient(),
        }));
        // A restarted Republisher asks for every unfinished bucket record.
        if let Some(connection) = self.connection.get() {
            connection.do_send(Ready);
        }
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

impl Handler<FlushWrites> for Republisher {
    type Result = ();

    fn handle(&mut self, _: FlushWrites, ctx: &mut Context<Self>) {
        let writes = std::mem::take(&mut self.outbox);
        if writes.is_empty() {
            return;
        }
        let span = batch_span(Batch::Republish, None, writes.len());
        let _entered = span.enter();
        hand_over(&self.producer, writes, self.delivery_timeout, ctx);
    }
}

impl Handler<TakeFinished> for Republisher {
    type Result = ();

    fn handle(&mut self, _: TakeFinished, ctx: &mut Context<Self>) {
        let Some(finished) = self.finished.clone() else {
            return;
        };
        let done = std::mem::take(&mut *finished.done.lock().unwrap_or_else(|e| e.into_inner()));
        let mut completed = Vec::with_capacity(done.len());
        for forwarded in done {
            self.after_write();
            if !self.feed.is_current(forwarded.stamp, &forwarded.record) {
                // That connection is gone, or the partition was given up: the
                // record is read again by whoever reads it next.
                continue;
            }
            match forwarded.result {
                Ok(()) => {
                    let metrics = &self.metrics;
                    let counters = self.counters.get(&forwarded.record.topic, |bucket| {
                        Arc::new(
                            ["destination", "bucket", "dead_letter"]
                                .map(|target| metrics.republished(bucket, target)),
                        )
                    });
                    counters[match forwarded.target {
                        Target::Destination { .. } => 0,
                        Target::Bucket(_) => 1,
                        Target::DeadLetter(_) => 2,
                    }]
                    .inc();
                    completed.push(forwarded.record)
                }
                Err(e) => {
                    let record = forwarded.record;
                    let target = match forwarded.target {
                        // A destination that refuses the record for good: dead-letter it.
                        Target::Destination { .. } | Target::Bucket(_) if !e.is_retriable() => {
                            Target::DeadLetter(format!("cannot republish: {e}"))
                        }
                        other => other,
                    };
                    tracing::error!(topic = %record.topic, offset = record.offset, error = %e,
                        "delayed record not written; it stays uncommitted and is written again");
                    self.writing += 1; // the rewrite below is under way already
                    let stamp = forwarded.stamp;
                    ctx.run_later(REWRITE_BACKOFF, move |act, ctx| {
                        act.after_write();
                        // Not when its partition was given up meanwhile:
                        // its next owner writes it.
                        if !act.stopping && act.feed.is_current(stamp, &record) {
                            act.write_stamped(record, target, stamp, ctx);
                        }
                    });
                }
            }
        }
        self.feed.complete(completed, Vec::new());
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
