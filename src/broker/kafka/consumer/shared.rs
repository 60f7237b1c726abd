//! What the client, the polling thread and its rebalance callbacks share:
//! the commands the client sends the thread, the fetch under way, and the
//! thread's state ([`Shared`]).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queues::{Queues, Signal, Strays};
use crate::broker::kafka::transaction::Transactions;
use crate::broker::{ConsumerEvent, TransactionFailed};
use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::error::{Error, Result};

pub(super) type Reply<T> = oneshot::Sender<Result<T>>;

pub(super) enum Command {
    Fetch(Fetch),
    /// Answer the fetch under way now.
    Wake,
    Hold(Vec<TopicPartition>, bool),
    Commit(Vec<(TopicPartition, i64)>, Reply<()>),
    Transaction(
        Vec<OutgoingRecord>,
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<std::result::Result<(), TransactionFailed>>,
    ),
    Release(Vec<TopicPartition>),
    Close,
}

pub(super) struct Fetch {
    pub(super) max: usize,
    pub(super) deadline: Instant,
    pub(super) reply: Reply<Vec<ConsumerEvent>>,
}

/// What the polling thread and its rebalance callbacks share.
pub(super) struct Shared {
    pub(super) commands: Mutex<Receiver<Command>>,
    /// The fetch being served, answered by the poll loop or by a revocation.
    pub(super) fetch: Mutex<Option<Fetch>>,
    /// Records taken for the current fetch, in order.
    pub(super) records: Mutex<Vec<Arc<Record>>>,
    /// Assignments to announce with the next answer.
    pub(super) events: Mutex<Vec<ConsumerEvent>>,
    /// The assigned partitions' queues, where records wait for the actor.
    pub(super) queues: Mutex<Queues>,
    /// Records that came in the consumer's own queue, oldest first.
    pub(super) strays: Mutex<Strays>,
    /// Wakes the polling thread: commands, and queues becoming non-empty.
    pub(super) signal: Arc<Signal>,
    pub(super) closing: AtomicBool,
    pub(super) revoke_timeout: Duration,
    pub(super) group: String,
    /// The transactional producer of a transactional subscription's member.
    pub(super) transactions: Mutex<Transactions>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Answers the current fetch with the pending events, the records taken
    /// so far, then `last`.
    pub(super) fn answer(&self, last: Option<ConsumerEvent>) {
        let Some(fetch) = lock(&self.fetch).take() else {
            return;
        };
        let mut events = std::mem::take(&mut *lock(&self.events));
        let records = std::mem::take(&mut *lock(&self.records));
        if !records.is_empty() {
            events.push(ConsumerEvent::Records(records));
        }
        events.extend(last);
        let _ = fetch.reply.send(Ok(events));
    }

    pub(super) fn fail_fetch(&self, error: Error) {
        if let Some(fetch) = lock(&self.fetch).take() {
            let _ = fetch.reply.send(Err(error));
        }
    }
}
