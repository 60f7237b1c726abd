//! Delay buckets: the [`Delays`] settings, the bucket plan a delayed
//! publish is placed by (the Producer) and released by (the Republisher),
//! and the one codec of the headers a delayed record carries
//! (`x-deliver-at`, `x-original-topic`, `x-deliver-partition`). How records
//! move through the buckets is told in `delay/mod.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::{header, Headers};
use crate::error::{check_topic, Error, Result};
use crate::topics::{self, length_label};

/// The time a bucket choice leaves for the hop itself (writing the record
/// to the bucket and reading it back): a record whose remaining delay is
/// `r` goes to the largest bucket `b` with `b + HOP_ALLOWANCE <= r`.
pub(crate) const HOP_ALLOWANCE: Duration = Duration::from_millis(100);

/// The longest bucket [`Delays::buckets`] accepts: a year.
pub(crate) const MAX_BUCKET: Duration = Duration::from_secs(365 * 24 * 3600);

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
                &self
                    .buckets
                    .iter()
                    .map(|b| length_label(*b))
                    .collect::<Vec<_>>(),
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
    /// The time a bucket choice leaves for the hop itself (writing the
    /// record to the bucket and reading it back): a record whose remaining
    /// delay is `r` goes to the largest bucket `b` with `b + HOP_ALLOWANCE
    /// <= r`, so a hop's own latency never makes a record late.
    pub const HOP_ALLOWANCE: Duration = HOP_ALLOWANCE;

    /// The longest bucket [`Delays::buckets`] accepts: a year.
    pub const MAX_BUCKET: Duration = MAX_BUCKET;

    /// The bucket lengths (any order; each at least 1 ms and at most a year,
    /// [`Delays::MAX_BUCKET`], or starting the application fails with
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
        let topic = |d: Duration| Arc::<str>::from(topics::delay_bucket(&self.prefix, d));
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

/// What a delayed record's headers say of where and when it goes: written
/// by the Producer when it places the record in its first bucket, read by
/// the Republisher at each hop, removed when the record reaches its
/// destination. The one codec of `x-deliver-at`, `x-original-topic` and
/// `x-deliver-partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DelayHeaders {
    /// When it may be delivered, ms since the Unix epoch.
    pub(crate) deliver_at: i64,
    /// The topic it goes to then.
    pub(crate) destination: Arc<str>,
    /// The partition it goes to then, when its publish named one.
    pub(crate) partition: Option<i32>,
}

impl DelayHeaders {
    /// Writes them into `headers`.
    pub(crate) fn write(&self, headers: &mut Headers) {
        let mut decimal = itoa::Buffer::new();
        headers.insert(
            header::DELIVER_AT,
            decimal.format(self.deliver_at).to_string(),
        );
        headers.insert(header::ORIGINAL_TOPIC, self.destination.to_string());
        if let Some(p) = self.partition {
            headers.insert(header::DELIVER_PARTITION, decimal.format(p).to_string());
        }
    }

    /// Reads them from `headers`, or says what is wrong with them.
    pub(crate) fn read(headers: &Headers) -> std::result::Result<Self, String> {
        let deliver_at = match headers.get(header::DELIVER_AT) {
            None => return Err(format!("missing {} header", header::DELIVER_AT)),
            Some(raw) => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    format!(
                        "{} header {:?} is not milliseconds since the Unix epoch",
                        header::DELIVER_AT,
                        String::from_utf8_lossy(raw)
                    )
                })?,
        };
        let destination = match headers.get_str(header::ORIGINAL_TOPIC) {
            None => {
                return Err(format!(
                    "missing or non-UTF-8 {} header",
                    header::ORIGINAL_TOPIC
                ))
            }
            Some(topic) => {
                check_topic(topic).map_err(|e| format!("{}: {e}", header::ORIGINAL_TOPIC))?;
                Arc::<str>::from(topic)
            }
        };
        let partition = match headers.get(header::DELIVER_PARTITION) {
            None => None,
            Some(raw) => Some(
                std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| {
                        format!(
                            "{} header {:?} is not a partition number",
                            header::DELIVER_PARTITION,
                            String::from_utf8_lossy(raw)
                        )
                    })?,
            ),
        };
        Ok(DelayHeaders {
            deliver_at,
            destination,
            partition,
        })
    }

    /// Removes them from `headers`: the record reaches its destination.
    pub(crate) fn remove(headers: &mut Headers) {
        headers.remove(header::DELIVER_AT);
        headers.remove(header::ORIGINAL_TOPIC);
        headers.remove(header::DELIVER_PARTITION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_headers_read_what_was_written() {
        let written = DelayHeaders {
            deliver_at: 1_700_000_000_123,
            destination: Arc::from("orders"),
            partition: Some(3),
        };
        let mut headers = Headers::new();
        written.write(&mut headers);
        assert_eq!(DelayHeaders::read(&headers), Ok(written));
        DelayHeaders::remove(&mut headers);
        assert!(headers.is_empty());
        assert_eq!(
            DelayHeaders::read(&headers),
            Err("missing x-deliver-at header".to_string())
        );
    }

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
