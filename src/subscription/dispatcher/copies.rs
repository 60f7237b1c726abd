//! Copies at the idempotency gate: a record whose key this member is
//! handling under another record (read again, or published twice) is
//! queued in its lane like any record, marked a copy, so the records of
//! its Kafka key behind it keep their order. When its turn comes its lane
//! hands it back and waits while the Dispatcher settles it:
//! - its original's fate is final (its key being recorded): a duplicate,
//!   reported once the key is recorded; the lane goes on at once;
//! - its original is still being handled: it waits (its lane blocked) for
//!   that handling's end: a duplicate once the key is recorded, handled
//!   (first in its lane) if the handling is abandoned;
//! - its key is no longer in hand (the original was abandoned, or its key
//!   recorded, before the copy's turn): its key is claimed again, and the
//!   answer decides as for any record (handled, a duplicate, or waiting
//!   while another member holds the key).
//!
//! A copy of a partition given up is dropped with it, its lane released.

use actix::prelude::*;

use super::gate::Call;
use super::Dispatcher;
use crate::envelope::TopicPartition;
use crate::idempotency::Claim;
use crate::subscription::lane::Job;

/// How long a copy whose key another member holds waits before it is
/// claimed again.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Lane `i` reached copy `job` and waits (blocked) for what becomes of it.
    pub(super) fn copy_turn(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        let group = self.settings.group.clone();
        let key = match &self.gate {
            Some(gate) if self.live(&job) => gate.key_of(&group, &job.record),
            _ => None,
        };
        let Some(key) = key else {
            // Given up meanwhile (or not a copy after all: no gate).
            return self.release_lane(i);
        };
        let gate = self.gate.as_mut().expect("a gate");
        match gate.in_hand.get(&key).copied() {
            Some(true) => {
                // Its original's fate is final: a duplicate, reported once
                // the key is recorded.
                self.count(&job.record.topic, |c| c.duplicates.inc());
                let gate = self.gate.as_mut().expect("a gate");
                gate.completed.push((key, Some(job.record)));
                self.record_completed(ctx);
                self.release_lane(i);
            }
            Some(false) => gate.parked.entry(key).or_default().push((i, job)),
            None if gate.claiming_copies.contains(&key) => {
                gate.parked.entry(key).or_default().push((i, job));
            }
            None => self.claim_copies(key, vec![(i, job)], ctx),
        }
    }

    /// Claims `key` for `copies` (each blocking its lane), its original
    /// gone: the first is handled when new, all are duplicates when done;
    /// they wait while another member holds it or the store fails.
    pub(super) fn claim_copies(
        &mut self,
        key: String,
        copies: Vec<(usize, Job)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        gate.claiming_copies.insert(key.clone());
        if let Some(wait) = gate.claims.wait() {
            // Claims back off: this one too.
            ctx.run_later(wait, move |act, ctx| act.claim_copies(key, copies, ctx));
            return;
        }
        let (store, owner, lease) = gate.claimer();
        let keys = vec![key.clone()];
        ctx.spawn(
            async move { store.claim(&keys, &owner, lease).await }
                .into_actor(self)
                .map(move |answer, act, ctx| act.copies_claimed(key, copies, answer, ctx)),
        );
    }

    fn copies_claimed(
        &mut self,
        key: String,
        copies: Vec<(usize, Job)>,
        answer: crate::Result<Vec<Claim>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(live) = self.live_copies(&key, copies) else {
            return;
        };
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let claim = match answer.as_deref() {
            Ok([claim]) => *claim,
            Ok(_) | Err(_) => {
                let error = match answer {
                    Err(e) => e.to_string(),
                    Ok(_) => "the store answered a different number of claims".into(),
                };
                return self.copies_claim_failed(key, live, &error, ctx);
            }
        };
        gate.answered(Call::Claim);
        if live.is_empty() {
            return self.release_keys(vec![key], ctx);
        }
        match claim {
            Claim::New => self.first_copy_handled(key, live),
            Claim::Done => self.copies_duplicates(live, ctx),
            Claim::Busy => {
                gate.claiming_copies.insert(key.clone());
                ctx.run_later(BUSY_RETRY, move |act, ctx| act.claim_copies(key, live, ctx));
            }
        }
    }

    /// The claim of `key` for `copies` answered: with those parked
    /// meanwhile, the copies still ours (the lanes of the others released);
    /// None without a gate.
    fn live_copies(
        &mut self,
        key: &str,
        mut copies: Vec<(usize, Job)>,
    ) -> Option<Vec<(usize, Job)>> {
        let gate = self.gate.as_mut()?;
        gate.claiming_copies.remove(key);
        // Those that came meanwhile.
        copies.extend(gate.parked.remove(key).unwrap_or_default());
        let mut live = Vec::with_capacity(copies.len());
        for (i, job) in copies {
            if self.live(&job) {
                live.push((i, job));
            } else {
                self.release_lane(i);
            }
        }
        Some(live)
    }

    /// The store failed to claim `key` for copies `live`: they wait (their
    /// lanes blocked) for the claims' backoff, then `key` is claimed again.
    fn copies_claim_failed(
        &mut self,
        key: String,
        live: Vec<(usize, Job)>,
        error: &str,
        ctx: &mut Context<Self>,
    ) {
        let gate = self.gate.as_mut().expect("a gate");
        let delay = gate.claims.failed();
        gate.claiming_copies.insert(key.clone());
        self.store_failed(Call::Claim, error, delay);
        ctx.run_later(delay, move |act, ctx| act.claim_copies(key, live, ctx));
    }

    /// `key` claimed new for copies `live` (not empty): the first is
    /// handled, first in its lane; the others wait for its fate.
    fn first_copy_handled(&mut self, key: String, live: Vec<(usize, Job)>) {
        let gate = self.gate.as_mut().expect("a gate");
        let mut live = live.into_iter();
        let (i, mut job) = live.next().expect("one");
        gate.in_hand.insert(key.clone(), false);
        gate.by_record
            .insert(super::gate::at(&job.record), key.clone());
        let rest: Vec<(usize, Job)> = live.collect();
        if !rest.is_empty() {
            gate.parked.insert(key, rest);
        }
        job.copy = false;
        self.board.borrow_mut().lanes[i].queue.push_front(job);
        self.release_lane(i);
    }

    /// `key` already recorded: copies `live` are duplicates, their lanes
    /// released.
    fn copies_duplicates(&mut self, live: Vec<(usize, Job)>, ctx: &mut Context<Self>) {
        for (i, job) in live {
            self.duplicate(job.record);
            self.release_lane(i);
        }
        self.report(ctx);
    }

    /// `keys` were just recorded as handled: the copies waiting for them
    /// are duplicates, and their lanes go on.
    pub(super) fn originals_recorded(&mut self, keys: Vec<String>) {
        for key in keys {
            let Some(copies) = self.gate.as_mut().and_then(|g| g.parked.remove(&key)) else {
                continue;
            };
            for (i, job) in copies {
                if self.live(&job) {
                    self.duplicate(job.record);
                }
                self.release_lane(i);
            }
        }
    }

    /// Whether a copy of `key` is queued in a lane, its turn to come.
    pub(super) fn copy_queued(&self, key: &str) -> bool {
        let Some(gate) = &self.gate else {
            return false;
        };
        let group = &self.settings.group;
        self.board.borrow().lanes.iter().any(|lane| {
            lane.queue
                .iter()
                .filter(|job| job.copy)
                .any(|job| gate.key_of(group, &job.record).as_deref() == Some(key))
        })
    }

    /// Drops the copies waiting of `partitions` (given up), releasing their
    /// lanes.
    pub(super) fn drop_parked(&mut self, partitions: &[TopicPartition]) {
        let Some(gate) = self.gate.as_mut() else {
            return;
        };
        let mut lanes = Vec::new();
        gate.parked.retain(|_, copies| {
            copies.retain(|(i, job)| {
                let gone = partitions.contains(&job.record.topic_partition());
                if gone {
                    lanes.push(*i);
                }
                !gone
            });
            !copies.is_empty()
        });
        for i in lanes {
            self.release_lane(i);
        }
    }
}
