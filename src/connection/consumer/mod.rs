//! `ConsumerConnection`: one consumer-group member per subscription.
//!
//! Role: polls the broker and hands records to the subscription's Dispatcher
//! in batches under credit-based flow control: at most `max_in_flight` records
//! read and not finished; past it the partitions are paused rather than
//! buffered. It keeps the commit watermark of every owned partition and
//! commits only offsets below which every record is finished: periodically,
//! before giving up a revoked partition, and on shutdown.
//!
//! Messages: [`Completed`](super::protocol::Completed) (records whose fate
//! is final), [`Ready`] (a reader incarnation started), [`Hold`] (pause a
//! partition until a time), [`Owned`] (which partitions it owns) and
//! `Shutdown` (stop polling, drain in-flight
//! records within the drain timeout, commit, leave the group). What it
//! feeds (a Dispatcher or the Republisher) gets [`Deliver`] and
//! [`Released`]: the protocol is in `connection/protocol.rs`.
//!
//! By concern: this file polls and delivers; `events.rs` handles what a
//! poll brings (revocations, assignments, records); `flow.rs` keeps the
//! credit, the pause and the holds; `commit.rs` the commits and
//! completions; `revoke.rs` gives revoked partitions back;
//! `transaction.rs` holds a transactional subscription's commits;
//! `rebuild.rs` holds a newly assigned partition of a subscription with a
//! retry topic until its retry partition is read to its end (so the reader
//! knows the keys parked there first).
//!
//! Giving partitions up: a revoked partition is released once its records
//! are finished, or when the drain timeout passes. The reader is told
//! which partitions are being revoked ([`Revoking`](super::protocol::Revoking))
//! and may give up the records of them it has not started
//! ([`GivenUp`](super::protocol::GivenUp): records of retry partitions
//! waiting for their due time), which are then neither waited for nor
//! committed past. Either way the consumer
//! is first told [`Released`] and answers once it has dropped everything
//! it still had of those partitions, so nothing of them is handled,
//! dead-lettered or forwarded after this member commits and the partition
//! moves on; only then is it committed and given back.
//!
//! Polls are never cancelled (a Kafka client's answer could be lost with
//! the assignment events in it): a poll made without credit, which waits
//! for group events only, is woken ([`ConsumerClient::wake`]) when credit
//! frees up.
//!
//! Transactional subscriptions: a [`Completed`](super::protocol::Completed)
//! also carries what the handlers of its acknowledged records published;
//! the connection holds it by partition and offset, and every commit
//! (periodic, of a revoked partition, and the final one on shutdown)
//! writes the outputs below the offsets it commits and those offsets in
//! one broker transaction (`transaction.rs`). A failed transaction is aborted
//! and its outputs are held for the next commit; revoked partitions and
//! the final commit wait for a transaction under way. Outputs the broker
//! refuses for good are taken out: their records' fate is open again
//! ([`Refused`](super::protocol::Refused), dead-lettered by the reader)
//! and the rest commits without them.
//!
//! Owns: the consumer client (group membership), the watermarks, the
//! unfinished records themselves and a transactional subscription's
//! uncommitted outputs (lost with an incarnation: their records are read
//! and handled again, nothing of them was visible).
//!
//! Restarts: when the *reader* is restarted, every unfinished record is
//! handed to the new incarnation (the group is not left, nothing is
//! rebalanced). When *this actor* is restarted, the new incarnation joins the
//! group afresh and resumes from the committed offsets; the records the old
//! one had in flight are read again, so nothing is lost and the only
//! duplicates are those records.

use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{fail, Shutdown};
use tokio::sync::oneshot;

use super::protocol::{Deliver, FindReader, Ready};
use super::watermark::Watermark;
use crate::broker::{BrokerBackend, ConsumerClient, ConsumerConfig, PartitionCounts};
use crate::envelope::{Record, TopicPartition};

static INCARNATIONS: AtomicU64 = AtomicU64::new(1);

/// The most records one poll takes: a batch keeps this actor and the one it
/// feeds busy for one turn each, and whatever waits on their thread (a
/// timer due, a message) waits for that turn; 4,096 records are a few ms,
/// and enough to spread every per-batch cost thin.
const MAX_BATCH: usize = 4_096;

#[derive(Debug)]
struct Partition {
    /// Its records read and not finished, and the committable position
    /// (none until the first record comes).
    watermark: Option<Watermark<Arc<Record>>>,
    /// Revoked at this time: given back once its work is done (`commit`).
    revoking_since: Option<Instant>,
    /// Paused by a [`Hold`] until then.
    held_until: Option<Instant>,
    /// A transactional subscription's: what the handlers of its finished
    /// records published, by offset, until committed with them.
    outputs: transaction::Outputs,
    /// A transactional subscription's: finished records whose outputs the
    /// broker refused at commit, by offset, until the reader reports
    /// their fate again. The partition is not committed past the first.
    refused: BTreeMap<i64, Arc<Record>>,
}

impl Partition {
    fn new() -> Self {
        Partition {
            watermark: None,
            revoking_since: None,
            held_until: None,
            outputs: BTreeMap::new(),
            refused: BTreeMap::new(),
        }
    }

    /// Records read and not finished (or whose fate is open again).
    fn in_flight(&self) -> usize {
        self.watermark.as_ref().map_or(0, |w| w.in_flight()) + self.refused.len()
    }

    /// Whether nothing of it is in flight.
    fn is_idle(&self) -> bool {
        self.watermark.as_ref().is_none_or(|w| w.is_idle()) && self.refused.is_empty()
    }

    /// The offset to commit now, if it moved: below every unfinished and
    /// every refused record.
    fn commit_point(&self) -> Option<i64> {
        let w = self.watermark.as_ref()?;
        match self.refused.keys().next() {
            None => w.to_commit(),
            Some(&first) => w.to_commit_below(first),
        }
    }

    /// Its unfinished and refused records, in offset order.
    fn unfinished(&self) -> Vec<Arc<Record>> {
        let mut all: Vec<Arc<Record>> = self
            .watermark
            .iter()
            .flat_map(|w| w.unfinished().cloned())
            .collect();
        if !self.refused.is_empty() {
            all.extend(self.refused.values().cloned());
            all.sort_by_key(|r| r.offset);
        }
        all
    }
}

/// Settings of a [`ConsumerConnection`].
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    pub(crate) config: ConsumerConfig,
    pub(crate) max_in_flight: usize,
    /// How many places must be free before a poll takes records again
    /// (at most half of `max_in_flight`; [`REFILL`] for subscriptions).
    pub(crate) refill: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) drain_timeout: Duration,
    /// Commits in transactions, with what handlers published (a
    /// transactional subscription's connection), noting the partition
    /// counts of the topics they publish to here.
    pub(crate) transactional: Option<PartitionCounts>,
    /// `kafkactor_in_flight` of its group, set at every poll.
    pub(crate) in_flight: prometheus::IntGauge,
    /// Each topic read with its retry topic (a subscription retrying
    /// through one): a partition assigned waits until its retry partition
    /// is read to its end (`rebuild.rs`).
    pub(crate) retry_topics: crate::topics::RetryTopics,
}

/// Asks which partitions this member owns right now: assigned, and not yet
/// given back after a revocation. Sorted. For
/// [`App::assigned_partitions`](crate::App::assigned_partitions).
#[derive(Message)]
#[rtype(result = "Vec<TopicPartition>")]
pub(crate) struct Owned;

pub(crate) struct ConsumerConnection {
    /// Where the consumer client comes from.
    backend: Arc<dyn BrokerBackend>,
    settings: ConsumerSettings,
    /// Finds the running incarnation of the reader it feeds (a Dispatcher or
    /// the Republisher).
    reader: FindReader,
    /// This incarnation's number, stamped on every [`Deliver`].
    incarnation: u64,
    /// The group member, once started.
    client: Option<Arc<dyn ConsumerClient>>,
    /// Every owned partition: its watermark, revocation and hold.
    partitions: FxHashMap<TopicPartition, Partition>,
    /// Records read and not finished, over all partitions.
    in_flight: usize,
    /// Whether every partition is paused for lack of credit (`flow`).
    paused: bool,
    /// The poll under way and the credit it was made with.
    polling: Option<(SpawnHandle, usize)>,
    /// Whether the poll under way (made without credit) was asked to return.
    woken: bool,
    /// Whether a commit is under way (one at a time: `commit`).
    committing: bool,
    /// Revoked partitions wait for the commit under way (which may hold
    /// their outputs) before they are committed and given back.
    revokes_waiting: bool,
    /// Told when the commit under way is done (the final commit waits).
    commit_done: Vec<oneshot::Sender<()>>,
    /// Topics whose partition count is being asked for.
    asking: FxHashSet<Arc<str>>,
    /// Whether a periodic commit is scheduled.
    commit_scheduled: bool,
    /// Shutting down: no more polls or scheduled commits.
    stopping: bool,
    /// Answers the shutdown's drain once nothing is in flight.
    drained: Option<oneshot::Sender<()>>,
    /// The reader incarnation that has every unfinished record.
    delivered_to: Option<u64>,
    /// Partitions waiting for their retry partition to be read, by it.
    rebuilding: FxHashMap<TopicPartition, rebuild::Rebuild>,
    /// How far each retry partition was read (the next offset).
    retry_read: FxHashMap<TopicPartition, i64>,
    /// Records of partitions waiting for their retry partition, kept back.
    stash: FxHashMap<TopicPartition, Vec<Arc<Record>>>,
}

impl ConsumerConnection {
    pub(crate) fn new(
        backend: Arc<dyn BrokerBackend>,
        settings: ConsumerSettings,
        reader: FindReader,
    ) -> Self {
        ConsumerConnection {
            backend,
            settings,
            reader,
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            client: None,
            partitions: FxHashMap::default(),
            in_flight: 0,
            paused: false,
            polling: None,
            woken: false,
            committing: false,
            revokes_waiting: false,
            commit_done: Vec::new(),
            asking: FxHashSet::default(),
            commit_scheduled: false,
            stopping: false,
            drained: None,
            delivered_to: None,
            rebuilding: FxHashMap::default(),
            retry_read: FxHashMap::default(),
            stash: FxHashMap::default(),
        }
    }

    fn group(&self) -> &str {
        &self.settings.config.group
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.polling.is_some() {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        self.settings.in_flight.set(self.in_flight as i64);
        let credit = self.credit();
        let handle = ctx.spawn(
            client
                .poll(credit, client.idle_poll_timeout())
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.polling = None;
                    match result {
                        Ok(events) => act.on_events(events, ctx),
                        Err(e) if !act.stopping => {
                            fail(ctx, format!("poll of group {} failed: {e}", act.group()));
                            return;
                        }
                        Err(_) => return,
                    }
                    act.poll(ctx);
                }),
        );
        self.polling = Some((handle, credit));
        self.woken = false;
    }

    /// Sends `batch` to the reader. A reader incarnation that has not
    /// seen this connection's unfinished records yet gets all of them instead
    /// (`batch` is among them, since it is tracked before it is sent).
    fn deliver(&mut self, batch: Vec<Arc<Record>>, ctx: &mut Context<Self>) {
        let Some((reader, incarnation)) = (self.reader)() else {
            // Restarting: the new incarnation announces itself with `Ready`.
            self.delivered_to = None;
            return;
        };
        let records = if self.delivered_to == Some(incarnation) {
            batch
        } else {
            self.delivered_to = Some(incarnation);
            // Those of partitions waiting for their retry partition come
            // once it is read.
            let all: Vec<Arc<Record>> = self
                .partitions
                .iter()
                .filter(|(tp, _)| !self.is_rebuilding(tp))
                .flat_map(|(_, p)| p.unfinished())
                .collect();
            if !all.is_empty() {
                tracing::debug!(group = %self.group(), records = all.len(), incarnation, "handing unfinished records to reader");
            }
            all
        };
        if records.is_empty() {
            return;
        }
        if !reader.deliver.connected() {
            // It is being restarted and will announce itself.
            self.delivered_to = None;
            return;
        }
        // `do_send` ignores the mailbox capacity: flow control is the credit
        // above, and a batch must never be dropped.
        reader.deliver.do_send(Deliver {
            records,
            from: ctx.address().recipient(),
            incarnation: self.incarnation,
        });
    }
}

impl Actor for ConsumerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.backend.consumer(self.settings.config.clone()) {
            Ok(client) => self.client = Some(client),
            Err(e) => {
                fail(ctx, format!("cannot join group {}: {e}", self.group()));
                return;
            }
        }
        self.poll(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(client) = self.client.take() {
            client.close();
        }
    }
}

impl Handler<Owned> for ConsumerConnection {
    type Result = MessageResult<Owned>;

    fn handle(&mut self, _: Owned, _: &mut Context<Self>) -> Self::Result {
        let mut owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        owned.sort();
        MessageResult(owned)
    }
}

impl Handler<Ready> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, _: Ready, ctx: &mut Context<Self>) {
        self.deliver(Vec::new(), ctx);
    }
}

impl Handler<Shutdown> for ConsumerConnection {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some((handle, _)) = self.polling.take() {
            ctx.cancel_future(handle);
        }
        let (tx, rx) = oneshot::channel();
        // With its consumer already stopped (the Republisher stops before
        // its connection) nothing more finishes: what is unfinished stays
        // uncommitted and is read again.
        if self.in_flight == 0 || (self.reader)().is_none() {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let drain = self.settings.drain_timeout;
        let group = self.group().to_string();
        Box::pin(
            async move {
                if tokio::time::timeout(drain, rx).await.is_err() {
                    tracing::warn!(%group, "drain timeout on shutdown; unfinished records will be read again");
                }
            }
            .into_actor(self)
            // A periodic commit under way may hold outputs: it ends first
            // (failed, they are back here for the final one).
            .then(|(), act, _| act.commit_finished().into_actor(act))
            .then(|(), act, _| act.final_commit().into_actor(act))
            .map(|result, act, ctx| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "final commit failed; what it held is read again");
                }
                if let Some(client) = act.client.take() {
                    client.close();
                }
                ctx.stop();
            }),
        )
    }
}

mod commit;
mod events;
mod flow;
mod rebuild;
mod revoke;
mod spec;
mod transaction;

pub(crate) use flow::{Hold, REFILL};
pub(crate) use spec::spec;

#[cfg(test)]
mod tests;
