//! The Dispatcher's idempotency gate (an idempotent subscription's; see
//! [`idempotency`](crate::idempotency)): records reach the lanes only once
//! their keys are claimed, a batch's keys in one store call; a duplicate is
//! finished without its handler; a key another member holds holds its
//! partition back (later records of the partition wait behind it, so
//! per-key order stays); a record's key is recorded as done once its fate
//! is final, and only then is the record reported for commit. A copy of a
//! record this member is handling (the same key: read again, or published
//! twice) takes its place in its lane like any record and is settled when
//! its turn comes (`copies.rs`).
//!
//! Store calls run one at a time per kind (claims, completions) in the
//! Dispatcher's context; what arrives meanwhile joins the next call, which
//! makes batches of whatever piled up. A failed call is tried again,
//! backing off from 100 ms to 5 s per kind of call, its records waiting
//! (uncommitted) meanwhile: new records and held partitions wait for the
//! backoff too. Each kind's failure shows in the subscription's readiness
//! check (`idempotency:<group>`) until a call of that kind succeeds, in
//! this Dispatcher incarnation or the next.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::Dispatcher;
use crate::connection::protocol::Stamp;
use crate::envelope::{Record, TopicPartition};
use crate::error::Result;
use crate::idempotency::{Claim, Idempotency, IdempotencyStore};
use crate::subscription::lane::Job;

/// The store's answer to a claim of `records`' keys, one claim per record
/// (a record without a key passes as new); the error when the store failed
/// or answered for another number of keys.
fn per_record<'a>(
    records: impl Iterator<Item = &'a Pending> + Clone,
    claims: Result<Vec<Claim>>,
) -> std::result::Result<Vec<Claim>, String> {
    let claims = claims.map_err(|e| e.to_string())?;
    if claims.len() != records.clone().filter(|p| p.key.is_some()).count() {
        return Err("the store answered a different number of claims".into());
    }
    let mut claims = claims.into_iter();
    Ok(records
        .map(|p| match p.key {
            Some(_) => claims.next().unwrap_or(Claim::Busy),
            None => Claim::New,
        })
        .collect())
}

/// How often a held partition's head is claimed again.
const HOLD_RETRY: Duration = Duration::from_millis(100);

/// A record waiting at the gate.
pub(super) struct Pending {
    record: Arc<Record>,
    stamp: Stamp,
    /// Its idempotency key; `None` when it has none (it is not checked).
    key: Option<String>,
}

/// Where a record is, by topic, partition and offset.
type At = (Arc<str>, i32, i64);

pub(super) fn at(record: &Record) -> At {
    (record.topic.clone(), record.partition, record.offset)
}

/// The backoff of one kind of store call (claims, or completions).
#[derive(Default)]
pub(super) struct Retrying {
    /// Calls failed in a row.
    failures: u32,
    /// No call before then (a timer calls again at that time).
    until: Option<Instant>,
}

impl Retrying {
    /// Whether calls wait for the backoff now.
    pub(super) fn waits(&self) -> bool {
        self.wait().is_some()
    }

    /// How long calls still wait for the backoff.
    pub(super) fn wait(&self) -> Option<Duration> {
        let left = self.until?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// A call failed: how long until the next.
    pub(super) fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 50u64.saturating_mul(1 << self.failures.min(7));
        let delay = Duration::from_millis(ms.min(5_000));
        self.until = Some(Instant::now() + delay);
        delay
    }

    /// A call succeeded.
    fn answered(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}

/// A kind of store call, as the readiness check names it.
#[derive(Clone, Copy)]
pub(super) enum Call {
    Claim,
    Record,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Claim => "claim",
            Call::Record => "record",
        }
    }
}

pub(super) struct Gate {
    idempotency: Idempotency,
    /// This member: the owner of its claims, the same across the
    /// Dispatcher's restarts.
    owner: Arc<str>,
    /// Records waiting for their claim, in arrival order.
    waiting: Vec<Pending>,
    /// Whether a claim call is under way.
    claiming: bool,
    /// Partitions held back by a key another member holds, their records
    /// in order; and whether a new claim of them is planned.
    held: HashMap<TopicPartition, VecDeque<Pending>>,
    hold_timer: bool,
    /// The keys of the records being handled, and those keys with whether
    /// their record's fate is final (its key being recorded).
    pub(super) by_record: HashMap<At, String>,
    pub(super) in_hand: HashMap<String, bool>,
    /// Copies whose turn came while their original was being handled,
    /// with their (blocked) lane, by key; and the keys of copies being
    /// claimed.
    pub(super) parked: HashMap<String, Vec<(usize, Job)>>,
    pub(super) claiming_copies: HashSet<String>,
    /// Records whose fate is final, waiting for their key to be recorded
    /// (with the record when it is to be reported), and whether a call
    /// recording them is under way.
    pub(super) finished: Vec<(String, Option<Arc<Record>>)>,
    completing: bool,
    /// The backoff of claims, and of completions.
    pub(super) claims: Retrying,
    completions: Retrying,
}

impl Gate {
    pub(super) fn new(idempotency: Idempotency, owner: Arc<str>) -> Self {
        Gate {
            idempotency,
            owner,
            waiting: Vec::new(),
            claiming: false,
            held: HashMap::new(),
            hold_timer: false,
            by_record: HashMap::new(),
            in_hand: HashMap::new(),
            parked: HashMap::new(),
            claiming_copies: HashSet::new(),
            finished: Vec::new(),
            completing: false,
            claims: Retrying::default(),
            completions: Retrying::default(),
        }
    }

    /// A record read: waits for its claim, behind its partition's held
    /// records if there are any.
    pub(super) fn admit(&mut self, group: &str, record: Arc<Record>, stamp: Stamp) {
        let key = self.idempotency.key_of(group, &record);
        let pending = Pending { record, stamp, key };
        match self.held.get_mut(&pending.record.topic_partition()) {
            Some(held) => held.push_back(pending),
            None => self.waiting.push(pending),
        }
    }

    /// A new connection incarnation reads everything again: what waits
    /// here is dropped (the keys of records being handled are kept: their
    /// handling still finishes); the lanes of parked copies are returned,
    /// to be released.
    pub(super) fn clear(&mut self) -> Vec<usize> {
        self.waiting.clear();
        self.held.clear();
        self.parked
            .drain()
            .flat_map(|(_, copies)| copies.into_iter().map(|(lane, _)| lane))
            .collect()
    }

    /// What a claim needs: the store, this member, the lease.
    pub(super) fn claimer(&self) -> (Arc<dyn IdempotencyStore>, Arc<str>, Duration) {
        (
            self.idempotency.store.clone(),
            self.owner.clone(),
            self.idempotency.lease,
        )
    }

    /// The key of `record`.
    pub(super) fn key_of(&self, group: &str, record: &Record) -> Option<String> {
        self.idempotency.key_of(group, record)
    }

    /// Drops what waits for `partitions` (given up); returns the keys this
    /// member may hold for them, to release (unless a copy of one waits).
    pub(super) fn release(&mut self, partitions: &[TopicPartition], dropped: &[At]) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for tp in partitions {
            if let Some(held) = self.held.remove(tp) {
                keys.extend(held.into_iter().filter_map(|p| p.key));
            }
        }
        self.waiting.retain(|p| {
            let gone = partitions.contains(&p.record.topic_partition());
            if gone {
                keys.extend(p.key.clone());
            }
            !gone
        });
        for record in dropped {
            if let Some(key) = self.by_record.remove(record) {
                self.in_hand.remove(&key);
                keys.push(key);
            }
        }
        keys
    }

    /// A store call of kind `call` succeeded: that kind no longer fails
    /// (whichever incarnation saw it fail).
    pub(super) fn answered(&mut self, call: Call) {
        match call {
            Call::Claim => self.claims.answered(),
            Call::Record => self.completions.answered(),
        }
        self.idempotency.failing.clear_for(call.name());
    }
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Claims the keys of the records waiting, unless a claim is under way
    /// (they join the next one).
    pub(super) fn claim_waiting(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        // Backing off: the backoff's timer claims them.
        if gate.claiming || gate.waiting.is_empty() || gate.claims.waits() {
            return;
        }
        let batch = std::mem::take(&mut gate.waiting);
        let keys = batch.iter().filter_map(|p| p.key.clone()).collect();
        self.spawn_claim(keys, batch, Self::claimed, ctx);
    }

    /// Claims `keys` (those of `records`, in order) in one store call, one
    /// claim at a time; `answer` gets `records` back with the store's answer.
    fn spawn_claim<T: 'static>(
        &mut self,
        keys: Vec<String>,
        records: T,
        answer: fn(&mut Self, T, Result<Vec<Claim>>, &mut Context<Self>),
        ctx: &mut Context<Self>,
    ) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        gate.claiming = true;
        let (store, owner, lease) = gate.claimer();
        ctx.spawn(
            async move { store.claim(&keys, &owner, lease).await }
                .into_actor(self)
                .map(move |claims, act, ctx| {
                    if let Some(gate) = act.gate.as_mut() {
                        gate.claiming = false;
                    }
                    answer(act, records, claims, ctx)
                }),
        );
    }

    /// The answer to a claim of `batch`.
    fn claimed(
        &mut self,
        batch: Vec<Pending>,
        claims: Result<Vec<Claim>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let claims = match per_record(batch.iter(), claims) {
            Ok(claims) => claims,
            Err(error) => {
                // Back in front, in their order, before what came since.
                let later = std::mem::replace(&mut gate.waiting, batch);
                gate.waiting.extend(later);
                return self.claim_failed(&error, ctx);
            }
        };
        gate.answered(Call::Claim);
        self.pass(batch.into_iter().zip(claims).collect(), ctx);
        self.claim_waiting(ctx);
    }

    /// Lets claimed records through, in order: into a lane, finished as
    /// duplicates, or held back behind a key another member holds.
    fn pass(&mut self, claimed: Vec<(Pending, Claim)>, ctx: &mut Context<Self>) {
        let mut hold = false;
        let mut release = Vec::new();
        for (pending, claim) in claimed {
            if !self.feed.is_current(pending.stamp, &pending.record) {
                // Read again by the current connection, or given up: a
                // claim made for it is given back (another member may own
                // its partition now).
                if let (Some(key), Claim::New) = (pending.key, claim) {
                    release.push(key);
                }
                continue;
            }
            let gate = self.gate.as_mut().expect("a gate");
            let tp = pending.record.topic_partition();
            if let Some(held) = gate.held.get_mut(&tp) {
                // Behind a key another member holds: not handled now, so
                // not claimed now either (a claim kept while waiting could
                // hold that member back in turn).
                if let (Some(key), Claim::New) = (&pending.key, claim) {
                    release.push(key.clone());
                }
                held.push_back(pending);
                continue;
            }
            match claim {
                // Being handled here already under another record: it
                // takes its place in its lane, settled when its turn comes.
                Claim::New
                    if pending
                        .key
                        .as_ref()
                        .is_some_and(|k| gate.in_hand.contains_key(k)) =>
                {
                    self.enqueue(pending.record, pending.stamp, true);
                }
                Claim::New => {
                    if let Some(key) = &pending.key {
                        gate.in_hand.insert(key.clone(), false);
                        gate.by_record.insert(at(&pending.record), key.clone());
                    }
                    self.enqueue(pending.record, pending.stamp, false);
                }
                Claim::Done => self.duplicate(pending.record),
                Claim::Busy => {
                    gate.held.entry(tp).or_default().push_back(pending);
                    hold = true;
                }
            }
        }
        self.wake_lanes();
        self.report(ctx);
        if hold {
            self.hold(ctx);
        }
        self.release_keys(release, ctx);
    }

    /// Plans a new claim of the held partitions' records.
    fn hold(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        if gate.hold_timer || gate.held.is_empty() {
            return;
        }
        gate.hold_timer = true;
        ctx.run_later(HOLD_RETRY, |act, ctx| {
            if let Some(gate) = act.gate.as_mut() {
                gate.hold_timer = false;
            }
            act.claim_held(ctx);
        });
    }

    /// Claims the head of each held partition again (a key this member
    /// was handling was just recorded, or the hold's timer fired).
    pub(super) fn claim_held(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        // Backing off: the backoff's timer claims them.
        if gate.held.is_empty() || gate.claims.waits() {
            return;
        }
        if gate.claiming {
            // Claimed again once the claim under way has answered.
            return self.hold(ctx);
        }
        // The heads leave their queues while claimed; the partitions stay
        // held (what arrives meanwhile queues behind).
        let heads: Vec<(TopicPartition, Pending)> = gate
            .held
            .iter_mut()
            .filter_map(|(tp, q)| q.pop_front().map(|p| (tp.clone(), p)))
            .collect();
        let keys = heads.iter().filter_map(|(_, p)| p.key.clone()).collect();
        self.spawn_claim(keys, heads, Self::claimed_heads, ctx);
    }

    /// The answer to a claim of held partitions' heads: a head let through
    /// lets its partition go (what queued behind it is claimed next); a
    /// head still busy stays first.
    fn claimed_heads(
        &mut self,
        heads: Vec<(TopicPartition, Pending)>,
        claims: Result<Vec<Claim>>,
        ctx: &mut Context<Self>,
    ) {
        let live: Vec<bool> = heads
            .iter()
            .map(|(_, p)| self.feed.is_current(p.stamp, &p.record))
            .collect();
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let claims = match per_record(heads.iter().map(|(_, p)| p), claims) {
            Ok(claims) => claims,
            Err(error) => {
                for (tp, head) in heads {
                    gate.held.entry(tp).or_default().push_front(head);
                }
                return self.claim_failed(&error, ctx);
            }
        };
        gate.answered(Call::Claim);
        let mut next = Vec::new();
        for (((tp, head), live), claim) in heads.into_iter().zip(live).zip(claims) {
            if !live {
                // Given up meanwhile: goes to pass, which drops it and
                // gives back a claim made for it.
                next.push((head, claim));
                continue;
            }
            if claim == Claim::Busy {
                gate.held.entry(tp).or_default().push_front(head);
                continue;
            }
            // Let through: first the head, then what queued behind it.
            let behind = gate.held.remove(&tp).unwrap_or_default();
            next.push((head, claim));
            let waiting = std::mem::take(&mut gate.waiting);
            gate.waiting.extend(behind);
            gate.waiting.extend(waiting);
        }
        self.pass(next, ctx);
        self.hold(ctx);
        self.claim_waiting(ctx);
    }

    /// `record` will not be finished here after all (dropped while not
    /// this member's any more, or its queue emptied): its key is no longer
    /// in hand. A copy waiting for it is handled instead; without one,
    /// this member's claim is given back.
    pub(super) fn abandon(&mut self, record: &Record, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let Some(key) = gate.by_record.remove(&at(record)) else {
            return;
        };
        gate.in_hand.remove(&key);
        self.release_keys(vec![key], ctx);
    }

    /// `record` was handled before: finished without its handler.
    pub(super) fn duplicate(&mut self, record: Arc<Record>) {
        self.count(&record.topic, |c| c.duplicates.inc());
        self.completed.push(record);
    }

    /// Acknowledged records of an idempotent subscription: each key is
    /// recorded before its record is reported (`done` is left empty).
    #[inline(never)]
    pub(super) fn acked_through_gate(&mut self, done: &mut Vec<Job>, ctx: &mut Context<Self>) {
        for job in done.drain(..) {
            let live = self.live(&job);
            if live {
                if let Some(tap) = &self.settings.lineage {
                    tap.handled(&self.settings.group, &job.record, "acked", None);
                }
            }
            self.final_fate(job.record, live, ctx);
        }
    }

    /// `record`'s fate is final (`live`: it is still this member's to
    /// report): its key is recorded first when it has one.
    pub(super) fn final_fate(&mut self, record: Arc<Record>, live: bool, ctx: &mut Context<Self>) {
        if let Some(gate) = self.gate.as_mut() {
            if let Some(key) = gate.by_record.remove(&at(&record)) {
                gate.in_hand.insert(key.clone(), true);
                gate.finished.push((key, live.then_some(record)));
                return self.complete_finished(ctx);
            }
        }
        if live {
            self.completed.push(record);
        }
    }

    /// Records the keys of the finished records, unless a call doing so is
    /// under way (they join the next one).
    pub(super) fn complete_finished(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        // Backing off: the backoff's timer records them.
        if gate.completing || gate.finished.is_empty() || gate.completions.waits() {
            return;
        }
        gate.completing = true;
        let finished = std::mem::take(&mut gate.finished);
        let keys: Vec<String> = finished.iter().map(|(k, _)| k.clone()).collect();
        let (store, ttl) = (gate.idempotency.store.clone(), gate.idempotency.ttl);
        ctx.spawn(
            async move { store.complete(&keys, ttl).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let Some(gate) = act.gate.as_mut() else {
                        return;
                    };
                    gate.completing = false;
                    if let Err(e) = result {
                        let delay = gate.completions.failed();
                        let later = std::mem::replace(&mut gate.finished, finished);
                        gate.finished.extend(later);
                        act.store_failed(Call::Record, &e.to_string(), delay);
                        ctx.run_later(delay, |act, ctx| act.complete_finished(ctx));
                        return;
                    }
                    gate.answered(Call::Record);
                    let mut recorded = Vec::with_capacity(finished.len());
                    for (key, record) in finished {
                        gate.in_hand.remove(&key);
                        if let Some(record) = record {
                            act.completed.push(record);
                        }
                        recorded.push(key);
                    }
                    // Copies waiting for them are duplicates.
                    act.originals_recorded(recorded);
                    act.report(ctx);
                    act.complete_finished(ctx);
                }),
        );
    }

    /// Gives up this member's claims on `keys` (its partitions moved, or
    /// their records will not be handled here). A key this member is
    /// handling under another record keeps its claim, and so does one a
    /// copy of which waits here (giving it back would let another member
    /// handle it at the same time): a copy whose turn came claims it now.
    pub(super) fn release_keys(&mut self, keys: Vec<String>, ctx: &mut Context<Self>) {
        let mut release = Vec::new();
        for key in keys {
            let Some(gate) = self.gate.as_mut() else {
                return;
            };
            if gate.in_hand.contains_key(&key) || gate.claiming_copies.contains(&key) {
                continue;
            }
            if let Some(copies) = gate.parked.remove(&key) {
                self.claim_copies(key, copies, ctx);
                continue;
            }
            if !self.copy_queued(&key) {
                release.push(key);
            }
        }
        let Some(gate) = self.gate.as_ref() else {
            return;
        };
        if release.is_empty() {
            return;
        }
        let (store, owner) = (gate.idempotency.store.clone(), gate.owner.clone());
        let group = self.settings.group.clone();
        ctx.spawn(
            async move {
                if let Err(e) = store.release(&release, &owner).await {
                    // Their leases run out instead.
                    tracing::warn!(%group, error = %e, "could not release idempotency claims");
                }
            }
            .into_actor(self),
        );
    }

    /// A claim failed: every claim waits for the backoff, then the
    /// records waiting and the held partitions are claimed again.
    fn claim_failed(&mut self, error: &str, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let delay = gate.claims.failed();
        self.store_failed(Call::Claim, error, delay);
        ctx.run_later(delay, |act, ctx| {
            act.claim_waiting(ctx);
            act.claim_held(ctx);
        });
    }

    pub(super) fn store_failed(&self, call: Call, error: &str, delay: Duration) {
        let call = call.name();
        if let Some(gate) = &self.gate {
            gate.idempotency.failing.set_for(call, error.to_string());
        }
        let group = &self.settings.group;
        self.settings
            .metrics
            .collectors()
            .idempotency_errors
            .with_label_values(&[group])
            .inc();
        tracing::warn!(%group, call, %error, ?delay,
            "the idempotency store failed; its records wait and it is tried again");
    }
}
