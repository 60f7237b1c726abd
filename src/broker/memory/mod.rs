//! The embedded broker: Kafka's semantics in memory. Topics are auto-created
//! on first use; each partition is an append-only log; keys are partitioned
//! with Kafka's murmur2; consumer groups assign partitions to members and
//! rebalance cooperatively (a partition moves only after its old owner has
//! committed and released it); committed offsets are kept per group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{self, BoxFuture, FutureExt};
use rustc_hash::FxHashMap;

use super::{
    BrokerBackend, ConsumerClient, ConsumerConfig, Delivered, Enqueued, Failed, ProducerClient,
    ProducerConfig, ReaderClient, TransactionFailed, WriteResult,
};
use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::error::{check_topic, Error, Result};
use crate::partitioner::partition_for_key;

mod consumer;
mod group;
mod reader;

use consumer::MemoryConsumer;
use group::Group;
use reader::MemoryReader;

#[derive(Debug, Default)]
struct Topic {
    partitions: Vec<Vec<Arc<Record>>>,
    next_unkeyed: usize,
}

impl Topic {
    /// The partition `record` goes to: its own, its key's, or the next in
    /// turn for a keyless one.
    #[inline(always)]
    fn place(&mut self, record: &OutgoingRecord) -> Result<i32> {
        let n = self.partitions.len() as i32;
        Ok(match (record.partition, &record.key) {
            (Some(p), _) if (0..n).contains(&p) => p,
            (Some(p), _) => return Err(Error::no_partition(&record.topic, p, n)),
            (None, Some(key)) => partition_for_key(key, n),
            (None, None) => {
                let p = self.next_unkeyed % n as usize;
                self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
                p as i32
            }
        })
    }

    /// Appends `record` to `partition` (placed already).
    #[inline(always)]
    fn push(&mut self, record: OutgoingRecord, partition: i32) -> Delivered {
        let log = &mut self.partitions[partition as usize];
        let offset = log.len() as i64;
        log.push(Arc::new(Record::new(
            record.topic,
            partition,
            offset,
            record.key,
            record.headers,
            record.payload,
            record.timestamp_ms,
        )));
        Delivered { partition, offset }
    }
}

/// An existing topic, found by a scan (a transaction's few topics): the
/// hash lookup stays inlined in the one place every publish uses it.
fn topic_of<'a>(state: &'a mut State, name: &str) -> &'a mut Topic {
    state
        .topics
        .iter_mut()
        .find(|(n, _)| &***n == name)
        .map(|(_, t)| t)
        .expect("ensured")
}

/// Whether `member` of `group` is there and owns every partition of
/// `offsets`: a commit error otherwise.
fn check_owner(
    state: &State,
    group: &str,
    member: u64,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    let g = state
        .groups
        .get(group)
        .ok_or_else(|| Error::commit("group is gone", false))?;
    let m = g
        .members
        .get(&member)
        .ok_or_else(|| Error::commit("consumer has left its group", false))?;
    if let Some((tp, _)) = offsets.iter().find(|(tp, _)| !m.owns(tp)) {
        return Err(Error::commit(
            format!("{tp} is not assigned to this member"),
            false,
        ));
    }
    Ok(())
}

/// Appends `records` to the partitions they were `placed` in, then wakes
/// the subscribers of every topic written.
fn write_placed(state: &mut State, records: Vec<OutgoingRecord>, placed: Vec<i32>) {
    let mut topics: Vec<Arc<str>> = Vec::new();
    for (record, partition) in records.into_iter().zip(placed) {
        if !topics.contains(&record.topic) {
            topics.push(record.topic.clone());
        }
        topic_of(state, &record.topic.clone()).push(record, partition);
    }
    for topic in &topics {
        group::wake_subscribers(&state.groups, topic);
        wake_readers(&state.readers, topic);
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    topics: FxHashMap<Arc<str>, Topic>,
    groups: HashMap<String, Group>,
    next_member: u64,
    /// The partition readers of each topic (in no group), to wake on a write.
    readers: Vec<(Arc<str>, std::sync::Weak<tokio::sync::Notify>)>,
}

/// Wakes the readers of `topic`.
fn wake_readers(readers: &[(Arc<str>, std::sync::Weak<tokio::sync::Notify>)], topic: &str) {
    for (t, notify) in readers {
        if &**t == topic {
            if let Some(notify) = notify.upgrade() {
                notify.notify_one();
            }
        }
    }
}

/// The embedded in-memory broker. Obtain it with [`Broker::memory`](crate::Broker::memory);
/// this type offers read-only inspection for tests and tools.
#[derive(Debug)]
pub struct MemoryBroker {
    state: Mutex<State>,
    default_partitions: i32,
}

impl MemoryBroker {
    pub(crate) fn new(default_partitions: i32) -> Self {
        MemoryBroker {
            state: Mutex::new(State::default()),
            default_partitions,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record of `topic`, partition by partition in offset order
    /// (empty if the topic does not exist).
    pub fn records(&self, topic: &str) -> Vec<Record> {
        let state = self.lock();
        state
            .topics
            .get(topic)
            .map(|t| {
                t.partitions
                    .iter()
                    .flatten()
                    .map(|r| Record::clone(r))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of partitions of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.lock()
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as i32)
    }

    /// Offset one past the last record of a partition.
    pub fn end_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let state = self.lock();
        let t = state.topics.get(topic)?;
        t.partitions.get(partition as usize).map(|p| p.len() as i64)
    }

    /// The offset `group` has committed for a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let state = self.lock();
        state
            .groups
            .get(group)?
            .committed(&TopicPartition::new(topic, partition))
    }

    /// The next offset the member of `group` that owns the partition will
    /// fetch (its position), if a member owns it.
    pub fn position(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let state = self.lock();
        let tp = TopicPartition::new(topic, partition);
        state
            .groups
            .get(group)?
            .members
            .values()
            .find(|m| m.owns(&tp))
            .and_then(|m| m.positions.get(&tp).copied())
    }

    /// Records of `topic` not yet committed by `group`, over all partitions.
    pub fn lag(&self, group: &str, topic: &str) -> i64 {
        let state = self.lock();
        let Some(t) = state.topics.get(topic) else {
            return 0;
        };
        let g = state.groups.get(group);
        t.partitions
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let c = g
                    .and_then(|g| g.committed(&TopicPartition::new(topic, p as i32)))
                    .unwrap_or(0);
                log.len() as i64 - c
            })
            .sum()
    }

    /// How many rebalances of `group` have moved partitions (Kafka's
    /// generation, roughly): unchanged as long as membership is stable.
    pub fn generation(&self, group: &str) -> u64 {
        self.lock().groups.get(group).map_or(0, |g| g.generation)
    }

    /// The partitions each member of `group` owns, by member id.
    pub fn assignment(&self, group: &str) -> HashMap<u64, Vec<TopicPartition>> {
        let state = self.lock();
        state
            .groups
            .get(group)
            .map(|g| g.assignment())
            .unwrap_or_default()
    }

    /// Creates a topic if missing; returns whether it was created.
    fn create_locked(state: &mut State, topic: &str, partitions: i32) -> Result<bool> {
        if state.topics.contains_key(topic) {
            return Ok(false);
        }
        check_topic(topic)?;
        state.topics.insert(
            Arc::from(topic),
            Topic {
                partitions: vec![Vec::new(); partitions.max(1) as usize],
                next_unkeyed: 0,
            },
        );
        Ok(true)
    }

    pub(crate) fn ensure_locked(
        &self,
        state: &mut State,
        topic: &str,
        partitions: Option<i32>,
    ) -> Result<()> {
        if Self::create_locked(state, topic, partitions.unwrap_or(self.default_partitions))? {
            let names: Vec<String> = state.groups.keys().cloned().collect();
            for name in names {
                group::rebalance(state, &name);
            }
        }
        Ok(())
    }

    fn append(&self, record: OutgoingRecord) -> WriteResult {
        let mut guard = self.lock();
        let state = &mut *guard;
        // One lookup of the topic per record, once it exists.
        let topic = match state.topics.get_mut(&*record.topic) {
            Some(topic) => topic,
            None => {
                if let Err(e) = self.ensure_locked(state, &record.topic, None) {
                    return Err(Failed::new(e, record));
                }
                state.topics.get_mut(&*record.topic).expect("ensured")
            }
        };
        let partition = match topic.place(&record) {
            Ok(p) => p,
            Err(e) => return Err(Failed::new(e, record)),
        };
        // Subscribers read it once the lock is released.
        group::wake_subscribers(&state.groups, &record.topic);
        if !state.readers.is_empty() {
            wake_readers(&state.readers, &record.topic);
        }
        Ok(topic.push(record, partition))
    }

    /// Writes `records` and commits `group`'s `offsets` as one: all of it
    /// or, when a record cannot be written or a partition is not `member`'s,
    /// none of it (Kafka's transaction, as a `read_committed` consumer sees
    /// it: the embedded broker never shows a record before its commit).
    /// Every record that cannot be written is named in the failure.
    pub(crate) fn commit_transaction(
        &self,
        group: &str,
        member: u64,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> std::result::Result<(), TransactionFailed> {
        let mut state = self.lock();
        check_owner(&state, group, member, &offsets)?;
        // Every record placed before any is written: all or nothing.
        let placed = self.place_all(&mut state, &records)?;
        write_placed(&mut state, records, placed);
        let g = state.groups.get_mut(group).expect("checked");
        for (tp, offset) in offsets {
            g.commit(tp, offset);
        }
        Ok(())
    }

    /// The partition of each record (its topic created if missing), or the
    /// failure naming every record that has none.
    fn place_all(
        &self,
        state: &mut State,
        records: &[OutgoingRecord],
    ) -> std::result::Result<Vec<i32>, TransactionFailed> {
        let mut placed = Vec::with_capacity(records.len());
        let mut refused = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let place = self
                .ensure_locked(state, &record.topic, None)
                .and_then(|()| topic_of(state, &record.topic).place(record));
            match place {
                Ok(p) => placed.push(p),
                Err(e) => refused.push((i, e)),
            }
        }
        if !refused.is_empty() {
            return Err(TransactionFailed {
                error: Error::commit(
                    format!(
                        "transaction: {} of its {} records refused",
                        refused.len(),
                        records.len()
                    ),
                    false,
                ),
                refused,
                undetermined: false,
            });
        }
        Ok(placed)
    }

    pub(crate) fn partition_count(state: &State, topic: &str) -> i32 {
        state
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.len() as i32)
    }
}

#[derive(Debug)]
struct MemoryProducer {
    broker: Arc<MemoryBroker>,
}

impl ProducerClient for MemoryProducer {
    fn send(&self, record: OutgoingRecord) -> Enqueued {
        Enqueued::Done(self.broker.append(record))
    }

    fn flush(&self) -> BoxFuture<'static, Result<()>> {
        future::ready(Ok(())).boxed()
    }
}

impl BrokerBackend for Arc<MemoryBroker> {
    /// The embedded broker takes every record at once: no timeout applies.
    fn producer(&self, _: ProducerConfig) -> Result<Arc<dyn ProducerClient>> {
        Ok(Arc::new(MemoryProducer {
            broker: self.clone(),
        }))
    }

    fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn ConsumerClient>> {
        Ok(Arc::new(MemoryConsumer::join(self.clone(), config)?))
    }

    fn reader(&self, topic: &str, partition: i32, from: i64) -> Result<Arc<dyn ReaderClient>> {
        Ok(Arc::new(MemoryReader::open(
            self.clone(),
            topic,
            partition,
            from,
        )?))
    }

    fn ensure_topic(&self, topic: &str, partitions: Option<i32>) -> BoxFuture<'static, Result<()>> {
        let mut state = self.lock();
        future::ready(self.ensure_locked(&mut state, topic, partitions)).boxed()
    }

    fn watermarks(&self, topic: &str) -> BoxFuture<'static, Result<Vec<(i64, i64)>>> {
        let state = self.lock();
        let marks = state.topics.get(topic).map_or_else(Vec::new, |t| {
            t.partitions
                .iter()
                .map(|log| (0, log.len() as i64))
                .collect()
        });
        future::ready(Ok(marks)).boxed()
    }

    fn committed(&self, group: &str, topic: &str) -> BoxFuture<'static, Result<Vec<Option<i64>>>> {
        let n = MemoryBroker::partitions(self, topic).unwrap_or(0);
        let committed = (0..n)
            .map(|p| MemoryBroker::committed(self, group, topic, p))
            .collect();
        future::ready(Ok(committed)).boxed()
    }

    fn read_all(&self, topic: &str) -> BoxFuture<'static, Result<Vec<Record>>> {
        future::ready(Ok(self.records(topic))).boxed()
    }

    fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>>> {
        let state = self.lock();
        let records = state
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
            .map(|records| {
                records
                    .iter()
                    .filter(|r| r.offset >= from)
                    .take(max)
                    .map(|r| Record::clone(r))
                    .collect()
            })
            .unwrap_or_default();
        future::ready(Ok(records)).boxed()
    }

    fn probe(&self, _: std::time::Duration) -> BoxFuture<'static, Result<()>> {
        // In the process: there while the process is.
        future::ready(Ok(())).boxed()
    }

    fn partitions(&self, topic: &str) -> BoxFuture<'static, Result<Option<i32>>> {
        future::ready(Ok(MemoryBroker::partitions(self, topic))).boxed()
    }

    fn describe(&self) -> String {
        "the embedded broker".into()
    }
}

impl MemoryBroker {
    pub(crate) fn next_member_id(state: &mut State) -> u64 {
        state.next_member += 1;
        state.next_member
    }

    pub(crate) fn group_mut<'a>(state: &'a mut State, name: &str) -> &'a mut Group {
        state.groups.entry(name.to_string()).or_default()
    }
}
