//! The application's Prometheus metrics, on a registry the user may pass in
//! ([`AppBuilder::metrics_registry`](crate::AppBuilder::metrics_registry))
//! and read from [`App::metrics_registry`](crate::App::metrics_registry).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kafkactor_published_total` | counter | `topic`, `outcome` (`ok`, `error`) |
//! | `kafkactor_publish_latency_seconds` | histogram | `topic` |
//! | `kafkactor_consumed_total` | counter | `topic`, `group` |
//! | `kafkactor_acked_total` | counter | `topic`, `group` |
//! | `kafkactor_retried_total` | counter | `topic`, `group` |
//! | `kafkactor_dead_lettered_total` | counter | `topic`, `group`, `kind` |
//! | `kafkactor_handler_duration_seconds` | histogram | `topic`, `group` |
//! | `kafkactor_in_flight` | gauge | `group` |
//! | `kafkactor_consumer_lag` | gauge | `group`, `topic`, `partition` |
//! | `kafkactor_republished_total` | counter | `bucket`, `target` (`destination`, `bucket`, `dead_letter`) |
//! | `kafkactor_delayed_backlog` | gauge | `bucket` |
//! | `kafkactor_parked_keys` | gauge | `group`, `topic`, `partition` |
//! | `kafkactor_parked_oldest_seconds` | gauge | `group`, `topic`, `partition` |
//! | `kafkactor_actor_restarts_total` | counter | `supervisor`, `child` |
//! | `kafkactor_escalations_total` | counter | `supervisor` |
//! | `kafkactor_lineage_dropped_total` | counter | |
//! | `kafkactor_duplicates_total` | counter | `topic`, `group` |
//! | `kafkactor_idempotency_store_errors_total` | counter | `group` |
//! | `kafkactor_outbox_sent_total` | counter | `table` |
//! | `kafkactor_outbox_failed_total` | counter | `table` |
//! | `kafkactor_outbox_errors_total` | counter | `table` |
//! | `kafkactor_replies_unmatched_total` | counter | |
//!
//! Labels are topics, groups, partitions, bucket names, failure kinds and
//! actor ids: all bounded by the configuration, never a key or an id.
//!
//! Counting costs an atomic add on a counter resolved once per topic (the
//! actors keep the resolved counters, and a batch of one topic is counted
//! with one add); durations go to histograms of kafkactor's own
//! (`histogram.rs`: two relaxed atomic adds, or plain adds in a runner's
//! local copy, flushed once per turn). Lag and backlog are read from the broker when the metrics
//! are gathered (a scrape), not on a timer.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::histogram::{Histograms, Series};
use crate::error::{Error, Result};

mod per_topic;

pub(crate) use per_topic::{count_runs, PerTopic};

/// The collectors of one application, registered on its registry.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Collectors>);

pub(crate) struct Collectors {
    pub(crate) registry: Registry,
    /// Whether the hot paths count and time (`AppBuilder::metrics`); when
    /// not, the collectors are on no registry.
    on: bool,
    published: IntCounterVec,
    publish_latency: Arc<Histograms>,
    consumed: IntCounterVec,
    acked: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    handler_duration: Arc<Histograms>,
    pub(crate) in_flight: IntGaugeVec,
    pub(crate) consumer_lag: IntGaugeVec,
    republished: IntCounterVec,
    pub(crate) delayed_backlog: IntGaugeVec,
    pub(crate) parked_keys: IntGaugeVec,
    pub(crate) parked_oldest: IntGaugeVec,
    pub(crate) restarts: IntCounterVec,
    pub(crate) escalations: IntCounterVec,
    pub(crate) lineage_dropped: IntCounter,
    duplicates: IntCounterVec,
    pub(crate) idempotency_errors: IntCounterVec,
    pub(crate) outbox_sent: IntCounterVec,
    pub(crate) outbox_failed: IntCounterVec,
    pub(crate) outbox_errors: IntCounterVec,
    pub(crate) replies_unmatched: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition")
}

fn single(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric definition")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> Arc<Histograms> {
    Arc::new(Histograms::new(name, help, labels))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition")
}

impl Metrics {
    /// Registers kafkactor's collectors on `registry` (when `on`): a typed
    /// error when they are registered there already (one application per
    /// registry; a second one can use `Registry::new_custom` with a label
    /// of its own). Not `on`, they are made (what counts rare events still
    /// may) but registered nowhere, and [`Metrics::on`] tells the hot paths
    /// to skip them.
    pub(crate) fn register(registry: Registry, on: bool) -> Result<Self> {
        let c = Collectors::new(registry, on);
        if !on {
            return Ok(Metrics(Arc::new(c)));
        }
        for collector in c.all() {
            c.registry.register(collector).map_err(|e| {
                Error::Config(format!(
                    "cannot register kafkactor's metrics on the registry given: {e}"
                ))
            })?;
        }
        Ok(Metrics(Arc::new(c)))
    }

    /// Whether records are counted and timed.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.0.on
    }

    pub(crate) fn collectors(&self) -> &Collectors {
        &self.0
    }

    /// The registry the metrics are on.
    pub(crate) fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// The publish counters of `topic`.
    pub(crate) fn publish(&self, topic: &str) -> PublishMetrics {
        let c = &self.0;
        PublishMetrics {
            ok: c.published.with_label_values(&[topic, "ok"]),
            error: c.published.with_label_values(&[topic, "error"]),
            latency: c.publish_latency.series(&[topic]),
        }
    }

    /// The counters of records of `topic` consumed by `group`.
    pub(crate) fn handle(&self, topic: &str, group: &str) -> Arc<HandleMetrics> {
        let c = &self.0;
        Arc::new(HandleMetrics {
            consumed: c.consumed.with_label_values(&[topic, group]),
            acked: c.acked.with_label_values(&[topic, group]),
            retried: c.retried.with_label_values(&[topic, group]),
            duplicates: c.duplicates.with_label_values(&[topic, group]),
            duration: c.handler_duration.series(&[topic, group]),
            topic: topic.into(),
            group: group.into(),
            metrics: self.clone(),
        })
    }

    /// Counts a record dead-lettered.
    pub(crate) fn dead_lettered(&self, topic: &str, group: &str, kind: &str) {
        self.0
            .dead_lettered
            .with_label_values(&[topic, group, kind])
            .inc();
    }

    /// The Republisher's counter of records moved out of `bucket` to `target`.
    pub(crate) fn republished(&self, bucket: &str, target: &str) -> IntCounter {
        self.0.republished.with_label_values(&[bucket, target])
    }
}

impl Collectors {
    /// Every collector defined, on no registry yet.
    fn new(registry: Registry, on: bool) -> Self {
        let (published, publish_latency) = publish_collectors();
        let [consumed, acked, retried, dead_lettered, duplicates, idempotency_errors] =
            consume_counters();
        let (handler_duration, in_flight, consumer_lag) = consume_progress();
        let (republished, delayed_backlog) = delay_collectors();
        let (parked_keys, parked_oldest) = parking_gauges();
        let (restarts, escalations, lineage_dropped) = supervision_collectors();
        let [outbox_sent, outbox_failed, outbox_errors] = outbox_counters();
        let replies_unmatched = single(
            "kafkactor_replies_unmatched_total",
            "Replies no caller waited for: it had given up (timed out), or the reply came twice.",
        );
        Collectors {
            published,
            publish_latency,
            consumed,
            acked,
            retried,
            dead_lettered,
            handler_duration,
            in_flight,
            consumer_lag,
            republished,
            delayed_backlog,
            parked_keys,
            parked_oldest,
            restarts,
            escalations,
            lineage_dropped,
            duplicates,
            idempotency_errors,
            outbox_sent,
            outbox_failed,
            outbox_errors,
            replies_unmatched,
            registry,
            on,
        }
    }

    /// Every collector, in the order they are registered.
    fn all(&self) -> [Box<dyn Collector>; 22] {
        [
            Box::new(self.published.clone()),
            Box::new(SharedHistograms(self.publish_latency.clone())),
            Box::new(self.consumed.clone()),
            Box::new(self.acked.clone()),
            Box::new(self.retried.clone()),
            Box::new(self.dead_lettered.clone()),
            Box::new(SharedHistograms(self.handler_duration.clone())),
            Box::new(self.in_flight.clone()),
            Box::new(self.consumer_lag.clone()),
            Box::new(self.republished.clone()),
            Box::new(self.delayed_backlog.clone()),
            Box::new(self.parked_keys.clone()),
            Box::new(self.parked_oldest.clone()),
            Box::new(self.restarts.clone()),
            Box::new(self.escalations.clone()),
            Box::new(self.lineage_dropped.clone()),
            Box::new(self.duplicates.clone()),
            Box::new(self.idempotency_errors.clone()),
            Box::new(self.outbox_sent.clone()),
            Box::new(self.outbox_failed.clone()),
            Box::new(self.outbox_errors.clone()),
            Box::new(self.replies_unmatched.clone()),
        ]
    }
}

/// The publish family: records published, by outcome, and how long the
/// broker took to acknowledge them.
fn publish_collectors() -> (IntCounterVec, Arc<Histograms>) {
    (
        counter(
            "kafkactor_published_total",
            "Records published, by outcome (ok: the broker has it; error: the publish failed).",
            &["topic", "outcome"],
        ),
        histogram(
            "kafkactor_publish_latency_seconds",
            "From the Producer taking a publish to the broker's acknowledgement.",
            &["topic"],
        ),
    )
}

/// The consume family's counters: records consumed and what became of
/// them, and the idempotency store's failures.
fn consume_counters() -> [IntCounterVec; 6] {
    [
        counter(
            "kafkactor_consumed_total",
            "Records handed to a subscription's lanes.",
            &["topic", "group"],
        ),
        counter(
            "kafkactor_acked_total",
            "Records their handler acknowledged.",
            &["topic", "group"],
        ),
        counter(
            "kafkactor_retried_total",
            "Attempts retried (each retry counts once).",
            &["topic", "group"],
        ),
        counter(
            "kafkactor_dead_lettered_total",
            "Records written to a dead-letter topic, by failure kind.",
            &["topic", "group", "kind"],
        ),
        counter(
            "kafkactor_duplicates_total",
            "Records an idempotent subscription acknowledged without handling (their key was handled before).",
            &["topic", "group"],
        ),
        counter(
            "kafkactor_idempotency_store_errors_total",
            "Idempotency store calls that failed (consumption waits and tries again).",
            &["group"],
        ),
    ]
}

/// The consume family's progress: how long handlers take, records in
/// flight, and the groups' lag.
fn consume_progress() -> (Arc<Histograms>, IntGaugeVec, IntGaugeVec) {
    (
        histogram(
            "kafkactor_handler_duration_seconds",
            "How long one handler call took.",
            &["topic", "group"],
        ),
        gauge(
            "kafkactor_in_flight",
            "Records read and not yet finished, by consumer group.",
            &["group"],
        ),
        gauge(
            "kafkactor_consumer_lag",
            "High watermark minus the group's committed offset, read at the scrape.",
            &["group", "topic", "partition"],
        ),
    )
}

/// The delay family: records the Republisher moved, and the buckets'
/// backlog.
fn delay_collectors() -> (IntCounterVec, IntGaugeVec) {
    (
        counter(
            "kafkactor_republished_total",
            "Records the Republisher moved out of a delay bucket, by where they went.",
            &["bucket", "target"],
        ),
        gauge(
            "kafkactor_delayed_backlog",
            "Records in a delay bucket not yet forwarded (the Republisher group's lag).",
            &["bucket"],
        ),
    )
}

/// The parking of ordered retries: keys parked per partition, and how
/// long the oldest has been.
fn parking_gauges() -> (IntGaugeVec, IntGaugeVec) {
    (
        gauge(
            "kafkactor_parked_keys",
            "Keys with a record in the retry topic (ordered retries), per partition.",
            &["group", "topic", "partition"],
        ),
        gauge(
            "kafkactor_parked_oldest_seconds",
            "How long the oldest parked key of a partition has been parked.",
            &["group", "topic", "partition"],
        ),
    )
}

/// The supervision family: actor restarts, escalations, and lineage
/// events dropped.
fn supervision_collectors() -> (IntCounterVec, IntCounterVec, IntCounter) {
    (
        counter(
            "kafkactor_actor_restarts_total",
            "Actor restarts, from the supervision events.",
            &["supervisor", "child"],
        ),
        counter(
            "kafkactor_escalations_total",
            "Supervisors that gave up after too many restarts.",
            &["supervisor"],
        ),
        single(
            "kafkactor_lineage_dropped_total",
            "Lineage events dropped because their queue was full.",
        ),
    )
}

/// The outbox family: the relay's rows sent, rows refused, and database
/// errors, by table.
fn outbox_counters() -> [IntCounterVec; 3] {
    [
        counter(
            "kafkactor_outbox_sent_total",
            "Outbox rows the broker acknowledged (and the relay deleted).",
            &["table"],
        ),
        counter(
            "kafkactor_outbox_failed_total",
            "Outbox rows the broker refused for good (kept with the reason in their error column).",
            &["table"],
        ),
        counter(
            "kafkactor_outbox_errors_total",
            "Outbox relay database calls that failed (the relay waits and tries again).",
            &["table"],
        ),
    ]
}

/// A histogram family registered while the metrics keep it too.
struct SharedHistograms(Arc<Histograms>);

impl Collector for SharedHistograms {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// What is counted of the records published to one topic.
#[derive(Debug)]
pub(crate) struct PublishMetrics {
    pub(crate) ok: IntCounter,
    pub(crate) error: IntCounter,
    pub(crate) latency: Arc<Series>,
}

/// What is counted of the records of one topic consumed by one group.
pub(crate) struct HandleMetrics {
    pub(crate) consumed: IntCounter,
    pub(crate) acked: IntCounter,
    pub(crate) retried: IntCounter,
    pub(crate) duplicates: IntCounter,
    pub(crate) duration: Arc<Series>,
    topic: Box<str>,
    group: Box<str>,
    metrics: Metrics,
}

impl HandleMetrics {
    /// Counts a record of this topic dead-lettered with `kind`.
    pub(crate) fn dead_lettered(&self, kind: &str) {
        self.metrics.dead_lettered(&self.topic, &self.group, kind);
    }
}
