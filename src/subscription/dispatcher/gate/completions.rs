//! Completions through the gate: a record's key is recorded as done once
//! its fate is final, and only then is the record reported for commit;
//! keys of records given up are released; a store that fails is tried
//! again with backoff and shows in readiness.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{at, Call};
use crate::envelope::Record;

use crate::subscription::dispatcher::Dispatcher;
use crate::subscription::lane::Job;

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// `record` will not be completed here after all (dropped while not
    /// this member's any more, or its queue emptied): its key is no longer
    /// in hand. A copy waiting for it is handled instead; without one,
    /// this member's claim is given back.
    pub(in crate::subscription::dispatcher) fn abandon(
        &mut self,
        record: &Record,
        ctx: &mut Context<Self>,
    ) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let Some(key) = gate.by_record.remove(&at(record)) else {
            return;
        };
        gate.in_hand.remove(&key);
        self.release_keys(vec![key], ctx);
    }

    /// `record` was handled before: completed without its handler.
    pub(in crate::subscription::dispatcher) fn duplicate(&mut self, record: Arc<Record>) {
        self.count(&record.topic, |c| c.duplicates.inc());
        self.completed.push(record);
    }

    /// Acknowledged records of an idempotent subscription: each key is
    /// recorded before its record is reported (`acked` is left empty).
    #[inline(never)]
    pub(in crate::subscription::dispatcher) fn acked_through_gate(
        &mut self,
        acked: &mut Vec<Job>,
        ctx: &mut Context<Self>,
    ) {
        for job in acked.drain(..) {
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
    pub(in crate::subscription::dispatcher) fn final_fate(
        &mut self,
        record: Arc<Record>,
        live: bool,
        ctx: &mut Context<Self>,
    ) {
        if let Some(gate) = self.gate.as_mut() {
            if let Some(key) = gate.by_record.remove(&at(&record)) {
                gate.in_hand.insert(key.clone(), true);
                gate.completed.push((key, live.then_some(record)));
                return self.record_completed(ctx);
            }
        }
        if live {
            self.completed.push(record);
        }
    }

    /// Records the keys of the completed records, unless a call doing so is
    /// under way (they join the next one).
    pub(in crate::subscription::dispatcher) fn record_completed(
        &mut self,
        ctx: &mut Context<Self>,
    ) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        // Backing off: the backoff's timer records them.
        if gate.completing || gate.completed.is_empty() || gate.completions.waits() {
            return;
        }
        gate.completing = true;
        let completed = std::mem::take(&mut gate.completed);
        let keys: Vec<String> = completed.iter().map(|(k, _)| k.clone()).collect();
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
                        let later = std::mem::replace(&mut gate.completed, completed);
                        gate.completed.extend(later);
                        act.store_failed(Call::Record, &e.to_string(), delay);
                        ctx.run_later(delay, |act, ctx| act.record_completed(ctx));
                        return;
                    }
                    gate.answered(Call::Record);
                    let mut recorded = Vec::with_capacity(completed.len());
                    for (key, record) in completed {
                        gate.in_hand.remove(&key);
                        if let Some(record) = record {
                            act.completed.push(record);
                        }
                        recorded.push(key);
                    }
                    // Copies waiting for them are duplicates.
                    act.originals_recorded(recorded);
                    act.report(ctx);
                    act.record_completed(ctx);
                }),
        );
    }

    /// Gives up this member's claims on `keys` (its partitions moved, or
    /// their records will not be handled here). A key this member is
    /// handling under another record keeps its claim, and so does one a
    /// copy of which waits here (giving it back would let another member
    /// handle it at the same time): a copy whose turn came claims it now.
    pub(in crate::subscription::dispatcher) fn release_keys(
        &mut self,
        keys: Vec<String>,
        ctx: &mut Context<Self>,
    ) {
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

    pub(in crate::subscription::dispatcher) fn store_failed(
        &self,
        call: Call,
        error: &str,
        delay: Duration,
    ) {
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
