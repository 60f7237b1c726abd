//! Deadlines from durations users choose: `Instant::now() + d` panics for
//! a duration too large to add (`Duration::MAX`), so every deadline taken
//! from a setting goes through [`deadline_in`].
//!
//! And [`now_ns`], the monotonic clock in nanoseconds, for durations
//! measured per record (handler calls, publishes): a `u64` subtraction
//! where `Instant::elapsed` normalises seconds and nanoseconds (twice the
//! cost of reading the clock itself).

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

/// The monotonic clock (the one `Instant` reads), in nanoseconds since an
/// unspecified start.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
))]
pub(crate) fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The monotonic clock in nanoseconds since the first reading.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
)))]
pub(crate) fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` of a [`now_ns`] reading.
pub(crate) fn instant_of(ns: u64) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_nanos(now_ns().saturating_sub(ns)))
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
    fn now_ns_follows_instant() {
        let (i0, n0) = (Instant::now(), now_ns());
        std::thread::sleep(Duration::from_millis(20));
        let (i1, n1) = (Instant::now(), now_ns());
        let by_instant = (i1 - i0).as_nanos() as i128;
        let by_ns = (n1 - n0) as i128;
        assert!(
            (by_instant - by_ns).abs() < 2_000_000,
            "{by_instant} vs {by_ns}"
        );
        let back = instant_of(n0);
        assert!(back <= i0 + Duration::from_millis(2) && back + Duration::from_millis(2) >= i0);
    }
}
