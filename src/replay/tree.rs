//! The supervision subtree of a replay run.
//!
//! ```text
//! replay:<dead-letter topic>   one-for-one, a root of its own
//! ├── producer-connection      writes the replayed and parked records
//! ├── consumer-connection      the run's group member on the dead-letter topic
//! └── replayer                 decides and writes (the Replayer actor)
//! ```
//!
//! As for the Republisher, the connections start first and stop last: on
//! shutdown the Replayer waits for its writes under way; then the consumer
//! connection commits what is finished (the run's progress) and leaves the
//! group without waiting for the rest, which the next run reads again; then
//! the producer flushes.

use std::sync::Arc;
use std::time::Duration;

use kafkactor_actors::{ChildRef, ChildSpec, Events, Supervisor, SupervisorHandle};

use super::progress::Run;
use super::replayer::Replayer;
use crate::broker::{BrokerBackend, ConsumerConfig, OffsetReset, ProducerConfig};
use crate::connection::consumer::{self, ConsumerConnection, ConsumerSettings, REFILL};
use crate::connection::producer::{ProducerConnection, Writer, WRITE_MAILBOX};
use crate::producer::PublishReply;

/// How long records read and not finished are waited for when the run
/// stops: not at all; they are the next run's.
const DRAIN: Duration = Duration::ZERO;

/// Most records read and not finished at once.
const IN_FLIGHT: usize = 1024;

/// Starts the subtree of `run`, reading `topic` in `group`, and gives its
/// Replayer's reference (for cancelling).
pub(super) fn start(
    backend: Arc<dyn BrokerBackend>,
    run: Arc<Run>,
    topic: &str,
    group: &str,
) -> (SupervisorHandle, ChildRef<Replayer>) {
    let replayer: ChildRef<Replayer> = ChildRef::new();
    let producer: ChildRef<ProducerConnection<PublishReply>> = ChildRef::new();
    let connection: ChildRef<ConsumerConnection> = ChildRef::new();
    let delivery_timeout = run.delivery_timeout;
    let config = ProducerConfig {
        delivery_timeout,
        linger: None,
    };
    let producer_backend = backend.clone();
    let producer_spec = ChildSpec::graceful_with_ref("producer-connection", &producer, move || {
        ProducerConnection::new(producer_backend.clone(), config)
    })
    .mailbox_capacity(WRITE_MAILBOX);
    let consumer_spec = consumer::spec(
        backend,
        settings(topic, group),
        &connection,
        replayer.clone(),
        DRAIN + Duration::from_secs(5),
    );
    let writer = Writer::to(producer);
    let replayer_spec = ChildSpec::graceful_with_ref("replayer", &replayer, move || {
        Replayer::new(run.clone(), connection.clone(), writer.clone())
    })
    .shutdown_deadline(delivery_timeout.saturating_add(Duration::from_secs(5)));
    let supervisor = Supervisor::new(format!("replay:{topic}"))
        .events(Events::new())
        .restart_limit(10, Duration::from_secs(10))
        .child(producer_spec)
        .child(consumer_spec)
        .child(replayer_spec)
        .start_root();
    (supervisor, replayer)
}

/// What the run's consumer connection is.
fn settings(topic: &str, group: &str) -> ConsumerSettings {
    let in_flight = prometheus::IntGauge::new(
        "kafkactor_replay_in_flight",
        "dead letters read and not finished by a replay run",
    )
    .expect("a valid gauge");
    ConsumerSettings {
        config: ConsumerConfig {
            group: group.to_string(),
            topics: vec![topic.to_string()],
            reset: OffsetReset::Earliest,
            revoke_timeout: Duration::from_secs(5),
            prefetch: IN_FLIGHT,
            fetch_wait: None,
        },
        max_in_flight: IN_FLIGHT,
        refill: REFILL,
        commit_interval: Duration::from_millis(500),
        drain_timeout: DRAIN,
        transactional: None,
        in_flight,
        retry_topics: crate::topics::RetryTopics::default(),
    }
}
