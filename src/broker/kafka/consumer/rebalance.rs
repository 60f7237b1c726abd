//! Rebalance handling: the consumer context whose callbacks librdkafka runs
//! on the polling thread, splitting off the queues of assigned partitions,
//! announcing assignments, and holding a revocation until the actor has
//! drained and released the revoked partitions.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use super::partitions::{commit, from_tpl, hold, transaction};
use super::shared::{lock, Command, Shared};
use crate::broker::ConsumerEvent;
use crate::envelope::TopicPartition;

/// The consumer context: rebalance callbacks on the polling thread.
pub(super) struct Context {
    pub(super) shared: Arc<Shared>,
    /// The consumer itself, set once it is created: splitting a partition's
    /// queue takes it (a weak reference: the consumer owns its context).
    pub(super) consumer: OnceLock<Weak<BaseConsumer<Context>>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let tpl = match rebalance {
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Assign(tpl) => {
                // Before librdkafka starts fetching them.
                if let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) {
                    lock(&self.shared.queues).split(&consumer, &from_tpl(tpl), &self.shared.signal);
                }
                return;
            }
            Rebalance::Error(_) => return,
        };
        let shared = &self.shared;
        let revoked = from_tpl(tpl);
        if revoked.is_empty() || shared.closing.load(Ordering::SeqCst) {
            return;
        }
        tracing::debug!(group = %shared.group, ?revoked, "revoking; waiting for the connection to drain");
        shared.answer(Some(ConsumerEvent::Revoked(revoked.clone())));
        let waiting: HashSet<TopicPartition> = revoked.iter().cloned().collect();
        wait_for_release(consumer, shared, waiting);
        // What they still hold was never handed out: the next owner reads
        // it from the committed offset.
        lock(&shared.queues).remove(&revoked);
        lock(&shared.strays).retain(|r| !revoked.contains(&r.topic_partition()));
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = from_tpl(tpl);
                if !assigned.is_empty() {
                    // librdkafka keeps a partition paused across its revocation
                    // and a new assignment (a hold of an earlier ownership): a
                    // newly assigned partition fetches.
                    if let Err(e) = consumer.resume(tpl) {
                        tracing::warn!(group = %self.shared.group, error = %e,
                            "setting the pause state of assigned partitions failed");
                    }
                    lock(&self.shared.events).push(ConsumerEvent::Assigned(assigned));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.shared.group, error = %e, "rebalance error")
            }
        }
    }
}

/// Serves the actor's commands during a revocation until it has released
/// every partition `waiting`, until it closes, or until the revoke deadline.
fn wait_for_release(
    consumer: &BaseConsumer<Context>,
    shared: &Shared,
    mut waiting: HashSet<TopicPartition>,
) {
    let deadline = crate::clock::deadline_in(shared.revoke_timeout);
    let commands = lock(&shared.commands);
    while !waiting.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match commands.recv_timeout(remaining) {
            Ok(Command::Release(tps)) => {
                for tp in tps {
                    waiting.remove(&tp);
                }
            }
            Ok(Command::Commit(offsets, reply)) => {
                let _ = reply.send(commit(consumer, &offsets));
            }
            Ok(Command::Transaction(records, offsets, reply)) => {
                let _ = reply.send(transaction(consumer, shared, records, &offsets));
            }
            // Kept for the poll loop, which serves it once the rebalance is done.
            Ok(Command::Fetch(fetch)) => *lock(&shared.fetch) = Some(fetch),
            // The revocation answered the fetch under way already.
            Ok(Command::Wake) => {}
            Ok(Command::Hold(tps, held)) => hold(consumer, tps, held),
            Ok(Command::Close) | Err(RecvTimeoutError::Disconnected) => {
                shared.closing.store(true, Ordering::SeqCst);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(group = %shared.group, ?waiting,
                    "revoke deadline passed; giving the partitions up undrained");
                return;
            }
        }
    }
}
