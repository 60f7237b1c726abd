//! Exponential backoff with jitter and a cap, reset after a stable period:
//! the one backoff of kafkactor, used for restarts here and, in the
//! `kafkactor` crate, by every loop that tries again (handler retries,
//! resent writes, dead letters, idempotency store calls, the outbox relay).

use std::time::Duration;

/// Delay before try `n` (0-based) of a run of failures: `initial *
/// multiplier^n` plus up to `jitter` (a fraction, 0.0..=1.0) of random
/// extra, never more than `max`; for restarts, `n` goes back to zero once a
/// child has run for `reset_after` without failing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth factor from one delay to the next (at least 1.0; 2.0 doubles).
    pub multiplier: f64,
    /// Random extra, as a fraction of the delay (the result still never
    /// exceeds `max`).
    pub jitter: f64,
    /// Run time after which the next failure starts again from `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// No delay at all between restarts.
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// Exponential from `initial` up to `max`, default jitter and reset.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ..Backoff::default()
        }
    }

    /// Doubling from `initial` up to `max`, without jitter: the same
    /// sequence every time (usable in a `const`).
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// Sets the growth factor between delays (at least 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Sets the jitter fraction (clamped to 0.0..=1.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Sets the stable run time after which the backoff resets.
    pub fn reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// The delay before try (or restart) number `n` (0-based) of a run of
    /// failures.
    pub fn delay(&self, n: u32) -> Duration {
        let base = if self.multiplier == 2.0 {
            self.initial
                .checked_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
                .unwrap_or(self.max)
        } else {
            // In seconds, so no setting can overflow a Duration.
            let growth = self.multiplier.max(1.0).powi(n.min(64) as i32).min(1e9);
            Duration::try_from_secs_f64(self.initial.as_secs_f64() * growth).unwrap_or(self.max)
        }
        .min(self.max);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        // `max` is the largest delay, jitter included.
        Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + fastrand::f64() * self.jitter))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b =
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100)).jitter(0.0);
        assert_eq!(b.delay(0), Duration::from_millis(10));
        assert_eq!(b.delay(1), Duration::from_millis(20));
        assert_eq!(b.delay(3), Duration::from_millis(80));
        assert_eq!(b.delay(4), Duration::from_millis(100));
        assert_eq!(b.delay(60), Duration::from_millis(100));
    }

    #[test]
    fn other_growth_factors() {
        let b =
            Backoff::doubling(Duration::from_millis(10), Duration::from_secs(1)).multiplier(3.0);
        assert_eq!(b.delay(0), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(90));
        assert_eq!(b.delay(200), Duration::from_secs(1));
        let flat = b.multiplier(1.0);
        assert_eq!(flat.delay(7), Duration::from_millis(10));
    }

    #[test]
    fn no_setting_overflows() {
        let b = Backoff::exponential(Duration::MAX, Duration::MAX).jitter(1.0);
        assert_eq!(b.delay(3), Duration::MAX);
        let b = b.multiplier(10.0);
        assert_eq!(b.delay(64), Duration::MAX);
    }

    #[test]
    fn jitter_never_exceeds_max() {
        let b =
            Backoff::exponential(Duration::from_millis(10), Duration::from_millis(30)).jitter(1.0);
        for n in 0..8 {
            for _ in 0..200 {
                assert!(b.delay(n) <= Duration::from_millis(30));
            }
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).jitter(0.5);
        for _ in 0..1000 {
            let d = b.delay(2);
            assert!(
                d >= Duration::from_millis(40) && d <= Duration::from_millis(60),
                "{d:?}"
            );
        }
    }
}
