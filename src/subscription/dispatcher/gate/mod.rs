//! The Dispatcher's idempotency gate (an idempotent subscription's; see
//! [`idempotency`](crate::idempotency)): records reach the lanes only once
//! their keys are claimed, a batch's keys in one store call; a duplicate is
//! completed without its handler; a key another member holds holds its
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
//!
//! Here the gate's state; `claims.rs` and `completions.rs` the Dispatcher's
//! calls through it.

mod claims;
mod completions;

use std::collections::{HashMap, HashSet, VecDeque};

use kafkactor_actors::Backoff;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::protocol::Stamp;
use crate::envelope::{Record, TopicPartition};
use crate::idempotency::{Idempotency, IdempotencyStore};
use crate::subscription::lane::Job;

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

/// The wait after failed store calls of one kind.
const STORE_RETRY: Backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));

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
        let delay = STORE_RETRY.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
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
    pub(super) completed: Vec<(String, Option<Arc<Record>>)>,
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
            completed: Vec::new(),
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
