//! A consumer-group member of the embedded broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{self, BoxFuture, FutureExt};
use tokio::sync::Notify;

use super::group::{self, Member};
use super::{MemoryBroker, State};
use crate::broker::{ConsumerClient, ConsumerConfig, ConsumerEvent, TransactionFailed};
use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::error::{Error, Result};

pub(crate) struct MemoryConsumer {
    broker: Arc<MemoryBroker>,
    group: String,
    id: u64,
    notify: Arc<Notify>,
    /// Set by `wake`: the poll under way returns.
    woken: Arc<AtomicBool>,
    closed: AtomicBool,
}

impl MemoryConsumer {
    pub(crate) fn join(broker: Arc<MemoryBroker>, config: ConsumerConfig) -> Result<Self> {
        if config.topics.is_empty() {
            return Err(Error::Config(
                "a subscription needs at least one topic".into(),
            ));
        }
        let (id, notify) = {
            let mut state = broker.lock();
            for t in &config.topics {
                broker.ensure_locked(&mut state, t, None)?;
            }
            let id = MemoryBroker::next_member_id(&mut state);
            let member = Member::new(
                config
                    .topics
                    .iter()
                    .map(|t| Arc::from(t.as_str()))
                    .collect(),
                config.reset,
            );
            let notify = member.notify.clone();
            MemoryBroker::group_mut(&mut state, &config.group)
                .members
                .insert(id, Box::new(member));
            group::rebalance(&mut state, &config.group);
            (id, notify)
        };
        Ok(MemoryConsumer {
            broker,
            group: config.group,
            id,
            notify,
            woken: Arc::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
        })
    }

    fn with_member<T>(&self, f: impl FnOnce(&mut Member) -> T) -> Result<T> {
        let mut state = self.broker.lock();
        let member = state
            .groups
            .get_mut(&self.group)
            .and_then(|g| g.members.get_mut(&self.id))
            .ok_or_else(|| Error::client("reach the group", "the consumer has left it", true))?;
        Ok(f(member))
    }
}

/// Takes whatever is ready for member `id`: revocations, assignments, then records.
fn take_events(state: &mut State, group: &str, id: u64, max: usize) -> Result<Vec<ConsumerEvent>> {
    let State { topics, groups, .. } = state;
    let member = groups
        .get_mut(group)
        .and_then(|g| g.members.get_mut(&id))
        .ok_or_else(|| Error::client("reach the group", "the consumer has left it", true))?;
    let mut events = Vec::new();
    if !member.pending_revoke.is_empty() {
        events.push(ConsumerEvent::Revoked(std::mem::take(
            &mut member.pending_revoke,
        )));
    }
    if !member.pending_assign.is_empty() {
        let tps = std::mem::take(&mut member.pending_assign);
        member.assigned.extend(tps.iter().cloned());
        events.push(ConsumerEvent::Assigned(tps));
    }
    if max > 0 && !member.assigned.is_empty() {
        let tps: Vec<TopicPartition> = member.assigned.iter().cloned().collect();
        let n = tps.len();
        let start = member.fetch_cursor % n;
        member.fetch_cursor = member.fetch_cursor.wrapping_add(1);
        let mut records: Vec<Arc<Record>> = Vec::new();
        for i in 0..n {
            let remaining = max - records.len();
            if remaining == 0 {
                break;
            }
            let tp = &tps[(start + i) % n];
            if member.paused.contains(tp) {
                continue;
            }
            let Some(log) = topics
                .get(&tp.topic)
                .and_then(|t| t.partitions.get(tp.partition as usize))
            else {
                continue;
            };
            let pos = member.positions.get(tp).copied().unwrap_or(0);
            let from = (pos.max(0) as usize).min(log.len());
            let to = from.saturating_add(remaining).min(log.len());
            if to > from {
                records.extend_from_slice(&log[from..to]);
                member.positions.insert(tp.clone(), to as i64);
            }
        }
        if !records.is_empty() {
            events.push(ConsumerEvent::Records(records));
        }
    }
    Ok(events)
}

impl ConsumerClient for MemoryConsumer {
    fn idle_poll_timeout(&self) -> Duration {
        // Every change a poll waits for wakes it: the timeout is only a backstop.
        Duration::from_secs(60)
    }

    fn poll(
        &self,
        max_records: usize,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>> {
        let broker = self.broker.clone();
        let group = self.group.clone();
        let id = self.id;
        let notify = self.notify.clone();
        let woken = self.woken.clone();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                {
                    let mut state = broker.lock();
                    let events = take_events(&mut state, &group, id, max_records)?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                if woken.swap(false, Ordering::SeqCst) {
                    return Ok(Vec::new());
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

    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn pause(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.with_member(|m| m.paused.extend(partitions.iter().cloned()))
    }

    fn resume(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.with_member(|m| {
            for tp in partitions {
                m.paused.remove(tp);
            }
            m.notify.notify_one();
        })
    }

    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>> {
        let result = (|| {
            let mut state = self.broker.lock();
            let group = state
                .groups
                .get_mut(&self.group)
                .ok_or_else(|| Error::commit("group is gone", false))?;
            let member = group
                .members
                .get(&self.id)
                .ok_or_else(|| Error::commit("consumer has left its group", false))?;
            if let Some((tp, _)) = offsets.iter().find(|(tp, _)| !member.owns(tp)) {
                return Err(Error::commit(
                    format!("{tp} is not assigned to this member"),
                    false,
                ));
            }
            for (tp, offset) in offsets {
                group.commit(tp, offset);
            }
            Ok(())
        })();
        future::ready(result).boxed()
    }

    fn commit_transaction(
        &self,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, std::result::Result<(), TransactionFailed>> {
        let result = self
            .broker
            .commit_transaction(&self.group, self.id, records, offsets);
        future::ready(result).boxed()
    }

    fn release(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut state = self.broker.lock();
        if let Some(g) = state.groups.get_mut(&self.group) {
            g.release(self.id, partitions);
        }
        group::rebalance(&mut state, &self.group);
        Ok(())
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut state = self.broker.lock();
        if let Some(g) = state.groups.get_mut(&self.group) {
            g.remove_member(self.id);
        }
        group::rebalance(&mut state, &self.group);
        self.notify.notify_one();
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.close();
    }
}
