//! The Dispatcher's idempotency gate (an idempotent subscription's; see
//! [`idempotency`](crate::idempotency)): records reach the lanes only once
//! their keys are claimed, a batch's keys in one store call; a duplicate is
//! finished without its handler; a key another member holds holds its
//! partition back (later records of the partition wait behind it, so per-key
//! order stays); a record's key is recorded as done once its fate is final,
//! and only then is the record reported for commit.
//!
//! Store calls run one at a time per kind (claims, completions) in the
//! Dispatcher's context; what arrives meanwhile joins the next call, which
//! makes batches of whatever piled up. A failed call is tried again, backing
//! off from 50 ms to 5 s, its records waiting (uncommitted) meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::Dispatcher;
use crate::connection::protocol::Stamp;
use crate::envelope::{Record, TopicPartition};
use crate::error::Result;
use crate::idempotency::{Claim, Idempotency};

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

fn at(record: &Record) -> At {
    (record.topic.clone(), record.partition, record.offset)
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
    /// Partitions held back by a key another member holds, their records in
    /// order; and whether a new claim of them is planned.
    held: HashMap<TopicPartition, VecDeque<Pending>>,
    hold_timer: bool,
    /// The keys of the records being handled, and those keys.
    by_record: HashMap<At, String>,
    in_hand: HashSet<String>,
    /// Records whose fate is final, waiting for their key to be recorded
    /// (with the record when it is to be reported), and whether a call
    /// recording them is under way.
    finished: Vec<(String, Option<Arc<Record>>)>,
    completing: bool,
    /// Store calls failed in a row (for the backoff).
    failures: u32,
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
            in_hand: HashSet::new(),
            finished: Vec::new(),
            completing: false,
            failures: 0,
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
    /// handling still finishes).
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
        self.held.clear();
    }

    /// Drops what waits for `partitions` (given up); returns the keys this
    /// member may hold for them, to release.
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

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 50u64.saturating_mul(1 << self.failures.min(7));
        Duration::from_millis(ms.min(5_000))
    }
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Claims the keys of the records waiting, unless a claim is under way
    /// (they join the next one).
    pub(super) fn claim_waiting(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        if gate.claiming || gate.waiting.is_empty() {
            return;
        }
        gate.claiming = true;
        let batch = std::mem::take(&mut gate.waiting);
        let keys: Vec<String> = batch.iter().filter_map(|p| p.key.clone()).collect();
        let (store, owner, lease) = (
            gate.idempotency.store.clone(),
            gate.owner.clone(),
            gate.idempotency.lease,
        );
        ctx.spawn(
            async move { store.claim(&keys, &owner, lease).await }
                .into_actor(self)
                .map(move |claims, act, ctx| act.claimed(batch, claims, ctx)),
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
        gate.claiming = false;
        let claims = match claims {
            Ok(claims) if claims.len() == batch.iter().filter(|p| p.key.is_some()).count() => {
                claims
            }
            result => {
                let error = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "the store answered a different number of claims".into(),
                };
                let delay = gate.backoff();
                // Back in front, in their order, before what came since.
                let later = std::mem::replace(&mut gate.waiting, batch);
                gate.waiting.extend(later);
                self.store_failed("claim", &error, delay);
                ctx.run_later(delay, |act, ctx| act.claim_waiting(ctx));
                return;
            }
        };
        gate.failures = 0;
        let mut claims = claims.into_iter();
        let mut next = Vec::with_capacity(batch.len());
        for pending in batch {
            let claim = match pending.key {
                Some(_) => claims.next().unwrap_or(Claim::Busy),
                None => Claim::New,
            };
            next.push((pending, claim));
        }
        self.pass(next, ctx);
        self.claim_waiting(ctx);
    }

    /// Lets claimed records through, in order: into a lane, finished as
    /// duplicates, or held back behind a key another member holds.
    fn pass(&mut self, claimed: Vec<(Pending, Claim)>, ctx: &mut Context<Self>) {
        let mut hold = false;
        for (pending, claim) in claimed {
            if !self.feed.is_current(pending.stamp, &pending.record) {
                continue; // read again by the current connection, or given up
            }
            let gate = self.gate.as_mut().expect("a gate");
            let tp = pending.record.topic_partition();
            let claim = match (&pending.key, claim) {
                // Being handled here already (read again meanwhile): waits
                // for that handling to finish.
                (Some(key), Claim::New) if gate.in_hand.contains(key) => Claim::Busy,
                (_, claim) => claim,
            };
            if let Some(held) = gate.held.get_mut(&tp) {
                held.push_back(pending);
                continue;
            }
            match claim {
                Claim::New => {
                    if let Some(key) = &pending.key {
                        gate.in_hand.insert(key.clone());
                        gate.by_record.insert(at(&pending.record), key.clone());
                    }
                    self.enqueue(pending.record, pending.stamp);
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

    /// Claims the held partitions' records again (a key this member was
    /// handling was just recorded, or the hold's timer fired).
    fn claim_held(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        if gate.held.is_empty() {
            return;
        }
        if gate.claiming {
            // Claimed again once the claim under way has answered.
            return self.hold(ctx);
        }
        // Everything held goes through the claim again, in front of what
        // waits (it came first; records of a held partition never wait
        // there).
        let held: Vec<Pending> = gate.held.drain().flat_map(|(_, q)| q).collect();
        let waiting = std::mem::replace(&mut gate.waiting, held);
        gate.waiting.extend(waiting);
        self.claim_waiting(ctx);
    }

    /// `record` was handled before: finished without its handler.
    fn duplicate(&mut self, record: Arc<Record>) {
        self.count(&record.topic, |c| c.duplicates.inc());
        self.completed.push(record);
    }

    /// `record`'s fate is final (`live`: it is still this member's to
    /// report): its key is recorded first when it has one.
    pub(super) fn final_fate(&mut self, record: Arc<Record>, live: bool, ctx: &mut Context<Self>) {
        if let Some(gate) = self.gate.as_mut() {
            if let Some(key) = gate.by_record.remove(&at(&record)) {
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
    fn complete_finished(&mut self, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        if gate.completing || gate.finished.is_empty() {
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
                        let delay = gate.backoff();
                        let later = std::mem::replace(&mut gate.finished, finished);
                        gate.finished.extend(later);
                        act.store_failed("record", &e.to_string(), delay);
                        ctx.run_later(delay, |act, ctx| act.complete_finished(ctx));
                        return;
                    }
                    gate.failures = 0;
                    for (key, record) in finished {
                        gate.in_hand.remove(&key);
                        if let Some(record) = record {
                            act.completed.push(record);
                        }
                    }
                    act.report(ctx);
                    act.claim_held(ctx);
                    act.complete_finished(ctx);
                }),
        );
    }

    /// Gives up this member's claims on `keys` (its partitions moved).
    pub(super) fn release_keys(&mut self, keys: Vec<String>, ctx: &mut Context<Self>) {
        let Some(gate) = self.gate.as_ref() else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        let (store, owner) = (gate.idempotency.store.clone(), gate.owner.clone());
        let group = self.settings.group.clone();
        ctx.spawn(
            async move {
                if let Err(e) = store.release(&keys, &owner).await {
                    // Their leases run out instead.
                    tracing::warn!(%group, error = %e, "could not release idempotency claims");
                }
            }
            .into_actor(self),
        );
    }

    fn store_failed(&self, call: &str, error: &str, delay: Duration) {
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
