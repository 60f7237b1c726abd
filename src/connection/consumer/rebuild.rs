//! A subscription with a retry topic: a partition newly assigned waits
//! until the member has read its retry partition (the retry topic's
//! partition of the same number) to the end it had at the assignment, so
//! the reader knows every key parked there before the partition's own
//! records come. The parking is rebuilt from the log itself: nothing else
//! is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::ConsumerConnection;
use crate::envelope::{Record, TopicPartition};

/// How often a partition waiting for its retry partition asks again where
/// the group is in it (and, when the broker did not answer, where it ends).
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// A partition waiting for its retry partition to be read.
#[derive(Debug)]
pub(super) struct Rebuild {
    /// The partition that waits.
    pub(super) source: TopicPartition,
    /// The retry partition's end at the assignment, once known.
    end: Option<i64>,
}

impl ConsumerConnection {
    /// Holds each of `tps` that has a retry partition until that one is
    /// read to its end.
    pub(super) fn rebuild_parking(&mut self, tps: &[TopicPartition], ctx: &mut Context<Self>) {
        if self.settings.retry_topics.is_empty() {
            return;
        }
        for tp in tps {
            let Some(retry) = self.settings.retry_topics.retry_of(&tp.topic).cloned() else {
                continue;
            };
            let Some(client) = self.client.clone() else {
                return;
            };
            let Some(p) = self.partitions.get_mut(tp) else {
                continue;
            };
            if p.held_until.is_none() {
                if let Err(e) = client.hold(std::slice::from_ref(tp), true) {
                    tracing::warn!(error = %e, partition = %tp, "pause until the retry partition is read failed");
                    continue;
                }
            }
            // Until the retry partition is read (no timer ends it).
            p.held_until = Some(Instant::now() + Duration::from_secs(365 * 24 * 3600));
            let retry_tp = TopicPartition {
                topic: retry,
                partition: tp.partition,
            };
            self.rebuilding.insert(
                retry_tp.clone(),
                Rebuild {
                    source: tp.clone(),
                    end: None,
                },
            );
            self.ask_retry_end(retry_tp, ctx);
        }
    }

    /// Asks where `retry` (a retry partition) ends and where the group is
    /// in it: when nothing is left to read there, its partition goes on.
    fn ask_retry_end(&mut self, retry: TopicPartition, ctx: &mut Context<Self>) {
        let (backend, group) = (self.backend.clone(), self.group().to_string());
        let topic = retry.topic.clone();
        let ask = async move {
            let marks = backend.watermarks(&topic).await?;
            let committed = backend.committed(&group, &topic).await?;
            let p = retry.partition as usize;
            let (low, high) = marks.get(p).copied().unwrap_or((0, 0));
            let from = crate::broker::position(&committed, p, low);
            Ok::<_, crate::error::Error>((retry, from, high))
        };
        ctx.spawn(ask.into_actor(self).map(|answer, act, ctx| match answer {
            Ok((retry, from, end)) => {
                let Some(rebuild) = act.rebuilding.get_mut(&retry) else {
                    return; // given up meanwhile
                };
                if rebuild.end.is_none() {
                    rebuild.end = Some(end);
                }
                let end = rebuild.end.unwrap_or(end);
                let read = act.retry_read.get(&retry).copied().unwrap_or(0);
                if from >= end || read >= end {
                    return act.rebuilt(&retry, ctx);
                }
                // The group's position may move on without this member
                // reading (the retry partition still draining at its last
                // owner, who commits it): asked again until done.
                ctx.run_later(ASK_AGAIN, move |act, ctx| {
                    if act.rebuilding.contains_key(&retry) {
                        act.ask_retry_end(retry, ctx);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "the retry partition's end is unknown: asking again");
                // Which one failed is not known here: ask for every one
                // still waiting.
                let waiting: Vec<TopicPartition> = act
                    .rebuilding
                    .iter()
                    .filter(|(_, r)| r.end.is_none())
                    .map(|(tp, _)| tp.clone())
                    .collect();
                ctx.run_later(ASK_AGAIN, move |act, ctx| {
                    for tp in waiting {
                        act.ask_retry_end(tp, ctx);
                    }
                });
            }
        }));
    }

    /// Keeps back the records of partitions waiting for their retry
    /// partition (a poll may bring a partition's first records with its
    /// assignment): delivered once it is read. Returns the others.
    pub(super) fn stash_rebuilding(&mut self, batch: Vec<Arc<Record>>) -> Vec<Arc<Record>> {
        if self.rebuilding.is_empty() {
            return batch;
        }
        let waiting: Vec<TopicPartition> =
            self.rebuilding.values().map(|r| r.source.clone()).collect();
        let (kept, pass): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| {
            waiting
                .iter()
                .any(|tp| tp.partition == r.partition && tp.topic == r.topic)
        });
        for record in kept {
            self.stash
                .entry(record.topic_partition())
                .or_default()
                .push(record);
        }
        pass
    }

    /// Whether `tp` waits for its retry partition to be read.
    pub(super) fn is_rebuilding(&self, tp: &TopicPartition) -> bool {
        self.rebuilding.values().any(|r| r.source == *tp)
    }

    /// Notes how far retry partitions were read, from `records` about to be
    /// delivered; returns the retry partitions now read to their end (their
    /// partitions go on once these records are delivered: [`rebuilt`](Self::rebuilt)).
    pub(super) fn note_retry_read(&mut self, records: &[Arc<Record>]) -> Vec<TopicPartition> {
        if self.settings.retry_topics.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        for record in records {
            if self
                .settings
                .retry_topics
                .source_of(&record.topic)
                .is_none()
            {
                continue;
            }
            let tp = record.topic_partition();
            let read = self.retry_read.entry(tp.clone()).or_insert(0);
            *read = (*read).max(record.offset + 1);
            let read = *read;
            if let Some(rebuild) = self.rebuilding.get(&tp) {
                if rebuild.end.is_some_and(|end| read >= end) {
                    done.push(tp);
                }
            }
        }
        done
    }

    /// `retry` is read to its end (and what was read of it delivered): its
    /// partition's records kept back are delivered, and it goes on.
    pub(super) fn rebuilt(&mut self, retry: &TopicPartition, ctx: &mut Context<Self>) {
        let Some(Rebuild { source, .. }) = self.rebuilding.remove(retry) else {
            return;
        };
        if let Some(stashed) = self.stash.remove(&source) {
            self.deliver(stashed, ctx);
        }
        let Some(p) = self.partitions.get_mut(&source) else {
            return;
        };
        p.held_until = None;
        tracing::debug!(partition = %source, retry = %retry, "retry partition read: the partition goes on");
        // Released as a hold is, whatever the flow control does (a Kafka
        // client's flow control never pauses, so its resume would not
        // undo the hold).
        if let Some(client) = &self.client {
            if let Err(e) = client.hold(std::slice::from_ref(&source), false) {
                tracing::warn!(error = %e, partition = %source, "resume after reading the retry partition failed");
            }
        }
    }

    /// Forgets the waits of partitions given up.
    pub(super) fn forget_rebuilds(&mut self, tps: &[TopicPartition]) {
        if self.settings.retry_topics.is_empty() {
            return;
        }
        self.rebuilding
            .retain(|retry, rebuild| !tps.contains(retry) && !tps.contains(&rebuild.source));
        self.retry_read.retain(|retry, _| !tps.contains(retry));
        // Their next owner reads them again.
        self.stash.retain(|tp, _| !tps.contains(tp));
    }
}
