//! A replay run's state, shared by the run's handle and every incarnation
//! of its Replayer: the snapshot of the dead-letter topic's end offsets,
//! how far each partition is finished, the counts, and where the report
//! goes once the run is over.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::select::Selection;
use super::ReplayReport;
use crate::error::Error;

/// One partition of the dead-letter topic, as the run goes.
#[derive(Debug)]
pub(super) struct Partition {
    /// Its end offset when the run started: records from there on were
    /// dead-lettered during the run and are not this run's.
    pub(super) end: i64,
    /// The first offset whose fate is not final yet.
    pub(super) next: i64,
    /// Records taken and not yet all final before them, in offset order.
    taken: VecDeque<(i64, bool)>,
}

impl Partition {
    pub(super) fn new(start: i64, end: i64) -> Self {
        Partition {
            end,
            next: start,
            taken: VecDeque::new(),
        }
    }

    /// Whether everything below the snapshot's end is final.
    fn is_done(&self) -> bool {
        self.taken.is_empty() && self.next >= self.end
    }

    pub(super) fn take(&mut self, offset: i64) {
        self.taken.push_back((offset, false));
    }

    /// The record at `offset` is final: sent, parked, or passed over.
    pub(super) fn finish(&mut self, offset: i64) {
        if let Some(entry) = self.taken.iter_mut().find(|(o, _)| *o == offset) {
            entry.1 = true;
        }
        while let Some(&(offset, true)) = self.taken.front() {
            self.taken.pop_front();
            self.next = self.next.max(offset + 1);
        }
    }

    /// Forgets what was taken: a new connection incarnation reads it again.
    pub(super) fn forget_taken(&mut self) {
        self.taken.clear();
    }
}

/// What the run counts and where it stands.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) partitions: HashMap<i32, Partition>,
    pub(super) report: ReplayReport,
    /// Records sent or parked, or on their way (the limit counts these).
    pub(super) chosen: u64,
    /// When the first write left, and how many left since (the rate).
    pub(super) pace: Option<(Instant, u64)>,
    /// Why the run stopped early, when it failed.
    pub(super) error: Option<Error>,
}

impl State {
    /// Whether every partition is finished up to its snapshot end.
    pub(super) fn all_done(&self) -> bool {
        self.partitions.values().all(Partition::is_done)
    }

    /// Records below the snapshot's end not finished yet.
    pub(super) fn remaining(&self) -> u64 {
        self.partitions
            .values()
            .map(|p| (p.end - p.next).max(0) as u64)
            .sum()
    }

    /// How long until the next write may leave at `rate` records a second
    /// (zero: now), counting it as left when it may.
    pub(super) fn pace(&mut self, rate: Option<f64>, now: Instant) -> Duration {
        let Some(rate) = rate else {
            return Duration::ZERO;
        };
        let (first, sent) = self.pace.get_or_insert((now, 0));
        let due = *first + Duration::from_secs_f64(*sent as f64 / rate);
        if due > now {
            return due - now;
        }
        *sent += 1;
        Duration::ZERO
    }
}

/// A run: what it replays, its state, and where its report goes.
pub(super) struct Run {
    pub(super) selection: Selection,
    /// Records a second at most (None: as fast as the broker takes them).
    pub(super) rate: Option<f64>,
    pub(super) limit: Option<u64>,
    pub(super) dry_run: bool,
    pub(super) delivery_timeout: Duration,
    pub(super) state: Mutex<State>,
    cancelled: AtomicBool,
    report: Mutex<Option<oneshot::Sender<()>>>,
}

impl Run {
    pub(super) fn new(
        selection: Selection,
        rate: Option<f64>,
        limit: Option<u64>,
        dry_run: bool,
        delivery_timeout: Duration,
        state: State,
        over: oneshot::Sender<()>,
    ) -> Self {
        Run {
            selection,
            rate,
            limit,
            dry_run,
            delivery_timeout,
            state: Mutex::new(state),
            cancelled: AtomicBool::new(false),
            report: Mutex::new(Some(over)),
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Says the run is over (once).
    pub(super) fn over(&self) {
        let tx = self.report.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_done_once_everything_below_its_end_is_final() {
        let mut p = Partition::new(10, 13);
        assert!(!p.is_done());
        p.take(10);
        p.take(11);
        p.take(12);
        p.finish(11);
        assert_eq!(p.next, 10, "10 is not final yet");
        p.finish(10);
        assert_eq!(p.next, 12);
        p.finish(12);
        assert!(p.is_done());
        assert!(Partition::new(5, 5).is_done(), "nothing to replay");
    }

    #[test]
    fn the_pace_lets_one_write_leave_per_period() {
        let mut state = State::default();
        let start = Instant::now();
        assert_eq!(state.pace(Some(10.0), start), Duration::ZERO);
        let wait = state.pace(Some(10.0), start);
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(state.pace(Some(10.0), start + wait), Duration::ZERO);
        assert_eq!(state.pace(None, start), Duration::ZERO);
    }
}
