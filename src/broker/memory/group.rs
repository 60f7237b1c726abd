//! Consumer groups of the embedded broker: members, the assignment of
//! partitions to members, committed offsets, and cooperative rebalancing.
//!
//! A partition is given to its new owner only after the old owner has been
//! told it is revoked, has committed, and has released it, so two members
//! never work on one partition at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use super::{MemoryBroker, State, Topic};
use crate::broker::OffsetReset;
use crate::envelope::TopicPartition;

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) topics: Vec<Arc<str>>,
    pub(crate) reset: OffsetReset,
    /// Owned and announced partitions that may be fetched.
    pub(crate) assigned: BTreeSet<TopicPartition>,
    /// Owned, not yet announced with `Assigned`.
    pub(crate) pending_assign: Vec<TopicPartition>,
    /// Revoked, not yet announced with `Revoked`.
    pub(crate) pending_revoke: Vec<TopicPartition>,
    /// Revoked (announced or not), waiting for `release`.
    pub(crate) revoking: HashSet<TopicPartition>,
    pub(crate) positions: HashMap<TopicPartition, i64>,
    pub(crate) paused: HashSet<TopicPartition>,
    pub(crate) notify: Arc<Notify>,
    /// Round-robin start for fair fetching across partitions.
    pub(crate) fetch_cursor: usize,
}

impl Member {
    pub(crate) fn new(topics: Vec<Arc<str>>, reset: OffsetReset) -> Self {
        Member {
            topics,
            reset,
            assigned: BTreeSet::new(),
            pending_assign: Vec::new(),
            pending_revoke: Vec::new(),
            revoking: HashSet::new(),
            positions: HashMap::new(),
            paused: HashSet::new(),
            notify: Arc::new(Notify::new()),
            fetch_cursor: 0,
        }
    }

    /// Whether this member currently owns `tp` (including while revoking it).
    pub(crate) fn owns(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains(tp) || self.pending_assign.contains(tp) || self.revoking.contains(tp)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Boxed: a map of one member (the usual case) would otherwise hold a
    /// whole B-tree leaf of eleven members' room (3 KiB) per group.
    pub(crate) members: BTreeMap<u64, Box<Member>>,
    committed: HashMap<TopicPartition, i64>,
    owner: HashMap<TopicPartition, u64>,
    /// Counts rebalances that moved at least one partition.
    pub(crate) generation: u64,
}

impl Group {
    pub(crate) fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.committed.get(tp).copied()
    }

    pub(crate) fn commit(&mut self, tp: TopicPartition, offset: i64) {
        self.committed.insert(tp, offset);
    }

    pub(crate) fn assignment(&self) -> HashMap<u64, Vec<TopicPartition>> {
        let mut out: HashMap<u64, Vec<TopicPartition>> = HashMap::new();
        for (tp, m) in &self.owner {
            out.entry(*m).or_default().push(tp.clone());
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Removes a member, giving its partitions back to the group at once.
    pub(crate) fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
        self.owner.retain(|_, m| *m != id);
    }

    /// Gives revoked partitions back to the group.
    pub(crate) fn release(&mut self, id: u64, tps: &[TopicPartition]) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        for tp in tps {
            if member.revoking.remove(tp) {
                member.positions.remove(tp);
                member.paused.remove(tp);
                if self.owner.get(tp) == Some(&id) {
                    self.owner.remove(tp);
                }
            }
        }
    }
}

/// Wakes every member of `groups` subscribed to `topic`.
pub(crate) fn wake_subscribers(groups: &HashMap<String, Group>, topic: &str) {
    for g in groups.values() {
        for m in g.members.values() {
            if m.topics.iter().any(|t| &**t == topic) {
                m.notify.notify_one();
            }
        }
    }
}

/// Moves the group towards its target assignment: round-robin of each
/// topic's partitions over the members subscribed to it, in member order.
pub(crate) fn rebalance(state: &mut State, group_name: &str) {
    let counts = partition_counts(state, group_name);
    let State { topics, groups, .. } = state;
    let Some(group) = groups.get_mut(group_name) else {
        return;
    };
    let target = group.target(&counts);
    let revoked = group.revoke_misplaced(&target);
    let assigned = group.assign_free(target, |tp| end_offset(topics, tp));
    if revoked || assigned {
        group.generation += 1;
    }
}

/// The partition count of every topic a member of the group subscribes to.
fn partition_counts(state: &State, group_name: &str) -> HashMap<Arc<str>, i32> {
    let mut counts: HashMap<Arc<str>, i32> = HashMap::new();
    if let Some(g) = state.groups.get(group_name) {
        for m in g.members.values() {
            for t in &m.topics {
                counts
                    .entry(t.clone())
                    .or_insert_with(|| MemoryBroker::partition_count(state, t));
            }
        }
    }
    counts
}

/// The offset one past the last record of `tp` (0 when it does not exist).
fn end_offset(topics: &FxHashMap<Arc<str>, Topic>, tp: &TopicPartition) -> i64 {
    topics
        .get(&tp.topic)
        .and_then(|t| t.partitions.get(tp.partition as usize))
        .map_or(0, |l| l.len() as i64)
}

impl Group {
    /// The owner each partition should have: round-robin of each topic's
    /// `counts` partitions over the members subscribed to it.
    fn target(&self, counts: &HashMap<Arc<str>, i32>) -> HashMap<TopicPartition, u64> {
        let mut target: HashMap<TopicPartition, u64> = HashMap::new();
        for (topic, &n) in counts {
            let subs: Vec<u64> = self
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(topic))
                .map(|(id, _)| *id)
                .collect();
            if subs.is_empty() {
                continue;
            }
            for p in 0..n {
                target.insert(
                    TopicPartition::new(topic.clone(), p),
                    subs[p as usize % subs.len()],
                );
            }
        }
        target
    }

    /// Revokes what is owned by someone other than its target; returns
    /// whether a revocation is to be announced.
    fn revoke_misplaced(&mut self, target: &HashMap<TopicPartition, u64>) -> bool {
        let mut changed = false;
        let owned: Vec<(TopicPartition, u64)> =
            self.owner.iter().map(|(tp, m)| (tp.clone(), *m)).collect();
        for (tp, current) in owned {
            if target.get(&tp) == Some(&current) {
                continue;
            }
            let Some(m) = self.members.get_mut(&current) else {
                self.owner.remove(&tp);
                continue;
            };
            if m.revoking.contains(&tp) {
                continue;
            }
            if let Some(i) = m.pending_assign.iter().position(|x| *x == tp) {
                // Never announced: give it back directly.
                m.pending_assign.remove(i);
                m.positions.remove(&tp);
                self.owner.remove(&tp);
                continue;
            }
            m.assigned.remove(&tp);
            m.revoking.insert(tp.clone());
            m.pending_revoke.push(tp);
            m.notify.notify_one();
            changed = true;
        }
        changed
    }

    /// Assigns what is free to its target, at the committed offset or, with
    /// none, where the member's reset says (`end_offset` for `Latest`);
    /// returns whether anything was assigned.
    fn assign_free(
        &mut self,
        target: HashMap<TopicPartition, u64>,
        end_offset: impl Fn(&TopicPartition) -> i64,
    ) -> bool {
        let mut changed = false;
        let mut free: Vec<(TopicPartition, u64)> = target
            .into_iter()
            .filter(|(tp, _)| !self.owner.contains_key(tp))
            .collect();
        free.sort();
        for (tp, id) in free {
            let committed = self.committed.get(&tp).copied();
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            let position = committed.unwrap_or_else(|| match m.reset {
                OffsetReset::Earliest => 0,
                OffsetReset::Latest => end_offset(&tp),
            });
            m.positions.insert(tp.clone(), position);
            m.pending_assign.push(tp.clone());
            self.owner.insert(tp, id);
            m.notify.notify_one();
            changed = true;
        }
        changed
    }
}
