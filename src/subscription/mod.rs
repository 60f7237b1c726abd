//! Declarative subscriptions: which topics, which group, how many lanes, how
//! failures are retried and where they are dead-lettered; and, in this
//! folder, the subtree that runs one:
//!
//! - `tree`: the subscription's supervision subtree (handlers, dispatcher,
//!   consumer connection);
//! - `dispatcher`: the Dispatcher actor, which fills the lanes and decides
//!   the fate of what they hand back;
//! - `lane`: a lane is one handler actor and its queue, taken by a runner
//!   in the handler's own context;
//! - `route`: routing by message type ([`Routes`](crate::Routes));
//! - `retry`: the [`RetryPolicy`](crate::RetryPolicy), in place or through
//!   the group's retry topic ([`RetryTopic`](crate::RetryTopic));
//! - `closure`: closures as handler actors.

use crate::idempotency::Idempotency;
use std::time::Duration;

use kafkactor_actors::Backoff;

use crate::broker::OffsetReset;
use crate::codec::ContentType;
use crate::error::{check_topic, Error, Result};
use retry::RetryPolicy;

pub(crate) mod closure;
pub(crate) mod dispatcher;
pub(crate) mod lane;
pub(crate) mod retry;
pub(crate) mod route;
pub(crate) mod transaction;
pub(crate) mod tree;

/// One or several topic names.
pub trait IntoTopics {
    /// The topic names.
    fn into_topics(self) -> Vec<String>;
}

impl IntoTopics for &str {
    fn into_topics(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoTopics for &String {
    fn into_topics(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl IntoTopics for String {
    fn into_topics(self) -> Vec<String> {
        vec![self]
    }
}

impl<const N: usize> IntoTopics for [&str; N] {
    fn into_topics(self) -> Vec<String> {
        self.iter().map(|t| t.to_string()).collect()
    }
}

impl IntoTopics for Vec<String> {
    fn into_topics(self) -> Vec<String> {
        self
    }
}

impl IntoTopics for &[&str] {
    fn into_topics(self) -> Vec<String> {
        self.iter().map(|t| t.to_string()).collect()
    }
}

/// A subscription of a consumer group to topics.
///
/// ```
/// # use std::time::Duration;
/// # use kafkactor::{Subscription, RetryPolicy};
/// let sub = Subscription::to("orders")
///     .group("billing")
///     .concurrency(8)
///     .retry(RetryPolicy::exponential(5, Duration::from_millis(100)))
///     .dead_letter("orders.dlq");
/// ```
#[derive(Debug, Clone)]
pub struct Subscription {
    pub(crate) topics: Vec<String>,
    pub(crate) group: Option<String>,
    pub(crate) concurrency: usize,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter: Option<String>,
    pub(crate) default_content_type: ContentType,
    pub(crate) reset: OffsetReset,
    pub(crate) commit_interval: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) max_record_bytes: usize,
    pub(crate) restart_limit: (usize, Duration),
    pub(crate) restart_backoff: Backoff,
    pub(crate) on_restart_limit: OnRestartLimit,
    pub(crate) lineage: bool,
    pub(crate) idempotency: Option<Idempotency>,
    pub(crate) transactional: bool,
    /// A batch handler's batch size and linger, when set.
    pub(crate) batch: Option<(usize, Duration)>,
    /// Whether records are put on lanes by partition rather than by key.
    pub(crate) lanes_by_partition: bool,
    /// The named broker it reads from (None: the application's broker).
    pub(crate) broker: Option<String>,
}

/// What happens when a subscription's handlers keep failing (panicking, or
/// dropping their replies) faster than its [`restart_limit`](Subscription::restart_limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnRestartLimit {
    /// Keep the service running: handlers are still re-created (after the
    /// restart backoff) for every record, but while the limit is exceeded a
    /// record whose handler fails is dead-lettered at once, without further
    /// retries, with a reason naming the failure and the limit. Records the
    /// handler can handle are still handled. The default.
    #[default]
    DeadLetter,
    /// Stop the application: the subscription's supervisor gives up and the
    /// failure reaches the root, so [`App::wait`](crate::App::wait) returns
    /// [`Error::Escalated`] with the reason. Unfinished records stay
    /// uncommitted and are handled again by the next run.
    Escalate,
}

/// How long a handler may take on one record by default.
pub(crate) const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// The default largest record a subscription handles (and a producer
/// publishes): 1 MiB, as Kafka's `message.max.bytes`.
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

impl Subscription {
    /// How long a handler may take on one record unless
    /// [`handler_timeout`](Subscription::handler_timeout) says otherwise.
    pub const DEFAULT_HANDLER_TIMEOUT: Duration = DEFAULT_HANDLER_TIMEOUT;

    /// A subscription to one topic (`"orders"`) or several (`["a", "b"]`).
    pub fn to(topics: impl IntoTopics) -> Self {
        Subscription {
            topics: topics.into_topics(),
            group: None,
            concurrency: 1,
            max_in_flight: None,
            retry: RetryPolicy::default(),
            dead_letter: None,
            default_content_type: ContentType::MsgPack,
            reset: OffsetReset::Earliest,
            commit_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(10),
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            restart_limit: (10, Duration::from_secs(10)),
            restart_backoff: Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_secs(2),
            ),
            on_restart_limit: OnRestartLimit::DeadLetter,
            lineage: true,
            idempotency: None,
            transactional: false,
            batch: None,
            lanes_by_partition: false,
            broker: None,
        }
    }

    /// Reads from the broker the application named `name`
    /// ([`AppBuilder::named_broker`](crate::AppBuilder::named_broker))
    /// instead of its default one. Its dead-letter and retry topics, and
    /// its transactions, are on that broker too, and its handlers'
    /// [`publish`](crate::Delivery::publish) writes there;
    /// [`publish_on`](crate::Delivery::publish_on) writes to another.
    pub fn broker(mut self, name: impl Into<String>) -> Self {
        self.broker = Some(name.into());
        self
    }

    /// The consumer group (required). Members of one group share the
    /// partitions; each group sees every record.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Number of handler lanes: records with the same key are handled in
    /// order on one lane; different keys run concurrently. Default 1.
    pub fn concurrency(mut self, lanes: usize) -> Self {
        self.concurrency = lanes;
        self
    }

    /// Most records read but not finished at once (default `256 * concurrency`);
    /// past it the partitions are paused. On Kafka each assigned partition's
    /// records wait in their own librdkafka queue until there is room, while
    /// the member's client goes on answering the group's rebalances;
    /// librdkafka reads ahead per partition up to this many records (at
    /// least 50,000) and at most 8 MiB, plus one fetch in flight
    /// (`queued.min.messages` and `queued.max.messages.kbytes`, settable
    /// with [`Broker::set`](crate::Broker::set)).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = Some(max);
        self
    }

    /// How `Outcome::Retry`, handler panics and timeouts are retried: in
    /// place (the default), or through the group's retry topic
    /// ([`RetryPolicy::via_retry_topic`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The dead-letter topic (default: `<topic>.dlq` of the record's topic).
    pub fn dead_letter(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }

    /// How to decode records that carry no `content-type` header (records
    /// from other producers). Default MessagePack.
    pub fn default_content_type(mut self, content_type: ContentType) -> Self {
        self.default_content_type = content_type;
        self
    }

    /// Where a group with no committed offset starts. Default earliest.
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.reset = reset;
        self
    }

    /// How often finished offsets are committed (also on rebalance and shutdown).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Whether this subscription's handled records make lineage events,
    /// when the application has [lineage](crate::AppBuilder::lineage) on
    /// (default true).
    pub fn lineage(mut self, on: bool) -> Self {
        self.lineage = on;
        self
    }

    /// Handles each idempotency key once: a record whose key was handled
    /// before is acknowledged without calling the handler (see
    /// [`idempotency`](crate::idempotency) for what is guaranteed).
    pub fn idempotent(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// Exactly once for what handlers publish (consume, transform,
    /// produce): a publish made by a handler while it runs (through the
    /// application's [`ProducerHandle`](crate::ProducerHandle)) joins the
    /// handled record's transaction instead of going out at once (its
    /// outcome is [`PublishOutcome::Transactional`](crate::PublishOutcome::Transactional)).
    /// Once the record is acknowledged, what it published and its offset
    /// are committed in one broker transaction (Kafka's, with the group's
    /// metadata; the embedded broker's, applied as one), so a
    /// `read_committed` consumer (librdkafka's default, and the embedded
    /// broker's only mode) sees each record's output exactly once. A
    /// handling that does not end in an acknowledgement (a retry, a
    /// rejection, a panic, a timeout) publishes nothing: its next attempt
    /// starts afresh. Transactions commit every commit interval, for every
    /// record finished since. Not with [`idempotent`](Subscription::idempotent),
    /// and a delayed publish cannot join a transaction. Dead letters are
    /// written at least once, outside the transaction.
    pub fn transactional(mut self) -> Self {
        self.transactional = true;
        self
    }

    /// Hands a batch handler ([`AppBuilder::subscribe_batch`](crate::AppBuilder::subscribe_batch),
    /// [`handle_batch`](crate::AppBuilder::handle_batch)) up to `max`
    /// records of a lane at a time, in the lane's order (so per key in
    /// offset order), waiting up to `linger` for a batch to fill (zero: it
    /// takes what is there). Default for a batch handler: 100 records, no
    /// linger. Not for a single record's handler. Each record's fate is its
    /// own, as [`BatchOutcome`](crate::BatchOutcome) says. The handler
    /// timeout is the batch's.
    pub fn batch(mut self, max: usize, linger: Duration) -> Self {
        self.batch = Some((max, linger));
        self
    }

    /// Puts records on lanes by their partition instead of their key (a
    /// lane then holds whole partitions: with [`batch`](Subscription::batch),
    /// batches per partition). Per-key order is kept either way.
    pub fn lanes_by_partition(mut self) -> Self {
        self.lanes_by_partition = true;
        self
    }

    /// How long the handler may take on one record (default 30 s,
    /// [`Subscription::DEFAULT_HANDLER_TIMEOUT`]; `None` for no limit). An attempt past it
    /// fails with the failure kind `timeout` and counts against the retry
    /// policy, and the lane's handler actor is restarted from its factory (it
    /// may be stuck); a record whose attempts all time out is dead-lettered.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use kafkactor::Subscription;
    /// let quick = Subscription::to("orders").group("billing").handler_timeout(Duration::from_secs(5));
    /// let patient = Subscription::to("reports").group("batch").handler_timeout(None);
    /// ```
    pub fn handler_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handler_timeout = timeout.into();
        self
    }

    /// How long shutdown and partition revocation wait for in-flight
    /// records (default 10 s). Past it a revoked partition is given up: what
    /// was not handled yet is left to its next owner, and an attempt still
    /// running finishes with its outcome discarded.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Largest record (key, headers and payload) handed to the handler;
    /// larger ones are dead-lettered with kind `too-large`. Default 1 MiB.
    pub fn max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// At most `max` restarts within `window` (default 10 within 10 s), for
    /// the handlers (what happens past it is [`on_restart_limit`](Subscription::on_restart_limit))
    /// and separately for the dispatcher and the connection (past it the
    /// subscription's subtree is restarted by the root supervisor, which
    /// counts against the application's own limit).
    pub fn restart_limit(mut self, max: usize, window: Duration) -> Self {
        self.restart_limit = (max, window);
        self
    }

    /// The delay before restarting a failed handler, dispatcher or
    /// connection of this subscription.
    pub fn restart_backoff(mut self, backoff: Backoff) -> Self {
        self.restart_backoff = backoff;
        self
    }

    /// What happens when handlers fail faster than the restart limit allows
    /// (default [`OnRestartLimit::DeadLetter`]).
    pub fn on_restart_limit(mut self, action: OnRestartLimit) -> Self {
        self.on_restart_limit = action;
        self
    }

    pub(crate) fn group_name(&self) -> &str {
        self.group.as_deref().unwrap_or_default()
    }

    pub(crate) fn in_flight_limit(&self) -> usize {
        let per_lane = self
            .batch
            .map_or(256, |(max, _)| max.saturating_mul(2).max(256));
        self.max_in_flight
            .unwrap_or(per_lane.saturating_mul(self.concurrency.max(1)))
            .max(1)
    }

    /// The dead-letter topic for a record read from `topic`.
    pub(crate) fn dead_letter_topic(&self, topic: &str) -> String {
        crate::topics::dead_letter(topic, self.dead_letter.as_deref())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.check().map_err(|e| match e {
            Error::Config(why) => Error::Config(format!("{}: {why}", self.describe())),
            other => other,
        })
    }

    /// The subscription as its errors name it: `subscription of group
    /// "billing" to ["orders"]`.
    fn describe(&self) -> String {
        match &self.group {
            Some(g) => format!("subscription of group {g:?} to {:?}", self.topics),
            None => format!("subscription to {:?}", self.topics),
        }
    }

    fn check(&self) -> Result<()> {
        if self.topics.is_empty() {
            return Err(Error::Config(
                "a subscription needs at least one topic".into(),
            ));
        }
        for t in &self.topics {
            check_topic(t)?;
            check_topic(&self.dead_letter_topic(t))?;
        }
        match &self.group {
            None => return Err(Error::Config("no group: call .group(..)".into())),
            Some(g) if g.trim().is_empty() => {
                return Err(Error::Config("group name is empty".into()))
            }
            Some(_) => {}
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.max_in_flight == Some(0) {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
        }
        if self.max_record_bytes == 0 {
            return Err(Error::Config("max_record_bytes must be at least 1".into()));
        }
        if self.transactional && self.idempotency.is_some() {
            return Err(Error::Config(
                "a subscription is transactional or idempotent, not both".into(),
            ));
        }
        if self.batch.is_some_and(|(max, _)| max == 0) {
            return Err(Error::Config("a batch holds at least 1 record".into()));
        }
        if self.commit_interval.is_zero() {
            return Err(Error::Config("commit_interval must be positive".into()));
        }
        if self.retry.retry_topic().is_some() {
            if self.transactional {
                return Err(Error::Config(
                    "a transactional subscription retries in place, not through a retry topic"
                        .into(),
                ));
            }
            if self.idempotency.is_some() {
                return Err(Error::Config(
                    "an idempotent subscription retries in place, not through a retry topic".into(),
                ));
            }
            for (_, retry) in self.retry_topics().pairs() {
                check_topic(retry)?;
            }
        }
        Ok(())
    }

    /// Each subscribed topic with its retry topic, when failed records are
    /// retried through one.
    pub(crate) fn retry_topics(&self) -> crate::topics::RetryTopics {
        if self.retry.retry_topic().is_none() {
            return crate::topics::RetryTopics::default();
        }
        crate::topics::RetryTopics::of(&self.topics, self.group_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_error_names_its_subscription() {
        let e = Subscription::to("orders")
            .group("billing")
            .concurrency(0)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: subscription of group \"billing\" to [\"orders\"]: \
             concurrency must be at least 1"
        );
    }

    #[test]
    fn validation() {
        assert!(Subscription::to("a").group("g").validate().is_ok());
        assert!(matches!(
            Subscription::to("a").validate(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Subscription::to("").group("g").validate(),
            Err(Error::InvalidTopic(_))
        ));
        assert!(Subscription::to("a")
            .group("g")
            .concurrency(0)
            .validate()
            .is_err());
        assert!(Subscription::to(["a", "b"]).group("g").validate().is_ok());
        assert!(Subscription::to(Vec::new()).group("g").validate().is_err());
        assert_eq!(Subscription::to("a").dead_letter_topic("a"), "a.dlq");
    }
}
