//! The commit watermark of one partition: records are handed out in offset
//! order and finish in any order; the committable position is the lowest
//! offset not yet finished (Kafka commits "the next offset to read").

use std::collections::VecDeque;

/// Tracks in-flight offsets of one partition.
#[derive(Debug, Clone)]
pub(crate) struct Watermark {
    /// In-flight offsets in increasing order, with whether each is finished.
    pending: VecDeque<(i64, bool)>,
    /// Everything below this offset is finished.
    position: i64,
    /// The last position handed to the broker as committed.
    committed: i64,
}

impl Watermark {
    /// A partition whose consumption starts at `position`.
    pub(crate) fn new(position: i64) -> Self {
        Watermark {
            pending: VecDeque::new(),
            position,
            committed: position,
        }
    }

    /// Records that `offset` was handed out. Offsets must increase; an offset
    /// at or below one already tracked is refused (returns false).
    pub(crate) fn track(&mut self, offset: i64) -> bool {
        let last = self.pending.back().map(|&(o, _)| o);
        if last.is_some_and(|l| offset <= l) || offset < self.position {
            return false;
        }
        if self.pending.is_empty() {
            // Offsets may skip (compaction, transactions): nothing below is in flight.
            self.position = offset;
        }
        self.pending.push_back((offset, false));
        true
    }

    /// Marks `offset` finished; returns false if it was not in flight.
    pub(crate) fn complete(&mut self, offset: i64) -> bool {
        let Ok(i) = self.pending.binary_search_by_key(&offset, |&(o, _)| o) else {
            return false;
        };
        if self.pending[i].1 {
            return false;
        }
        self.pending[i].1 = true;
        while let Some(&(o, true)) = self.pending.front() {
            self.pending.pop_front();
            self.position = o + 1;
        }
        if let Some(&(o, _)) = self.pending.front() {
            self.position = o;
        }
        true
    }

    /// The offset to commit: every record below it is finished.
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    /// Records handed out and not finished (finished ones above a gap count too,
    /// since they still hold memory).
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.iter().filter(|(_, done)| !done).count()
    }

    /// Whether nothing is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The position, if it moved since the last [`Watermark::committed`] call.
    pub(crate) fn to_commit(&self) -> Option<i64> {
        (self.position > self.committed).then_some(self.position)
    }

    /// Notes that `position` was committed.
    pub(crate) fn committed(&mut self, position: i64) {
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
            assert!(w.track(o));
        }
        assert!(w.complete(12));
        assert_eq!(w.position(), 10);
        assert!(w.complete(10));
        assert_eq!(w.position(), 11);
        assert!(w.complete(11));
        assert_eq!(w.position(), 13);
        assert!(!w.complete(11), "double completion is refused");
        assert!(w.complete(14));
        assert!(w.complete(13));
        assert_eq!(w.position(), 15);
        assert!(w.is_idle());
        assert_eq!(w.to_commit(), Some(15));
        w.committed(15);
        assert_eq!(w.to_commit(), None);
    }

    #[test]
    fn refuses_going_backwards() {
        let mut w = Watermark::new(5);
        assert!(!w.track(4));
        assert!(w.track(7));
        assert_eq!(w.position(), 7);
        assert!(!w.track(7));
        assert!(!w.complete(6));
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
            for &o in &offsets { prop_assert!(w.track(o)); }
            let mut order = offsets.clone();
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut order);
            let mut done = std::collections::BTreeSet::new();
            for o in order {
                prop_assert!(w.complete(o));
                done.insert(o);
                let lowest_unfinished = offsets.iter().copied().find(|x| !done.contains(x));
                match lowest_unfinished {
                    Some(u) => prop_assert_eq!(w.position(), u),
                    None => prop_assert_eq!(w.position(), *offsets.last().unwrap() + 1),
                }
                prop_assert_eq!(w.in_flight(), offsets.len() - done.len());
            }
            prop_assert!(w.is_idle());
        }
    }
}
