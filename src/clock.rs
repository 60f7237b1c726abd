//! Deadlines from durations users choose: `Instant::now() + d` panics for
//! a duration too large to add (`Duration::MAX`), so every deadline taken
//! from a setting goes through [`deadline_in`].
//!
//! And [`Stopwatch`] ([`now_ticks`] for one reading), the clock durations
//! measured per record (handler calls, publishes) are read with: a time-stamp counter
//! reading and a multiply, where `Instant::now` calls `clock_gettime` and
//! `Instant::elapsed` normalises seconds and nanoseconds.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// About a century: "never", as far as a deadline is concerned.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` from now, or a century from now when `d` is longer than that.
pub(crate) fn deadline_in(d: Duration) -> Instant {
    deadline_after(Instant::now(), d)
}

/// `d` after `start`, or a century after it when `d` is longer than that.
pub(crate) fn deadline_after(start: Instant, d: Duration) -> Instant {
    start.checked_add(d.min(FAR)).unwrap_or(start)
}

/// The clock records are timed with (handler calls, publishes), read in
/// opaque ticks: the CPU's time-stamp counter where it is invariant (what
/// `quanta` checks), a few instructions and no call into the vDSO (a
/// reading costs a third of `clock_gettime`'s); the OS monotonic clock
/// elsewhere. Calibrated against the OS clock once per process, by
/// [`warm`] when an application starts.
#[inline]
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock now rather than on the first record timed.
pub(crate) fn warm() {
    clock();
}

/// A reading of the clock, in ticks (see [`Stopwatch::elapsed_ns`]).
#[inline]
pub(crate) fn now_ticks() -> u64 {
    Stopwatch::new().now()
}

/// The clock, for a reader timing every record: its readings and the
/// nanoseconds between them, without looking the clock up each time.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch(&'static quanta::Clock);

impl Stopwatch {
    #[inline]
    pub(crate) fn new() -> Self {
        Stopwatch(clock())
    }

    /// A reading, in ticks.
    #[inline]
    pub(crate) fn now(self) -> u64 {
        self.0.raw()
    }

    /// Nanoseconds from reading `start` to reading `end` (0 if `end` is
    /// not later).
    #[inline]
    pub(crate) fn elapsed_ns(self, start: u64, end: u64) -> u64 {
        self.0.delta_as_nanos(start, end)
    }

    /// Nanoseconds from reading `start` to now.
    #[inline]
    pub(crate) fn since(self, start: u64) -> u64 {
        self.elapsed_ns(start, self.now())
    }
}

/// The `Instant` of a [`now_ticks`] reading.
pub(crate) fn instant_of(ticks: u64) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_nanos(Stopwatch::new().since(ticks)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_a_far_deadline() {
        let far = deadline_in(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(3600 * 24 * 365));
        let soon = deadline_in(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }

    #[test]
    fn ticks_follow_instant() {
        // Calibrated first: calibrating takes milliseconds, which would
        // fall between the two first readings.
        warm();
        let (i0, n0) = (Instant::now(), now_ticks());
        std::thread::sleep(Duration::from_millis(20));
        let (i1, n1) = (Instant::now(), now_ticks());
        let by_instant = (i1 - i0).as_nanos() as i128;
        let clock = Stopwatch::new();
        let by_ns = clock.elapsed_ns(n0, n1) as i128;
        assert!(by_ns >= 20_000_000, "{by_ns}");
        assert_eq!(clock.elapsed_ns(n1, n0), 0, "not later: none");
        assert!(clock.since(n0) as i128 >= by_ns);
        assert!(
            (by_instant - by_ns).abs() < 2_000_000,
            "{by_instant} vs {by_ns}"
        );
        let back = instant_of(n0);
        assert!(back <= i0 + Duration::from_millis(2) && back + Duration::from_millis(2) >= i0);
    }
}

/// The wall clock: the system's, plus what a test advanced it by.
#[inline]
pub(crate) fn wall_now() -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    #[cfg(feature = "testing")]
    {
        let skew = skew::get();
        if skew > 0 {
            return now + Duration::from_millis(skew as u64);
        }
    }
    now
}

/// `ms`, a reading of the system's wall clock in ms since the Unix epoch,
/// plus what a test advanced the clock by.
#[inline]
pub(crate) fn skewed_ms(ms: i64) -> i64 {
    #[cfg(feature = "testing")]
    {
        ms.saturating_add(skew::get())
    }
    #[cfg(not(feature = "testing"))]
    {
        ms
    }
}

/// What a test advanced the wall clock by: process-wide, only ever
/// forward, and announced to those waiting on the wall clock (the
/// Republisher) so that they look again at once.
#[cfg(feature = "testing")]
pub(crate) mod skew {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    static SKEW_MS: AtomicI64 = AtomicI64::new(0);

    fn announce() -> &'static tokio::sync::watch::Sender<i64> {
        static ANNOUNCE: OnceLock<tokio::sync::watch::Sender<i64>> = OnceLock::new();
        ANNOUNCE.get_or_init(|| tokio::sync::watch::channel(0).0)
    }

    /// How far ahead of the system's the wall clock is, in ms.
    #[inline]
    pub(crate) fn get() -> i64 {
        SKEW_MS.load(Ordering::Relaxed)
    }

    /// Moves the wall clock `by` ahead, and says so.
    pub(crate) fn advance(by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = SKEW_MS.fetch_add(ms, Ordering::Relaxed).saturating_add(ms);
        announce().send_replace(now);
    }

    /// Each advance, as it happens.
    pub(crate) fn advances() -> tokio::sync::watch::Receiver<i64> {
        announce().subscribe()
    }
}
