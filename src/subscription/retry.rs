//! Retry policy for handler failures: exponential backoff with jitter and a
//! maximum number of attempts, after which the record goes to the dead-letter topic.

use std::time::Duration;

use kafkactor_actors::Backoff;

/// How a failed record is retried in place (blocking only its key's lane).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    /// The wait after each failed attempt (the crate's one backoff).
    backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 attempts, 100 ms doubling up to 10 s, 20% jitter.
    fn default() -> Self {
        RetryPolicy::exponential(3, Duration::from_millis(100))
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts in all (the first included), waiting `initial`,
    /// then twice as long each time, up to 10 s, with 20% jitter.
    pub fn exponential(max_attempts: u32, initial: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            backoff: Backoff::exponential(initial, Duration::from_secs(10)).jitter(0.2),
        }
    }

    /// One attempt only: a failure goes to the dead-letter topic at once.
    pub fn none() -> Self {
        RetryPolicy::exponential(1, Duration::ZERO)
    }

    /// Sets the largest wait between attempts.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.backoff.max = max;
        self
    }

    /// Sets the growth factor between waits (at least 1.0).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.backoff = self.backoff.multiplier(multiplier);
        self
    }

    /// Sets the random extra added to each wait, as a fraction (0.0..=1.0);
    /// a wait never exceeds [`max_backoff`](RetryPolicy::max_backoff).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether another attempt is allowed after `attempt` (1-based) failed.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after attempt `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap() {
        let p = RetryPolicy::exponential(5, Duration::from_millis(10))
            .jitter(0.0)
            .max_backoff(Duration::from_millis(50));
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(50));
        assert_eq!(p.backoff(1000), Duration::from_millis(50));
        assert!(p.allows_another(4));
        assert!(!p.allows_another(5));
        assert!(!RetryPolicy::none().allows_another(1));
    }
}
