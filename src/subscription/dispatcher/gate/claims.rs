//! Claims: the Dispatcher passes records through the gate once their keys
//! are claimed (a batch's keys in one store call); a duplicate is finished
//! without its handler; a key another member holds holds its partition
//! back, and held partitions are claimed again.

use std::time::Duration;

use actix::prelude::*;

use super::{at, Call, Pending};
use crate::envelope::TopicPartition;
use crate::error::Result;
use crate::idempotency::Claim;
use crate::subscription::dispatcher::Dispatcher;

/// How often a held partition's head is claimed again.
const HOLD_RETRY: Duration = Duration::from_millis(100);
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

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Claims the keys of the records waiting, unless a claim is under way
    /// (they join the next one).
    pub(in crate::subscription::dispatcher) fn claim_waiting(&mut self, ctx: &mut Context<Self>) {
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
    pub(in crate::subscription::dispatcher) fn spawn_claim<T: 'static>(
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
    pub(in crate::subscription::dispatcher) fn claimed(
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
    pub(in crate::subscription::dispatcher) fn pass(
        &mut self,
        claimed: Vec<(Pending, Claim)>,
        ctx: &mut Context<Self>,
    ) {
        let mut hold = false;
        let mut release = Vec::new();
        for (pending, claim) in claimed {
            if self.pass_one(pending, claim, &mut release) {
                hold = true;
            }
        }
        self.wake_lanes();
        self.report(ctx);
        if hold {
            self.hold(ctx);
        }
        self.release_keys(release, ctx);
    }

    /// Lets one claimed record through (see [`pass`](Self::pass)); the keys
    /// to give back go to `release`. Whether its key is busy (held by
    /// another member): its partition is held from it on.
    #[inline]
    fn pass_one(&mut self, pending: Pending, claim: Claim, release: &mut Vec<String>) -> bool {
        if !self.feed.is_current(pending.stamp, &pending.record) {
            // Read again by the current connection, or given up: a
            // claim made for it is given back (another member may own
            // its partition now).
            if let (Some(key), Claim::New) = (pending.key, claim) {
                release.push(key);
            }
            return false;
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
            return false;
        }
        self.let_through(pending, claim, tp)
    }

    /// Lets a claimed record of partition `tp` (not held) through: into a
    /// lane, finished as a duplicate, or holding its partition back (then
    /// true) behind a key another member holds.
    #[inline]
    fn let_through(&mut self, pending: Pending, claim: Claim, tp: TopicPartition) -> bool {
        let gate = self.gate.as_mut().expect("a gate");
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
                return true;
            }
        }
        false
    }

    /// Plans a new claim of the held partitions' records.
    pub(in crate::subscription::dispatcher) fn hold(&mut self, ctx: &mut Context<Self>) {
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
    pub(in crate::subscription::dispatcher) fn claim_held(&mut self, ctx: &mut Context<Self>) {
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
    pub(in crate::subscription::dispatcher) fn claimed_heads(
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

    /// A claim failed: every claim waits for the backoff, then the
    /// records waiting and the held partitions are claimed again.
    pub(in crate::subscription::dispatcher) fn claim_failed(
        &mut self,
        error: &str,
        ctx: &mut Context<Self>,
    ) {
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
}
