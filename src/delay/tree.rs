//! The supervision subtree of the Republisher.
//!
//! ```text
//! republisher                 one-for-one
//! ├── producer-connection     its own producer client, for the forwards and hops
//! ├── consumer-connection     the bucket topics' group member: polling, holds, commits
//! └── republisher             releases due records (the Republisher actor)
//! ```
//!
//! The subtree runs on a thread of its own: a due record must not wait
//! for whatever the application's actors are doing on theirs (a burst of
//! publishes, a busy handler).
//!
//! The Republisher writes through a producer client of its own: a record
//! that falls due must not queue behind whatever the application publishes
//! at that moment (with one client, a burst of publishes held every
//! forward back by the whole client queue, a second and more on Kafka).
//!
//! Unlike a subscription, the connections start first and stop last: on
//! shutdown the Republisher stops taking records and waits for its writes
//! under way; then the consumer connection commits what is finished and
//! leaves the group without waiting for records that are not due (they
//! stay uncommitted and are read again by the next Republisher), and the
//! producer flushes.

use std::sync::Arc;
use std::time::Duration;

use kafkactor_actors::{ChildRef, ChildSpec, Events, Supervisor};

use super::republisher::{ForwardReply, Republisher};
use crate::broker::{BrokerBackend, ConsumerConfig, OffsetReset, ProducerConfig};
use crate::buckets::{Delays, Plan};
use crate::connection::consumer::{self, ConsumerConnection, ConsumerSettings};
use crate::connection::producer::{ProducerConnection, WRITE_MAILBOX};
use crate::dead_letter::DeadLetter;
use crate::observe::metrics::Metrics;

/// How long a revoked bucket partition is kept: not at all. What the
/// Republisher holds of it is not due yet and is read again by the next
/// owner; waiting would only let it forward records the next owner
/// forwards too.
const DRAIN: Duration = Duration::ZERO;

/// The longest a bucket fetch waits at the broker for data, and so how
/// often an idle Republisher fetches (Kafka answers a fetch as soon as data
/// arrives for any partition in it). A Kafka client sends one fetch at a
/// time per broker, so a partition resumed while one is under way is
/// fetched after it: a held partition is resumed `PREFETCH_LEAD` (1 s)
/// before its head is due, well over this wait. At 10 ms an idle
/// Republisher fetched 100 times a second and took 4 % of a core.
const FETCH_WAIT: Duration = Duration::from_millis(250);

/// How long the Republisher's producer waits to fill a batch (librdkafka's
/// default is 5 ms).
const LINGER: Duration = Duration::from_millis(1);

/// What the application gives the Republisher's subtree.
pub(crate) struct Parts {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    pub(crate) events: Events,
    /// Where it dead-letters (through the application's producer connection).
    pub(crate) dead_letter: ChildRef<DeadLetter>,
    /// Its consumer connection, which the application asks what it owns.
    pub(crate) connection: ChildRef<ConsumerConnection>,
    pub(crate) metrics: Metrics,
}

/// The child spec of the Republisher's supervisor.
pub(crate) fn republisher_spec(
    delays: &Delays,
    plan: Arc<Plan>,
    delivery_timeout: Duration,
    parts: Parts,
) -> ChildSpec {
    let subtree = Subtree {
        consumer: consumer_settings(delays, &plan, &parts.metrics),
        group: Arc::from(delays.group_name()),
        plan,
        delivery_timeout,
        parts,
    };
    ChildSpec::graceful_on_own_thread("republisher", move || subtree.supervisor())
        .shutdown_deadline(delivery_timeout.saturating_add(Duration::from_secs(10)))
}

/// What the bucket topics' consumer connection is.
fn consumer_settings(delays: &Delays, plan: &Plan, metrics: &Metrics) -> ConsumerSettings {
    ConsumerSettings {
        config: ConsumerConfig {
            group: delays.group_name().to_string(),
            topics: plan.topics(),
            reset: OffsetReset::Earliest,
            revoke_timeout: Duration::from_secs(5),
            prefetch: delays.in_flight_limit().min(10_000),
            fetch_wait: Some(FETCH_WAIT),
        },
        max_in_flight: delays.in_flight_limit(),
        // A place is taken as soon as it frees up: records wait on their
        // due time here, and one read late is delivered late.
        refill: 1,
        commit_interval: Duration::from_millis(100),
        drain_timeout: DRAIN,
        transactional: None,
        in_flight: metrics
            .collectors()
            .in_flight
            .with_label_values(&[delays.group_name()]),
        retry_topics: crate::topics::RetryTopics::default(),
    }
}

/// How to build the Republisher's supervisor, once per incarnation of it.
struct Subtree {
    plan: Arc<Plan>,
    group: Arc<str>,
    delivery_timeout: Duration,
    consumer: ConsumerSettings,
    parts: Parts,
}

impl Subtree {
    /// `republisher`: its producer connection, its consumer connection, the
    /// Republisher.
    fn supervisor(&self) -> Supervisor {
        let republisher: ChildRef<Republisher> = ChildRef::new();
        let producer: ChildRef<ProducerConnection<ForwardReply>> = ChildRef::new();
        Supervisor::new("republisher")
            .events(self.parts.events.clone())
            .restart_limit(10, Duration::from_secs(10))
            .child(self.producer_spec(&producer))
            .child(consumer::spec(
                self.parts.backend.clone(),
                self.consumer.clone(),
                &self.parts.connection,
                republisher.clone(),
                DRAIN + Duration::from_secs(5),
            ))
            .child(self.republisher_spec(&republisher, producer))
    }

    /// `producer-connection`: records are written when due, so no wait to
    /// fill a batch (it would add to every delay).
    fn producer_spec(&self, producer: &ChildRef<ProducerConnection<ForwardReply>>) -> ChildSpec {
        let config = ProducerConfig {
            delivery_timeout: self.delivery_timeout,
            linger: Some(LINGER),
        };
        let backend = self.parts.backend.clone();
        ChildSpec::graceful_with_ref("producer-connection", producer, move || {
            ProducerConnection::new(backend.clone(), config)
        })
        .mailbox_capacity(WRITE_MAILBOX)
    }

    /// `republisher`, the actor.
    fn republisher_spec(
        &self,
        republisher: &ChildRef<Republisher>,
        producer: ChildRef<ProducerConnection<ForwardReply>>,
    ) -> ChildSpec {
        let (plan, group, delivery_timeout) =
            (self.plan.clone(), self.group.clone(), self.delivery_timeout);
        let (connection, dead_letter, metrics) = (
            self.parts.connection.clone(),
            self.parts.dead_letter.clone(),
            self.parts.metrics.clone(),
        );
        ChildSpec::graceful_with_ref("republisher", republisher, move || {
            Republisher::new(
                plan.clone(),
                group.clone(),
                delivery_timeout,
                connection.clone(),
                producer.clone(),
                dead_letter.clone(),
                metrics.clone(),
            )
        })
        .shutdown_deadline(delivery_timeout.saturating_add(Duration::from_secs(5)))
    }
}
