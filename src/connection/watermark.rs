//! The commit watermark of one partition: records are handed out in offset
//! order and finish in any order; the committable position is the lowest
//! offset not yet finished (Kafka commits "the next offset to read").
//!
//! Each in-flight offset carries an item (the connection keeps the record
//! itself there, so it can hand unfinished records to a restarted dispatcher).

use std::collections::VecDeque;

/// Tracks in-flight offsets of one partition, each with an item `T`.
#[derive(Debug, Clone)]
pub struct Watermark<T = ()> {
    /// Tracked offsets in increasing order, with their item while unfinished.
    pending: VecDeque<(i64, Option<T>)>,
    /// Number of unfinished entries in `pending`.
    unfinished: usize,
    /// Everything below this offset is finished.
    position: i64,
    /// The last position handed to the broker as committed.
    committed: i64,
}

impl<T> Watermark<T> {
    /// A partition whose consumption starts at `position`.
    pub fn new(position: i64) -> Self {
        Watermark {
            pending: VecDeque::new(),
            unfinished: 0,
            position,
            committed: position,
        }
    }

    /// Records that `offset` was handed out. Offsets must increase; an offset
    /// at or below one already tracked is refused (returns false).
    pub fn track(&mut self, offset: i64, item: T) -> bool {
        let last = self.pending.back().map(|&(o, _)| o);
        if last.is_some_and(|l| offset <= l) || offset < self.position {
            return false;
        }
        if self.pending.is_empty() {
            // Offsets may skip (compaction, transactions): nothing below is in flight.
            self.position = offset;
        }
        self.pending.push_back((offset, Some(item)));
        self.unfinished += 1;
        true
    }

    /// Marks `offset` finished and gives its item back; None if it was not in flight.
    pub fn complete(&mut self, offset: i64) -> Option<T> {
        // Completions mostly arrive in order: look at the front first.
        let i = match self.pending.front() {
            Some(&(o, _)) if o == offset => 0,
            _ => self
                .pending
                .binary_search_by_key(&offset, |&(o, _)| o)
                .ok()?,
        };
        let item = self.pending[i].1.take()?;
        self.unfinished -= 1;
        while let Some((o, None)) = self.pending.front() {
            self.position = *o + 1;
            self.pending.pop_front();
        }
        if let Some(&(o, _)) = self.pending.front() {
            self.position = o;
        }
        Some(item)
    }

    /// The items of unfinished offsets, in offset order.
    pub(crate) fn unfinished(&self) -> impl Iterator<Item = &T> {
        self.pending.iter().filter_map(|(_, item)| item.as_ref())
    }

    /// The offset to commit: every record below it is finished.
    #[cfg(test)]
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    /// Stops tracking the offsets from `offset` on (they will not be
    /// finished here): the position never passes `offset`. Returns how
    /// many unfinished offsets were dropped.
    pub(crate) fn give_up_from(&mut self, offset: i64) -> usize {
        let mut dropped = 0;
        while let Some(&(o, ref item)) = self.pending.back() {
            if o < offset {
                break;
            }
            dropped += usize::from(item.is_some());
            self.pending.pop_back();
        }
        self.unfinished -= dropped;
        dropped
    }

    /// Offsets handed out and not finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.unfinished
    }

    /// Whether nothing is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The position, if it moved since the last [`Watermark::committed`] call.
    pub fn to_commit(&self) -> Option<i64> {
        (self.position > self.committed).then_some(self.position)
    }

    /// The position, capped below `limit`, if that moved since the last
    /// [`Watermark::committed`] call.
    pub(crate) fn to_commit_below(&self, limit: i64) -> Option<i64> {
        let position = self.position.min(limit);
        (position > self.committed).then_some(position)
    }

    /// Notes that `position` was committed.
    pub fn committed(&mut self, position: i64) {
        self.committed = self.committed.max(position);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_order_completion() {
        let mut w = Watermark::new(10);
        for o in 10..15 {
            assert!(w.track(o, o * 2));
        }
        assert_eq!(w.complete(12), Some(24));
        assert_eq!(w.position(), 10);
        assert_eq!(
            w.unfinished().copied().collect::<Vec<_>>(),
            vec![20, 22, 26, 28]
        );
        assert_eq!(w.complete(10), Some(20));
        assert_eq!(w.position(), 11);
        assert!(w.complete(11).is_some());
        assert_eq!(w.position(), 13);
        assert_eq!(w.complete(11), None, "double completion is refused");
        assert!(w.complete(14).is_some());
        assert!(w.complete(13).is_some());
        assert_eq!(w.position(), 15);
        assert!(w.is_idle());
        assert_eq!(w.to_commit(), Some(15));
        w.committed(15);
        assert_eq!(w.to_commit(), None);
    }

    #[test]
    fn given_up_offsets_are_not_waited_for_nor_passed() {
        let mut w = Watermark::new(10);
        for o in 10..16 {
            assert!(w.track(o, o));
        }
        assert!(w.complete(11).is_some());
        assert_eq!(w.give_up_from(13), 3, "13, 14 and 15 were unfinished");
        assert_eq!(w.in_flight(), 2);
        assert_eq!(w.complete(14), None, "given up: not tracked");
        assert!(w.complete(12).is_some());
        assert!(w.complete(10).is_some());
        assert!(w.is_idle());
        assert_eq!(w.to_commit(), Some(13), "never past what was given up");
        assert_eq!(w.give_up_from(13), 0);
    }

    #[test]
    fn refuses_going_backwards() {
        let mut w = Watermark::new(5);
        assert!(!w.track(4, ()));
        assert!(w.track(7, ()));
        assert_eq!(w.position(), 7);
        assert!(!w.track(7, ()));
        assert!(w.complete(6).is_none());
    }

    proptest! {
        /// Whatever the completion order, the position is the lowest offset not
        /// finished, never above an unfinished one, and reaches the end.
        #[test]
        fn position_is_lowest_unfinished(
            start in 0i64..1000,
            gaps in proptest::collection::vec(1i64..4, 1..200),
            seed: u64,
        ) {
            let mut offsets = Vec::new();
            let mut o = start;
            for g in gaps { offsets.push(o); o += g; }
            let mut w = Watermark::new(start);
            for &o in &offsets { prop_assert!(w.track(o, o)); }
            let mut order = offsets.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut order);
            let mut done = std::collections::BTreeSet::new();
            for o in order {
                prop_assert_eq!(w.complete(o), Some(o));
                done.insert(o);
                let lowest_unfinished = offsets.iter().copied().find(|x| !done.contains(x));
                match lowest_unfinished {
                    Some(u) => prop_assert_eq!(w.position(), u),
                    None => prop_assert_eq!(w.position(), *offsets.last().unwrap() + 1),
                }
                prop_assert_eq!(w.in_flight(), offsets.len() - done.len());
                let expected: Vec<i64> = offsets.iter().copied().filter(|x| !done.contains(x)).collect();
                prop_assert_eq!(w.unfinished().copied().collect::<Vec<_>>(), expected);
                // Never commit past an unfinished offset.
                if let Some(&first) = w.unfinished().next() { prop_assert!(w.position() <= first); }
            }
            prop_assert!(w.is_idle());
        }
    }
}
