//! Delayed and scheduled publishing: delay buckets and the Republisher.
//!
//! `Publish::delay(d)` / `Publish::at(t)` write the record to a *delay
//! bucket*, a topic whose records all wait the same time (default buckets:
//! 1s, 5s, 30s, 1m, 5m, 15m, 1h, 6h, 24h), with the headers `x-deliver-at`
//! (when it is due, milliseconds since the Unix epoch) and
//! `x-original-topic` (where it goes then). Key, payload and the other
//! headers travel untouched.
//!
//! How a record moves (the [`Republisher`](republisher) does it):
//! - A record stays in a bucket for exactly the bucket's length, counted
//!   from when it was written there, so within a bucket partition arrival
//!   order is release order and the head is always the next record due.
//! - When released with at most [`Delays::hold_in_memory`] (default 5 s)
//!   or less than the smallest bucket to go, it is held by an in-memory
//!   timer until it is due, while it stays uncommitted in its bucket.
//!   Otherwise it goes to the largest bucket that fits what remains (long
//!   delays hop through the largest bucket repeatedly).
//! - Delays shorter than the smallest bucket go to the `0s` bucket, whose
//!   records are released at once into that timer.
//!
//! A bucket is chosen with a [`HOP_ALLOWANCE`] to spare, so a hop's own
//! latency never makes a record late. Due time is checked against the wall
//! clock: a record is never forwarded before its `x-deliver-at`.

pub(crate) mod republisher;
pub(crate) mod tree;

pub(crate) use republisher::ForwardReply;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The time a bucket choice leaves for the hop itself (writing the record
/// to the bucket and reading it back): a record whose remaining delay is
/// `r` goes to the largest bucket `b` with `b + HOP_ALLOWANCE <= r`.
pub const HOP_ALLOWANCE: Duration = Duration::from_millis(100);

/// The longest bucket [`Delays::buckets`] accepts: a year.
pub const MAX_BUCKET: Duration = Duration::from_secs(365 * 24 * 3600);

/// How much remaining delay a released record may wait in the
/// Republisher's memory by default.
const DEFAULT_HOLD: Duration = Duration::from_secs(5);

/// The default bucket lengths.
const DEFAULT_BUCKETS: [Duration; 9] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(6 * 60 * 60),
    Duration::from_secs(24 * 60 * 60),
];

/// Delayed publishing settings, given to
/// [`AppBuilder::delays`](crate::AppBuilder::delays).
///
/// ```
/// # use std::time::Duration;
/// # use kafkactor::Delays;
/// let delays = Delays::default()                 // 1s, 5s, 30s, 1m, .. 24h
///     .topic_prefix("shop.delay")                // topics shop.delay.1s, ..
///     .group("shop-republisher");
/// let short = Delays::default().buckets([Duration::from_millis(500), Duration::from_secs(2)]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Delays {
    buckets: Vec<Duration>,
    prefix: String,
    group: String,
    republish: bool,
    max_in_flight: usize,
    hold: Duration,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            buckets: DEFAULT_BUCKETS.to_vec(),
            prefix: "kafkactor.delay".into(),
            group: "kafkactor-republisher".into(),
            republish: true,
            max_in_flight: 100_000,
            hold: DEFAULT_HOLD,
        }
    }
}

impl fmt::Debug for Delays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delays")
            .field(
                "buckets",
                &self.buckets.iter().map(|b| label(*b)).collect::<Vec<_>>(),
            )
            .field("prefix", &self.prefix)
            .field("group", &self.group)
            .field("republish", &self.republish)
            .field("max_in_flight", &self.max_in_flight)
            .field("hold_in_memory", &self.hold)
            .finish()
    }
}

impl Delays {
    /// The bucket lengths (any order; each at least 1 ms and at most a year,
    /// [`MAX_BUCKET`], or starting the application fails with
    /// [`Error::Config`]). Every application
    /// and Republisher sharing the bucket topics must use the same ones.
    pub fn buckets(mut self, buckets: impl IntoIterator<Item = Duration>) -> Self {
        self.buckets = buckets.into_iter().collect();
        self
    }

    /// The bucket topics are `<prefix>.<length>` (`kafkactor.delay.5m`,
    /// `kafkactor.delay.0s` for delays below the smallest bucket).
    pub fn topic_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// The consumer group of the Republishers (default `kafkactor-republisher`).
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.to_string();
        self
    }

    /// Publish delayed records but run no Republisher in this application
    /// (another process, with the same buckets, forwards them).
    pub fn publish_only(mut self) -> Self {
        self.republish = false;
        self
    }

    /// At most this many bucket records read and not yet forwarded (default
    /// 100,000); past it the Republisher stops reading until some are.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// A record leaving its bucket with at most this long to go waits for
    /// its due time in the Republisher's memory instead of hopping to a
    /// smaller bucket (default 5 s). Longer means fewer writes per delayed
    /// record; shorter means fewer records held (at most `max_in_flight`)
    /// and earlier commits of the bucket partitions. Zero hops until less
    /// than the smallest bucket remains.
    pub fn hold_in_memory(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    pub(crate) fn republishes(&self) -> bool {
        self.republish
    }

    pub(crate) fn group_name(&self) -> &str {
        &self.group
    }

    pub(crate) fn in_flight_limit(&self) -> usize {
        self.max_in_flight
    }

    /// Checks the settings and turns them into the bucket plan.
    pub(crate) fn plan(&self) -> Result<Arc<Plan>> {
        let mut lengths = self.buckets.clone();
        lengths.sort();
        lengths.dedup();
        if lengths.is_empty() {
            return Err(Error::Config(
                "Delays: at least one bucket is needed".into(),
            ));
        }
        if lengths[0] < Duration::from_millis(1) {
            return Err(Error::Config(
                "Delays: every bucket must be at least 1 ms".into(),
            ));
        }
        if let Some(long) = lengths.iter().find(|&&l| l > MAX_BUCKET) {
            return Err(Error::Config(format!(
                "Delays: a bucket of {long:?} is longer than the longest allowed ({} days): \
                 a record waits in a bucket that long, and its topic must keep it",
                MAX_BUCKET.as_secs() / 86_400
            )));
        }
        if self.group.is_empty() {
            return Err(Error::Config("Delays: the group must not be empty".into()));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config(
                "Delays: max_in_flight must be at least 1".into(),
            ));
        }
        let topic = |d: Duration| Arc::<str>::from(format!("{}.{}", self.prefix, label(d)));
        let short = topic(Duration::ZERO);
        crate::error::check_topic(&short)?;
        let buckets = lengths
            .iter()
            .map(|&length| Bucket {
                length,
                topic: topic(length),
            })
            .collect();
        Ok(Arc::new(Plan {
            short,
            buckets,
            hold: self.hold,
        }))
    }
}

/// How long a bucket holds its records, as written in its topic name:
/// `500ms`, `1s`, `90s`, `5m`, `6h`.
fn label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// One bucket: a topic whose records wait `length`.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) length: Duration,
    pub(crate) topic: Arc<str>,
}

/// The buckets, smallest first, and the `0s` topic for short delays.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) short: Arc<str>,
    pub(crate) buckets: Vec<Bucket>,
    /// Remaining delays up to this wait in the Republisher's memory.
    hold: Duration,
}

impl Plan {
    /// The largest bucket that fits `remaining` with the hop allowance to
    /// spare; None when less than the smallest bucket remains.
    pub(crate) fn bucket_for(&self, remaining: Duration) -> Option<&Bucket> {
        self.buckets
            .iter()
            .rev()
            .find(|b| b.length.saturating_add(HOP_ALLOWANCE) <= remaining)
    }

    /// Where a record released from its bucket with `remaining` to go is
    /// written next: None when it waits in memory.
    pub(crate) fn next_bucket(&self, remaining: Duration) -> Option<&Bucket> {
        if remaining <= self.hold {
            return None;
        }
        self.bucket_for(remaining)
    }

    /// Where a record published now with `remaining` delay is written,
    /// and that bucket's length.
    pub(crate) fn first_bucket(&self, remaining: Duration) -> (Arc<str>, Duration) {
        match self.bucket_for(remaining) {
            Some(b) => (b.topic.clone(), b.length),
            None => (self.short.clone(), Duration::ZERO),
        }
    }

    /// Every bucket topic, the `0s` one first.
    pub(crate) fn topics(&self) -> Vec<String> {
        std::iter::once(self.short.to_string())
            .chain(self.buckets.iter().map(|b| b.topic.to_string()))
            .collect()
    }

    /// How long records of `topic` wait there, if it is one of the buckets.
    pub(crate) fn length_of(&self, topic: &str) -> Option<Duration> {
        if *self.short == *topic {
            return Some(Duration::ZERO);
        }
        self.buckets
            .iter()
            .find(|b| &*b.topic == topic)
            .map(|b| b.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_topics() {
        let plan = Delays::default().plan().unwrap();
        assert_eq!(
            plan.topics(),
            [
                "kafkactor.delay.0s",
                "kafkactor.delay.1s",
                "kafkactor.delay.5s",
                "kafkactor.delay.30s",
                "kafkactor.delay.1m",
                "kafkactor.delay.5m",
                "kafkactor.delay.15m",
                "kafkactor.delay.1h",
                "kafkactor.delay.6h",
                "kafkactor.delay.24h"
            ]
        );
        assert_eq!(label(Duration::from_millis(1500)), "1500ms");
        assert_eq!(label(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn largest_bucket_with_the_allowance_to_spare() {
        let plan = Delays::default().plan().unwrap();
        let pick = |ms: u64| plan.first_bucket(Duration::from_millis(ms)).1;
        assert_eq!(pick(50), Duration::ZERO);
        assert_eq!(pick(1_000), Duration::ZERO);
        assert_eq!(pick(1_100), Duration::from_secs(1));
        assert_eq!(pick(5_099), Duration::from_secs(1));
        assert_eq!(pick(5_100), Duration::from_secs(5));
        assert_eq!(pick(3 * 86_400_000), Duration::from_secs(86_400));
        assert_eq!(
            plan.length_of("kafkactor.delay.5s"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(plan.length_of("kafkactor.delay.0s"), Some(Duration::ZERO));
        assert_eq!(plan.length_of("orders"), None);
    }

    #[test]
    fn released_records_within_the_hold_wait_in_memory() {
        let next = |hold_ms: u64, remaining_ms: u64| {
            let plan = Delays::default()
                .hold_in_memory(Duration::from_millis(hold_ms))
                .plan()
                .unwrap();
            plan.next_bucket(Duration::from_millis(remaining_ms))
                .map(|b| b.length)
        };
        assert_eq!(next(5_000, 5_000), None);
        assert_eq!(next(5_000, 5_001), Some(Duration::from_secs(1)));
        assert_eq!(next(5_000, 5_100), Some(Duration::from_secs(5)));
        assert_eq!(next(0, 1_100), Some(Duration::from_secs(1)));
        assert_eq!(next(0, 1_099), None);
        assert_eq!(next(60_000, 59_000), None);
        assert_eq!(next(60_000, 90_000), Some(Duration::from_secs(60)));
    }

    #[test]
    fn bad_settings_are_config_errors() {
        assert!(Delays::default().buckets([]).plan().is_err());
        assert!(Delays::default().buckets([Duration::ZERO]).plan().is_err());
        assert!(Delays::default().group("").plan().is_err());
        assert!(Delays::default().topic_prefix("bad topic").plan().is_err());
    }
}
