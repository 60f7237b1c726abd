//! `ConsumerConnection`: one consumer-group member per subscription.
//!
//! Role: polls the broker and hands records to the subscription's Dispatcher
//! in batches under credit-based flow control: at most `max_in_flight` records
//! read and not finished; past it the partitions are paused rather than
//! buffered. It keeps the commit watermark of every owned partition and
//! commits only offsets below which every record is finished: periodically,
//! before giving up a revoked partition, and on shutdown.
//!
//! Messages: [`Completed`] (records whose fate is final), [`DispatcherReady`]
//! (a dispatcher incarnation started), [`Hold`] (pause a partition until a
//! time) and `Shutdown` (stop polling, drain in-flight records within the
//! drain timeout, commit, leave the group). What it feeds (a Dispatcher or
//! the Republisher) gets [`Deliver`] and [`Released`].
//!
//! Giving partitions up: a revoked partition is released once its records
//! are finished, or when the drain timeout passes. Either way the consumer
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
//! Owns: the consumer client (group membership), the watermarks and the
//! unfinished records themselves.
//!
//! Restarts: when the *dispatcher* is restarted, every unfinished record is
//! handed to the new incarnation (the group is not left, nothing is
//! rebalanced). When *this actor* is restarted, the new incarnation joins the
//! group afresh and resumes from the committed offsets; the records the old
//! one had in flight are read again, so nothing is lost and the only
//! duplicates are those records.

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{fail, Shutdown};
use tokio::sync::oneshot;

use crate::broker::{BrokerBackend, ConsumerClient, ConsumerConfig, ConsumerEvent};
use crate::connection::watermark::Watermark;
use crate::envelope::{Record, TopicPartition};

/// A batch of records for a dispatcher, with where to report completions.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver {
    pub(crate) records: Vec<Arc<Record>>,
    /// Where to send [`Completed`] for these records.
    pub(crate) from: Recipient<Completed>,
    /// The connection incarnation that read them; records of an older
    /// incarnation are dropped (the new one reads them again).
    pub(crate) origin: u64,
}

/// Records whose fate is final (acked, or durably dead-lettered), mostly
/// in runs of one partition: one message per batch, not per record.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Completed(pub(crate) Vec<Arc<Record>>);

/// Pauses one partition until `until`: the Republisher's head record of it
/// is not due before then. Later holds replace earlier ones; a partition
/// given up meanwhile forgets its hold.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Hold {
    pub(crate) partition: TopicPartition,
    pub(crate) until: Instant,
}

/// A dispatcher incarnation started and wants every unfinished record.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct DispatcherReady;

/// These partitions are no longer this member's: drop every record of them
/// not yet under way, and do nothing more for them (no handling, retry,
/// dead letter or forward); an attempt already running finishes and its
/// outcome is discarded. The connection commits and gives the partitions
/// back only once this is answered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Released {
    pub(crate) partitions: Vec<TopicPartition>,
}

/// How many times each partition was [`Released`] to a consumer: work
/// begun under an earlier generation is of a partition given up since.
#[derive(Debug, Default)]
pub(crate) struct Generations(FxHashMap<TopicPartition, u32>);

impl Generations {
    /// The current generation of `record`'s partition.
    pub(crate) fn of(&self, record: &Record) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.get(&record.topic_partition()).copied().unwrap_or(0)
    }

    /// Notes that `partitions` were given up.
    pub(crate) fn released(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            *self.0.entry(tp.clone()).or_default() += 1;
        }
    }
}

/// Where a connection's records go: a Dispatcher or the Republisher.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) deliver: Recipient<Deliver>,
    pub(crate) released: Recipient<Released>,
}

/// Resolves the current consumer of the subscription and its incarnation number.
pub(crate) type DispatchTarget = Box<dyn Fn() -> Option<(Target, u64)>>;

static ORIGINS: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
struct Partition {
    watermark: Option<Watermark<Arc<Record>>>,
    revoking_since: Option<Instant>,
    /// Paused by a [`Hold`] until then.
    held_until: Option<Instant>,
}

/// Settings of a [`ConsumerConnection`].
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    pub(crate) config: ConsumerConfig,
    pub(crate) max_in_flight: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) drain_timeout: Duration,
    /// The partitions this member owns, for [`App::assigned_partitions`](crate::App::assigned_partitions).
    pub(crate) assignment: Assignment,
}

/// The partitions a subscription currently owns, shared with the application.
pub(crate) type Assignment = Arc<std::sync::Mutex<std::collections::BTreeSet<TopicPartition>>>;

pub(crate) struct ConsumerConnection {
    backend: Arc<dyn BrokerBackend>,
    settings: ConsumerSettings,
    dispatcher: DispatchTarget,
    origin: u64,
    client: Option<Arc<dyn ConsumerClient>>,
    partitions: FxHashMap<TopicPartition, Partition>,
    in_flight: usize,
    paused: bool,
    /// The poll under way and the credit it was made with.
    polling: Option<(SpawnHandle, usize)>,
    /// Whether the poll under way (made without credit) was asked to return.
    woken: bool,
    committing: bool,
    commit_scheduled: bool,
    stopping: bool,
    drained: Option<oneshot::Sender<()>>,
    /// The dispatcher incarnation that has every unfinished record.
    delivered_to: Option<u64>,
}

impl ConsumerConnection {
    pub(crate) fn new(
        backend: Arc<dyn BrokerBackend>,
        settings: ConsumerSettings,
        dispatcher: DispatchTarget,
    ) -> Self {
        ConsumerConnection {
            backend,
            settings,
            dispatcher,
            origin: ORIGINS.fetch_add(1, Ordering::Relaxed),
            client: None,
            partitions: FxHashMap::default(),
            in_flight: 0,
            paused: false,
            polling: None,
            woken: false,
            committing: false,
            commit_scheduled: false,
            stopping: false,
            drained: None,
            delivered_to: None,
        }
    }

    fn assignment_view(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<TopicPartition>> {
        self.settings
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn group(&self) -> &str {
        &self.settings.config.group
    }

    /// In-flight records that count against `max_in_flight`: those of held
    /// partitions do not. A held partition (the Republisher's bucket whose
    /// head is not due) takes no more records, and what it already gave
    /// must not stop the other partitions: a 2 s delay would wait behind
    /// twenty-minute ones for the length of their bucket.
    fn counted_in_flight(&self) -> usize {
        if !self.partitions.values().any(|p| p.held_until.is_some()) {
            return self.in_flight;
        }
        let held: usize = self
            .partitions
            .values()
            .filter(|p| p.held_until.is_some())
            .filter_map(|p| p.watermark.as_ref())
            .map(|w| w.in_flight())
            .sum();
        self.in_flight - held
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.polling.is_some() {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let credit = self
            .settings
            .max_in_flight
            .saturating_sub(self.counted_in_flight());
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

    fn on_events(&mut self, events: Vec<ConsumerEvent>, ctx: &mut Context<Self>) {
        for event in events {
            match event {
                ConsumerEvent::Revoked(tps) => {
                    tracing::debug!(group = %self.group(), ?tps, "revoked");
                    let now = Instant::now();
                    for tp in tps {
                        if let Some(p) = self.partitions.get_mut(&tp) {
                            p.revoking_since = Some(now);
                        }
                    }
                    ctx.run_later(self.settings.drain_timeout, |act, ctx| {
                        act.finish_revokes(true, ctx)
                    });
                    self.finish_revokes(false, ctx);
                }
                ConsumerEvent::Assigned(tps) => {
                    tracing::debug!(group = %self.group(), ?tps, "assigned");
                    if self.paused {
                        if let Some(client) = &self.client {
                            if let Err(e) = client.pause(&tps) {
                                tracing::warn!(error = %e, "pause of new partitions failed");
                            }
                        }
                    }
                    self.assignment_view().extend(tps.iter().cloned());
                    let mut stale = Vec::new();
                    for tp in tps {
                        let fresh = Partition {
                            watermark: None,
                            revoking_since: None,
                            held_until: None,
                        };
                        // Assigned again without a revocation in between (a
                        // member that lost its partitions): what it had of
                        // the old assignment is dropped, its credit returned.
                        if let Some(old) = self.partitions.insert(tp.clone(), fresh) {
                            if let Some(w) = old.watermark {
                                self.in_flight -= w.in_flight();
                            }
                            stale.push(tp);
                        }
                    }
                    if !stale.is_empty() {
                        tracing::warn!(group = %self.group(), partitions = ?stale,
                            "assigned again without a revocation: their unfinished records are read again");
                        if let Some((target, _)) = (self.dispatcher)() {
                            target.released.do_send(Released { partitions: stale });
                        }
                    }
                }
                ConsumerEvent::Records(mut records) => {
                    // One partition lookup per run of records of one
                    // partition (a batch is mostly such runs), and the
                    // batch's own vector is passed on.
                    let mut keep = 0;
                    let mut i = 0;
                    while i < records.len() {
                        let (topic, partition) = (records[i].topic.clone(), records[i].partition);
                        let mut end = i + 1;
                        while end < records.len()
                            && records[end].partition == partition
                            && Arc::ptr_eq(&records[end].topic, &topic)
                        {
                            end += 1;
                        }
                        let tp = TopicPartition { topic, partition };
                        if let Some(p) = self
                            .partitions
                            .get_mut(&tp)
                            .filter(|p| p.revoking_since.is_none())
                        {
                            let wm = p
                                .watermark
                                .get_or_insert_with(|| Watermark::new(records[i].offset));
                            for j in i..end {
                                if wm.track(records[j].offset, records[j].clone()) {
                                    // Stable compaction: kept records stay in order.
                                    records.swap(keep, j);
                                    keep += 1;
                                    self.in_flight += 1;
                                }
                            }
                        }
                        i = end;
                    }
                    records.truncate(keep);
                    let batch = records;
                    self.deliver(batch, ctx);
                }
            }
        }
        if self.counted_in_flight() >= self.settings.max_in_flight && !self.paused {
            self.set_paused(true);
        }
    }

    /// Sends `batch` to the dispatcher. A dispatcher incarnation that has not
    /// seen this connection's unfinished records yet gets all of them instead
    /// (`batch` is among them, since it is tracked before it is sent).
    fn deliver(&mut self, batch: Vec<Arc<Record>>, ctx: &mut Context<Self>) {
        let Some((target, incarnation)) = (self.dispatcher)() else {
            // Restarting: the new incarnation announces itself with `DispatcherReady`.
            self.delivered_to = None;
            return;
        };
        let records = if self.delivered_to == Some(incarnation) {
            batch
        } else {
            self.delivered_to = Some(incarnation);
            let all: Vec<Arc<Record>> = self
                .partitions
                .values()
                .filter_map(|p| p.watermark.as_ref())
                .flat_map(|w| w.unfinished().cloned())
                .collect();
            if !all.is_empty() {
                tracing::debug!(group = %self.group(), records = all.len(), incarnation, "handing unfinished records to dispatcher");
            }
            all
        };
        if records.is_empty() {
            return;
        }
        if !target.deliver.connected() {
            // It is being restarted and will announce itself.
            self.delivered_to = None;
            return;
        }
        // `do_send` ignores the mailbox capacity: flow control is the credit
        // above, and a batch must never be dropped.
        target.deliver.do_send(Deliver {
            records,
            from: ctx.address().recipient(),
            origin: self.origin,
        });
    }

    fn set_paused(&mut self, paused: bool) {
        let Some(client) = &self.client else { return };
        // Held partitions stay paused until their hold ends.
        let owned: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, p)| paused || p.held_until.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        let result = if paused {
            client.pause(&owned)
        } else {
            client.resume(&owned)
        };
        match result {
            Ok(()) => self.paused = paused,
            Err(e) => tracing::warn!(error = %e, paused, "pause/resume failed"),
        }
    }

    /// Commits within a commit interval from now, unless already scheduled:
    /// an idle subscription has no timer running.
    fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.commit_scheduled || self.stopping {
            return;
        }
        self.commit_scheduled = true;
        ctx.run_later(self.settings.commit_interval, |act, ctx| {
            act.commit_scheduled = false;
            act.commit(ctx);
        });
    }

    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            // One at a time: try again once this one is done.
            self.schedule_commit(ctx);
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let offsets = self.committable(|p| p.revoking_since.is_none());
        if offsets.is_empty() {
            return;
        }
        self.committing = true;
        ctx.spawn(
            client
                .commit(offsets.clone())
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.committing = false;
                    match result {
                        Ok(()) => {
                            tracing::trace!(group = %act.group(), ?offsets, "committed");
                            act.mark_committed(&offsets)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "commit failed; retrying next interval");
                            act.schedule_commit(ctx);
                        }
                    }
                }),
        );
    }

    fn committable(&self, filter: impl Fn(&Partition) -> bool) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| filter(p))
            .filter_map(|(tp, p)| {
                p.watermark
                    .as_ref()
                    .and_then(|w| w.to_commit())
                    .map(|o| (tp.clone(), o))
            })
            .collect()
    }

    fn mark_committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(w) = self
                .partitions
                .get_mut(tp)
                .and_then(|p| p.watermark.as_mut())
            {
                w.committed(*o);
            }
        }
    }

    /// Commits and releases revoked partitions whose work is done (or, when
    /// `force`, whose drain deadline passed: their unfinished records will be
    /// read again by the new owner).
    fn finish_revokes(&mut self, force: bool, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let deadline = self.settings.drain_timeout;
        let ready: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, p)| match p.revoking_since {
                Some(since) => {
                    p.watermark.as_ref().is_none_or(|w| w.is_idle())
                        || (force && since.elapsed() >= deadline)
                }
                None => false,
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut offsets = Vec::new();
        for tp in &ready {
            self.assignment_view().remove(tp);
            if let Some(p) = self.partitions.remove(tp) {
                if let Some(w) = p.watermark {
                    if !w.is_idle() && !deadline.is_zero() {
                        tracing::warn!(group = %self.group(), partition = %tp, unfinished = w.in_flight(),
                            drain_timeout = ?deadline,
                            "drain timeout passed: giving a revoked partition up with unfinished records (the next owner reads them again)");
                    }
                    self.in_flight -= w.in_flight();
                    if let Some(o) = w.to_commit() {
                        offsets.push((tp.clone(), o));
                    }
                }
            }
        }
        tracing::debug!(group = %self.group(), ?ready, "releasing revoked partitions");
        let released = (self.dispatcher)().map(|(target, _)| target.released);
        // The consumer drops what it still has of them; then commit before
        // release, in this order, so the next owner starts exactly after
        // what this member finished and nothing of them is handled here
        // meanwhile.
        ctx.wait(
            async move {
                if let Some(released) = released {
                    let partitions = ready.clone();
                    // A consumer being restarted has nothing of them.
                    let _ = released.send(Released { partitions }).await;
                }
                if !offsets.is_empty() {
                    if let Err(e) = client.commit(offsets).await {
                        tracing::warn!(error = %e, "commit on revoke failed");
                    }
                }
                if let Err(e) = client.release(&ready) {
                    tracing::warn!(error = %e, "release failed");
                }
            }
            .into_actor(self),
        );
        self.after_progress();
    }

    /// Re-evaluates flow control and shutdown after records finished.
    fn after_progress(&mut self) {
        let counted = self.counted_in_flight();
        if self.paused && counted <= self.settings.max_in_flight / 2 {
            self.set_paused(false);
        }
        if let Some((_, 0)) = self.polling {
            if counted < self.settings.max_in_flight && !self.woken {
                // Its answer comes at once and the next poll has credit.
                if let Some(client) = &self.client {
                    client.wake();
                }
                self.woken = true;
            }
        }
        if self.stopping && self.in_flight == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
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
        self.assignment_view().clear();
        if let Some(client) = self.client.take() {
            client.close();
        }
    }
}

impl Handler<Completed> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, msg: Completed, ctx: &mut Context<Self>) {
        let mut revoking = false;
        let mut records = msg.0.iter().peekable();
        while let Some(first) = records.next() {
            // One partition lookup per run of records of one partition.
            let tp = first.topic_partition();
            let mut partition = self.partitions.get_mut(&tp);
            let mut record = Some(first);
            while let Some(r) = record {
                if let Some(w) = partition.as_mut().and_then(|p| p.watermark.as_mut()) {
                    if w.complete(r.offset).is_some() {
                        self.in_flight -= 1;
                    }
                }
                record = records.next_if(|next| {
                    next.partition == tp.partition && Arc::ptr_eq(&next.topic, &tp.topic)
                });
            }
            revoking |= partition.is_some_and(|p| p.revoking_since.is_some());
        }
        if revoking {
            self.finish_revokes(false, ctx);
        }
        self.schedule_commit(ctx);
        self.after_progress();
    }
}

impl Handler<Hold> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, Hold { partition, until }: Hold, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.revoking_since.is_none())
        else {
            return;
        };
        if p.held_until.is_none() {
            if let Err(e) = client.hold(std::slice::from_ref(&partition), true) {
                tracing::warn!(error = %e, %partition, "pause for a hold failed");
                return;
            }
        }
        p.held_until = Some(until);
        // What it holds no longer counts: a poll without credit may go on.
        self.after_progress();
        ctx.run_later(
            until.saturating_duration_since(Instant::now()),
            move |act, _| {
                let Some(p) = act.partitions.get_mut(&partition) else {
                    return;
                };
                if p.held_until != Some(until) {
                    return; // held again meanwhile, or already released
                }
                p.held_until = None;
                if let Some(client) = &act.client {
                    if let Err(e) = client.hold(std::slice::from_ref(&partition), false) {
                        tracing::warn!(error = %e, %partition, "resume after a hold failed");
                    }
                }
            },
        );
    }
}

impl Handler<DispatcherReady> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, _: DispatcherReady, ctx: &mut Context<Self>) {
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
        if self.in_flight == 0 || (self.dispatcher)().is_none() {
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
            .then(|(), act, _| {
                let offsets = act.committable(|_| true);
                let client = act.client.clone();
                async move {
                    match client {
                        Some(c) if !offsets.is_empty() => c.commit(offsets).await,
                        _ => Ok(()),
                    }
                }
                .into_actor(act)
            })
            .map(|result, act, ctx| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "final commit failed");
                }
                if let Some(client) = act.client.take() {
                    client.close();
                }
                ctx.stop();
            }),
        )
    }
}

#[cfg(test)]
#[path = "consumer_tests.rs"]
mod tests;
