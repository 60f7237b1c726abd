//! Retries through the group's retry topic ([`RetryTopic`]): a failed
//! attempt is written to the retry partition of its partition's number,
//! with its attempts so far (`x-attempt`) and when it is due
//! (`x-not-before`), and its record is finished once the retry topic holds
//! it; its lane goes on at once.
//!
//! Ordered: the key of a record in the retry path is *parked* in its
//! partition. Later records of the key (queued on its lane, or delivered
//! after) follow it: they are written to the retry partition behind it
//! (`x-attempt` 0) instead of being handled, while other keys flow. Each
//! retry partition is handled one record at a time, in offset order, each
//! once due; one that fails again waits there for its next attempt (the
//! records behind it in its retry partition wait too: head of line), so
//! nothing of its key overtakes it. A key is released once no record of it
//! is left in the retry path.
//!
//! What is parked is rebuilt from the log: the connection holds a newly
//! assigned partition until its retry partition is read to its end
//! (`connection/consumer/rebuild.rs`), and every record read from a retry
//! partition counts for its key. The counts ([`Parking`]) outlive a
//! Dispatcher restart (the connection hands the new incarnation every
//! unfinished record again: those read before are not counted twice) and
//! are dropped with a new connection incarnation (which reads everything
//! unfinished again) or with the partitions given up.
//!
//! Bounds: past `max_parked_keys` keys, or a key parked longer than
//! `max_park_age`, the partition is held (no more records read from it)
//! until it is back under both.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use super::Dispatcher;
use crate::broker::WriteResult;
use crate::connection::consumer::Hold;
use crate::connection::protocol::{GivenUp, Stamp};
use crate::envelope::{header, now_ms, OutgoingRecord, Record, TopicPartition};
use crate::subscription::lane::Job;
use crate::subscription::retry::RetryTopic;

/// How long to wait before writing a record to the retry topic again after
/// the write failed.
const REWRITE_AFTER: Duration = Duration::from_millis(200);

/// How long a partition is held past a parking bound before it is looked at again.
const BOUND_CHECK: Duration = Duration::from_secs(1);

/// The parking of a subscription retrying through topics, shared by its
/// Dispatcher incarnations.
pub(crate) type SharedParking = Rc<RefCell<Parking>>;

/// One parked key of a partition.
#[derive(Debug)]
struct Parked {
    /// Its records in the retry partition, written or read, not finished.
    count: u32,
    /// Its writes to the retry partition under way.
    pending: u32,
    /// Writes an earlier Dispatcher incarnation had under way: their
    /// answers are lost, and they may have landed unread (each record read
    /// from the retry partition that this member did not see written is
    /// one of them); they keep the key parked until read, or until they
    /// cannot be under way any more ([`Parking::orphans_until`]).
    orphans: u32,
    /// Since when it is parked.
    since: Instant,
}

impl Parked {
    /// Records of it in the retry path, known or maybe.
    fn total(&self) -> u32 {
        self.count + self.pending + self.orphans
    }
}

/// One retry partition as the Dispatcher handles it: one record at a time.
#[derive(Debug, Default)]
struct RetryQueue {
    /// Read and not started, in offset order.
    records: VecDeque<(Arc<Record>, Stamp)>,
    /// A record of it is under way (handled, or written again).
    busy: bool,
    /// Its head is not due yet: a wake-up is set.
    waiting: bool,
    /// The record under way that failed again and waits for its next
    /// attempt (it holds no lane meanwhile).
    retrying: Option<i64>,
    /// Being revoked: nothing more of it starts here.
    revoking: bool,
}

/// What a subscription retrying through topics knows of its retry path.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    /// The connection incarnation whose records it counted.
    fed_by: Option<u64>,
    /// Parked keys, by partition (of the subscribed topic).
    keys: FxHashMap<TopicPartition, FxHashMap<Option<Bytes>, Parked>>,
    /// Retry partitions: how far each was read (the next offset).
    read_to: FxHashMap<TopicPartition, i64>,
    /// The records of retry partitions counted for their keys and not
    /// finished (seen written or read; a record counts once however often
    /// it is delivered or finished).
    counted: FxHashSet<(TopicPartition, i64)>,
    queues: FxHashMap<TopicPartition, RetryQueue>,
    /// Partitions held for a parking bound.
    bounded: FxHashSet<TopicPartition>,
    /// Until when writes of an earlier Dispatcher incarnation may still
    /// land ([`Parked::orphans`]).
    orphans_until: Option<Instant>,
}

/// Why a record is written to the retry topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// It failed: attempts so far, due after the backoff.
    Failed { attempts: u32, due_ms: i64 },
    /// It follows its parked key (its attempts so far kept).
    Follows,
}

impl Parking {
    pub(crate) fn shared() -> SharedParking {
        Rc::new(RefCell::new(Parking::default()))
    }

    fn parked(&mut self, source: &TopicPartition, key: &Option<Bytes>) -> Option<&mut Parked> {
        self.keys.get_mut(source)?.get_mut(key)
    }

    fn is_parked(&self, source: &TopicPartition, key: &Option<Bytes>) -> bool {
        self.keys
            .get(source)
            .and_then(|keys| keys.get(key))
            .is_some_and(|p| p.total() > 0)
    }

    fn entry(&mut self, source: &TopicPartition, key: &Option<Bytes>) -> &mut Parked {
        self.keys
            .entry(source.clone())
            .or_default()
            .entry(key.clone())
            .or_insert_with(|| Parked {
                count: 0,
                pending: 0,
                orphans: 0,
                since: Instant::now(),
            })
    }

    /// Writes of an earlier incarnation can no longer be under way: the
    /// keys they kept parked go, unless something else keeps them.
    fn expire_orphans(&mut self) {
        if self
            .orphans_until
            .is_none_or(|until| Instant::now() < until)
        {
            return;
        }
        self.orphans_until = None;
        for keys in self.keys.values_mut() {
            for parked in keys.values_mut() {
                parked.orphans = 0;
            }
            keys.retain(|_, p| p.total() > 0);
        }
        self.keys.retain(|_, keys| !keys.is_empty());
    }

    /// The partitions with parked keys.
    pub(super) fn parked_partitions(&self) -> Vec<TopicPartition> {
        self.keys
            .keys()
            .chain(self.bounded.iter())
            .cloned()
            .collect()
    }

    /// Releases `key` when nothing of it is left in the retry path.
    fn release_if_done(&mut self, source: &TopicPartition, key: &Option<Bytes>) {
        let Some(keys) = self.keys.get_mut(source) else {
            return;
        };
        if keys.get(key).is_some_and(|p| p.total() == 0) {
            keys.remove(key);
        }
        if keys.is_empty() {
            self.keys.remove(source);
        }
    }
}

/// `n` from a header, when it is a number.
fn number(record: &Record, name: &str) -> Option<i64> {
    record.headers.get_str(name).and_then(|v| v.parse().ok())
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Whether `record` was read from a retry topic of a subscription
    /// retrying through topics.
    pub(super) fn is_retry_record(&self, record: &Record) -> bool {
        self.parking.is_some() && self.is_retry_topic(&record.topic)
    }

    /// Whether `topic` is one of the subscription's retry topics.
    fn is_retry_topic(&self, topic: &str) -> bool {
        self.settings.retry_topics.source_of(topic).is_some()
    }

    /// The retry topic of records of `topic`.
    fn retry_topic_of(&self, topic: &str) -> Option<Arc<str>> {
        self.settings.retry_topics.retry_of(topic).cloned()
    }

    fn ordered(&self) -> bool {
        self.settings.retry.retry_topic() == Some(RetryTopic::Ordered)
    }

    /// The partition of the subscribed topic `record` counts for: its own,
    /// or, for a record of a retry topic, its source's of the same number.
    fn source_partition(&self, record: &Record) -> TopicPartition {
        self.source_of_partition(&record.topic, record.partition)
    }

    /// Partition `partition` of `topic` (a retry topic's: of its source).
    fn source_of_partition(&self, topic: &Arc<str>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: self
                .settings
                .retry_topics
                .source_of(topic)
                .map_or_else(|| topic.clone(), Arc::clone),
            partition,
        }
    }

    /// A batch arrives from connection incarnation `incarnation` (fresh to
    /// this Dispatcher incarnation when `fresh`): a new connection reads
    /// everything unfinished again, so what was counted goes; a restarted
    /// Dispatcher gets the unfinished records again, so its queues go.
    pub(super) fn retries_fed(&mut self, incarnation: u64, fresh: bool) {
        let Some(parking) = &self.parking else {
            return;
        };
        let mut parking = parking.borrow_mut();
        if parking.fed_by != Some(incarnation) {
            *parking = Parking {
                fed_by: Some(incarnation),
                ..Parking::default()
            };
        } else if fresh {
            parking.queues.clear();
            for keys in parking.keys.values_mut() {
                for parked in keys.values_mut() {
                    // Writes the old incarnation had under way: their
                    // records are delivered again and written again, and
                    // may have landed too.
                    parked.orphans += std::mem::take(&mut parked.pending);
                }
            }
            let margin = Duration::from_secs(5);
            parking.orphans_until = Some(Instant::now() + self.settings.delivery_timeout + margin);
        } else {
            parking.expire_orphans();
        }
    }

    /// Takes `record` into the retry path when it belongs there (read from
    /// a retry topic, or of a parked key); false: it is queued as usual.
    pub(super) fn take_for_retries(
        &mut self,
        record: &Arc<Record>,
        stamp: Stamp,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(parking) = self.parking.clone() else {
            return false;
        };
        if self.is_retry_topic(&record.topic) {
            let retry = record.topic_partition();
            if parking
                .borrow()
                .queues
                .get(&retry)
                .is_some_and(|q| q.revoking)
            {
                self.give_up(vec![(retry, record.offset)]);
                return true;
            }
            self.read_from_retry(record.clone(), stamp, &parking);
            self.pump(record.topic_partition(), ctx);
            return true;
        }
        if !self.ordered() {
            return false;
        }
        let source = record.topic_partition();
        if !parking.borrow().is_parked(&source, &record.key) {
            return false;
        }
        self.write_to_retry(record.clone(), stamp, Writing::Follows, None, ctx);
        true
    }

    /// A record read from a retry partition: counted for its key (unless
    /// this member wrote it, or read it before), queued.
    fn read_from_retry(&mut self, record: Arc<Record>, stamp: Stamp, parking: &SharedParking) {
        let retry = record.topic_partition();
        let source = self.source_partition(&record);
        let ordered = self.ordered();
        let mut parking = parking.borrow_mut();
        let read_to = parking.read_to.entry(retry.clone()).or_insert(0);
        let new = record.offset >= *read_to;
        *read_to = (*read_to).max(record.offset + 1);
        if ordered && new && parking.counted.insert((retry.clone(), record.offset)) {
            let parked = parking.entry(&source, &record.key);
            parked.count += 1;
            // Written by an earlier incarnation, if one's write was lost.
            parked.orphans = parked.orphans.saturating_sub(1);
        }
        parking
            .queues
            .entry(retry)
            .or_default()
            .records
            .push_back((record, stamp));
    }

    /// Starts the next record of retry partition `retry` when none is under
    /// way and it is due.
    fn pump(&mut self, retry: TopicPartition, ctx: &mut Context<Self>) {
        let Some(parking) = self.parking.clone() else {
            return;
        };
        let (record, stamp) = {
            let mut parking = parking.borrow_mut();
            let Some(queue) = parking.queues.get_mut(&retry) else {
                return;
            };
            if queue.busy || queue.waiting || queue.revoking {
                return;
            }
            let Some((record, _)) = queue.records.front() else {
                return;
            };
            let due = number(record, header::NOT_BEFORE).unwrap_or(0);
            let wait = due - now_ms();
            if wait > 0 {
                queue.waiting = true;
                let retry = retry.clone();
                ctx.run_later(Duration::from_millis(wait as u64), move |act, ctx| {
                    if let Some(parking) = &act.parking {
                        if let Some(queue) = parking.borrow_mut().queues.get_mut(&retry) {
                            queue.waiting = false;
                        }
                    }
                    act.pump(retry, ctx);
                });
                return;
            }
            let Some(next) = queue.records.pop_front() else {
                return;
            };
            queue.busy = true;
            next
        };
        if !self.feed.is_current(stamp, &record) {
            // Read again by whoever reads it next.
            return self.retry_idle(&retry, ctx);
        }
        // Its turn: handled on its key's lane, with its attempts so far.
        let attempts = number(&record, header::ATTEMPT).unwrap_or(0).max(0) as u32;
        self.queue_on_lane(record, stamp, attempts + 1);
    }

    /// Queues a record of a retry partition on its key's lane for attempt
    /// `attempt`.
    fn queue_on_lane(&mut self, record: Arc<Record>, stamp: Stamp, attempt: u32) {
        let mut board = self.board.borrow_mut();
        let i = self.settings.lane_of(&record, 0, board.lanes.len());
        board.lanes[i].queue.push_back(Job {
            record,
            stamp,
            attempt,
            dispatcher: self.incarnation,
            copy: false,
        });
        drop(board);
        self.wake_lanes();
    }

    /// Nothing of retry partition `retry` is under way any more: its next
    /// record goes.
    fn retry_idle(&mut self, retry: &TopicPartition, ctx: &mut Context<Self>) {
        if let Some(parking) = &self.parking {
            if let Some(queue) = parking.borrow_mut().queues.get_mut(retry) {
                queue.busy = false;
            }
        }
        self.pump(retry.clone(), ctx);
    }

    /// `record`'s fate is final: when it was read from a retry partition,
    /// its key counts one record less and the partition's next one goes.
    pub(super) fn retry_finished(&mut self, record: &Record, ctx: &mut Context<Self>) {
        let Some(parking) = self.parking.clone() else {
            return;
        };
        if !self.is_retry_topic(&record.topic) {
            return;
        }
        let retry = record.topic_partition();
        let source = self.source_partition(record);
        {
            let mut parking = parking.borrow_mut();
            if let Some(queue) = parking.queues.get_mut(&retry) {
                queue.busy = false;
            }
            // Once: a record finished before and delivered again (its
            // completion not reported when its Dispatcher stopped) counts
            // no more.
            if parking.counted.remove(&(retry.clone(), record.offset)) {
                if let Some(parked) = parking.parked(&source, &record.key) {
                    parked.count = parked.count.saturating_sub(1);
                }
            }
            parking.release_if_done(&source, &record.key);
        }
        self.check_bounds(&source);
        self.pump(retry, ctx);
    }

    /// `job` failed and may be tried again: written to the retry topic,
    /// due after the backoff; with order kept, its key is parked and its
    /// later records queued on lane `i` follow it there. A record of a
    /// retry partition that failed again waits for its next attempt at the
    /// head of its retry partition, its lane free meanwhile.
    pub(super) fn retry_through_topic(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        let backoff = self.settings.retry.backoff(job.attempt);
        if self.is_retry_topic(&job.record.topic) {
            self.count(&job.record.topic, |c| c.retried.inc());
            self.release_lane(i);
            let Job {
                record,
                stamp,
                attempt,
                ..
            } = job;
            let retry = record.topic_partition();
            self.queue_mut(&retry, |q| q.retrying = Some(record.offset));
            ctx.run_later(backoff, move |act, _| {
                let mut revoking = false;
                act.queue_mut(&retry, |q| {
                    q.retrying = None;
                    revoking = q.revoking;
                });
                // A stale record's retry partition was given up or read
                // anew meanwhile: nothing of it is this record's any more.
                // One being revoked was given up with its partition.
                if !revoking && act.feed.is_current(stamp, &record) {
                    act.queue_on_lane(record, stamp, attempt + 1);
                }
            });
            return;
        }
        let writing = Writing::Failed {
            attempts: job.attempt,
            due_ms: now_ms() + backoff.as_millis() as i64,
        };
        let source = self.source_partition(&job.record);
        let key = job.record.key.clone();
        let (record, stamp) = (job.record.clone(), job.stamp);
        self.write_to_retry(record, stamp, writing, Some(i), ctx);
        if !self.ordered() {
            return;
        }
        // Its key's records queued behind it follow it, in order.
        let followers: Vec<Job> = {
            let mut board = self.board.borrow_mut();
            let queue = &mut board.lanes[i].queue;
            let (follow, stay): (VecDeque<Job>, VecDeque<Job>) =
                std::mem::take(queue).into_iter().partition(|queued| {
                    queued.record.key == key && queued.record.topic_partition() == source
                });
            *queue = stay;
            follow.into()
        };
        for follower in followers {
            self.write_to_retry(follower.record, follower.stamp, Writing::Follows, None, ctx);
        }
    }

    /// Writes `record` to its retry partition; it is finished once written
    /// (its lane `lane`, when it holds one, goes on then).
    fn write_to_retry(
        &mut self,
        record: Arc<Record>,
        stamp: Stamp,
        writing: Writing,
        lane: Option<usize>,
        ctx: &mut Context<Self>,
    ) {
        if self.ordered() {
            let source = self.source_partition(&record);
            if let Some(parking) = &self.parking {
                let mut parking = parking.borrow_mut();
                parking.entry(&source, &record.key).pending += 1;
            }
            self.check_bounds(&source);
        }
        self.send_to_retry(record, stamp, writing, lane, ctx);
    }

    /// Hands the write of `record` to the producer connection (again, after
    /// a failed write: still counted as under way for its key).
    fn send_to_retry(
        &mut self,
        record: Arc<Record>,
        stamp: Stamp,
        writing: Writing,
        lane: Option<usize>,
        ctx: &mut Context<Self>,
    ) {
        let source = self.source_partition(&record);
        // Every subscribed topic of a subscription retrying through topics
        // has its retry topic.
        let Some(retry_topic) = self.retry_topic_of(&source.topic) else {
            return;
        };
        let out = retry_record(&record, retry_topic, writing);
        let write = self
            .settings
            .writer
            .write(out, self.settings.delivery_timeout);
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            act.written_to_retry(record, stamp, writing, lane, written, ctx)
        }));
    }

    /// The retry-topic write of `record` answered.
    fn written_to_retry(
        &mut self,
        record: Arc<Record>,
        stamp: Stamp,
        writing: Writing,
        lane: Option<usize>,
        written: WriteResult,
        ctx: &mut Context<Self>,
    ) {
        let source = self.source_partition(&record);
        let stamp_live = self.feed.is_current(stamp, &record);
        // A write that failed and is written again stays under way: its key
        // stays parked meanwhile.
        let again = written.is_err() && stamp_live;
        if let Some(parking) = self.parking.clone().filter(|_| !again) {
            let mut parking = parking.borrow_mut();
            if let Some(parked) = parking.parked(&source, &record.key) {
                parked.pending = parked.pending.saturating_sub(1);
            }
            if let Ok(delivered) = &written {
                let retry = TopicPartition {
                    topic: self.retry_topic_of(&source.topic).unwrap_or_default(),
                    partition: delivered.partition,
                };
                let read = parking.read_to.get(&retry).copied().unwrap_or(0);
                // Counted when written (not again when read), unless read
                // already.
                if self.ordered()
                    && delivered.offset >= read
                    && parking.counted.insert((retry, delivered.offset))
                {
                    parking.entry(&source, &record.key).count += 1;
                }
            }
            parking.release_if_done(&source, &record.key);
        }
        let job = Job {
            record,
            stamp,
            attempt: 1,
            dispatcher: self.incarnation,
            copy: false,
        };
        match written {
            Ok(_) => {
                if let Writing::Failed { .. } = writing {
                    self.count(&job.record.topic, |c| c.retried.inc());
                }
                self.complete(lane, job, ctx);
            }
            Err(failed) if stamp_live => {
                tracing::warn!(group = %self.settings.group, topic = %job.record.topic,
                    partition = job.record.partition, offset = job.record.offset,
                    error = %failed.error, "writing to the retry topic failed; writing again");
                ctx.run_later(REWRITE_AFTER, move |act, ctx| {
                    act.send_to_retry(job.record, job.stamp, writing, lane, ctx)
                });
            }
            Err(_) => {
                self.abandon(&job.record, ctx);
                if let Some(i) = lane {
                    self.release_lane(i);
                }
            }
        }
    }

    /// Changes the queue of retry partition `retry`, if it has one.
    fn queue_mut(&self, retry: &TopicPartition, change: impl FnOnce(&mut RetryQueue)) {
        if let Some(parking) = &self.parking {
            if let Some(queue) = parking.borrow_mut().queues.get_mut(retry) {
                change(queue);
            }
        }
    }

    /// Retry partitions being revoked: the records of each not started
    /// (waiting for their due time, or for their next attempt) are given
    /// up, so that the revocation does not wait for them; their next owner
    /// reads them again. The record being handled finishes first.
    pub(super) fn retries_revoking(&mut self, partitions: &[TopicPartition]) {
        let Some(parking) = self.parking.clone() else {
            return;
        };
        let mut given_up = Vec::new();
        {
            let mut parking = parking.borrow_mut();
            for tp in partitions {
                if !self.is_retry_topic(&tp.topic) {
                    continue;
                }
                let queue = parking.queues.entry(tp.clone()).or_default();
                queue.revoking = true;
                let first = queue
                    .retrying
                    .or_else(|| queue.records.front().map(|(r, _)| r.offset));
                queue.records.clear();
                if let Some(offset) = first {
                    given_up.push((tp.clone(), offset));
                }
            }
        }
        self.give_up(given_up);
    }

    /// Tells the connection that the records of revoked partitions from
    /// these offsets on will not be started here.
    fn give_up(&self, given_up: Vec<(TopicPartition, i64)>) {
        if given_up.is_empty() {
            return;
        }
        tracing::debug!(group = %self.settings.group, ?given_up,
            "revoked: giving up the retry records not started");
        if let Some(connection) = self.connection.get() {
            connection.do_send(GivenUp(given_up));
        }
    }

    /// Holds `source` while it is past a parking bound, and lets it go once
    /// it is back under both.
    pub(super) fn check_bounds(&mut self, source: &TopicPartition) {
        let Some(parking) = self.parking.clone() else {
            return;
        };
        let (max_keys, max_age) = self.settings.retry.parking_bounds();
        let mut parking = parking.borrow_mut();
        let (keys, oldest) = parking.keys.get(source).map_or((0, None), |keys| {
            (keys.len(), keys.values().map(|p| p.since).min())
        });
        if self.settings.metrics.on() {
            let partition = source.partition.to_string();
            let labels = [&*self.settings.group, &*source.topic, &partition];
            let collectors = self.settings.metrics.collectors();
            collectors
                .parked_keys
                .with_label_values(&labels)
                .set(keys as i64);
            let age = oldest.map_or(0, |since| since.elapsed().as_secs() as i64);
            collectors.parked_oldest.with_label_values(&labels).set(age);
        }
        let past = keys > max_keys || oldest.is_some_and(|since| since.elapsed() > max_age);
        let held = parking.bounded.contains(source);
        if past == held {
            return;
        }
        let until = if past {
            tracing::warn!(group = %self.settings.group, partition = %source, keys,
                "parking bound reached: the partition is held until keys are released");
            parking.bounded.insert(source.clone());
            Instant::now() + BOUND_CHECK * 3600
        } else {
            parking.bounded.remove(source);
            Instant::now()
        };
        if let Some(connection) = self.connection.get() {
            connection.do_send(Hold {
                partition: source.clone(),
                until,
            });
        }
    }

    /// Forgets what is parked and queued of partitions given up.
    pub(super) fn retries_released(&mut self, partitions: &[TopicPartition]) {
        let Some(parking) = &self.parking else {
            return;
        };
        let mut parking = parking.borrow_mut();
        let sources: Vec<TopicPartition> = partitions
            .iter()
            .map(|tp| self.source_of_partition(&tp.topic, tp.partition))
            .collect();
        parking.keys.retain(|tp, _| !sources.contains(tp));
        parking.bounded.retain(|tp| !sources.contains(tp));
        parking.queues.retain(|tp, _| !partitions.contains(tp));
        parking.read_to.retain(|tp, _| !partitions.contains(tp));
        parking.counted.retain(|(tp, _)| !partitions.contains(tp));
    }
}

/// `record` as its retry partition takes it: the partition of its number,
/// its key, payload and headers, with its provenance (where it was first
/// read), its attempts so far and when it is due.
fn retry_record(record: &Record, retry_topic: Arc<str>, writing: Writing) -> OutgoingRecord {
    let mut headers = record.headers.clone();
    if !headers.contains(header::NOT_BEFORE) {
        // Read from the subscribed topic: where it comes from.
        headers.insert(header::ORIGINAL_TOPIC, record.topic.to_string());
        headers.insert(header::ORIGINAL_PARTITION, record.partition.to_string());
        headers.insert(header::ORIGINAL_OFFSET, record.offset.to_string());
    }
    match writing {
        Writing::Failed { attempts, due_ms } => {
            headers.insert(header::ATTEMPT, attempts.to_string());
            headers.insert(header::NOT_BEFORE, due_ms.to_string());
        }
        Writing::Follows => {
            if !headers.contains(header::ATTEMPT) {
                headers.insert(header::ATTEMPT, "0");
            }
            if !headers.contains(header::NOT_BEFORE) {
                headers.insert(header::NOT_BEFORE, "0");
            }
        }
    }
    OutgoingRecord {
        topic: retry_topic,
        partition: Some(record.partition),
        key: record.key.clone(),
        headers,
        payload: record.payload_or_null(),
        timestamp_ms: record.timestamp_ms,
    }
}
