//! Retry policy for handler failures: exponential backoff with jitter and a
//! maximum number of attempts, after which the record goes to the dead-letter
//! topic; retried in place (the key's lane waits) or through the group's
//! retry topic ([`RetryTopic`]).

use std::time::Duration;

use kafkactor_actors::Backoff;

/// How a failed record is retried: in place (blocking only its key's lane,
/// the default) or through the group's retry topic ([`RetryPolicy::via_retry_topic`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    /// The wait after each failed attempt (the crate's one backoff).
    backoff: Backoff,
    /// Through the retry topic, and how; None: in place.
    topic: Option<RetryTopic>,
    /// Most keys parked in one partition before it pauses.
    max_parked_keys: usize,
    /// The oldest a parked record may get before its partition pauses.
    max_park_age: Duration,
}

/// How the records retried through the group's retry topic
/// (`<topic>.<group>.retry`) keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryTopic {
    /// A key with a record in the retry topic is *parked*: its later
    /// records follow that record through the retry topic, in order, while
    /// other keys flow. Per-key order holds.
    Ordered,
    /// Only the failed record goes through the retry topic; its key's
    /// later records are handled meanwhile (Spring's retry topics). Per-key
    /// order does not hold for retried records.
    Unordered,
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
            topic: None,
            max_parked_keys: 10_000,
            max_park_age: Duration::from_secs(3600),
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

    /// Retries through the group's retry topic (`<topic>.<group>.retry`,
    /// created with as many partitions as its topic) instead of in place:
    /// a failed attempt is written there with its attempt count and when it
    /// is due (`x-attempt`, `x-not-before`), and its record committed once
    /// the retry topic holds it; the lane goes on at once. The member owning
    /// a partition owns the retry topic's partition of the same number and
    /// reads it to its end before the partition resumes. Needs Kafka's
    /// range assignor (librdkafka's default) so that both are one member's.
    pub fn via_retry_topic(mut self, order: RetryTopic) -> Self {
        self.topic = Some(order);
        self
    }

    /// With [`RetryTopic::Ordered`]: the most keys parked in one partition
    /// (default 10,000); past it the partition pauses until keys are
    /// released.
    pub fn max_parked_keys(mut self, keys: usize) -> Self {
        self.max_parked_keys = keys.max(1);
        self
    }

    /// With [`RetryTopic::Ordered`]: the oldest a parked key may get
    /// (default 1 hour); past it the partition pauses until it is released.
    pub fn max_park_age(mut self, age: Duration) -> Self {
        self.max_park_age = age;
        self
    }

    /// Through the retry topic, and how; None: in place.
    pub fn retry_topic(&self) -> Option<RetryTopic> {
        self.topic
    }

    pub(crate) fn parking_bounds(&self) -> (usize, Duration) {
        (self.max_parked_keys, self.max_park_age)
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
