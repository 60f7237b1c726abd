//! The application's outbound actors: everything that writes to the broker
//! on the application's behalf, as one named thing.
//!
//! ```text
//! kafkactor
//! ├── producer-connection   the producer client (connection/producer.rs)
//! ├── producer              Publish -> PublishOutcome (producer/)
//! └── dead-letter           failed records -> dead-letter topics (dead_letter.rs)
//! ```
//!
//! They are children of the root, started before any consumer subtree and
//! stopped after all of them, so a subscription that drains on shutdown can
//! still dead-letter and its handlers can still publish. The Republisher
//! writes through a producer connection of its own (see `delay/tree.rs`)
//! and dead-letters through this one.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafkactor_actors::{ChildRef, ChildSpec, Events, Supervisor};

use crate::broker::{BrokerBackend, ProducerConfig};
use crate::buckets::Plan;
use crate::connection::producer::{ProducerConnection, Writer, WRITE_MAILBOX};
use crate::dead_letter::DeadLetter;
use crate::observe::lineage::Tap;
use crate::observe::metrics::Metrics;
use crate::producer::handle::IntakeReceiver;
use crate::producer::{Producer, ProducerSettings, PublishReply};

/// The outbound actors, each found through its [`ChildRef`] whichever
/// incarnation runs.
#[derive(Clone, Default)]
pub(crate) struct Outbound {
    pub(crate) connection: ChildRef<ProducerConnection<PublishReply>>,
    pub(crate) producer: ChildRef<Producer>,
    pub(crate) dead_letter: ChildRef<DeadLetter>,
}

/// What the outbound actors are built with.
pub(crate) struct OutboundSettings {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    pub(crate) max_record_bytes: usize,
    pub(crate) delivery_timeout: Duration,
    /// The delay buckets, when delayed publishing is on.
    pub(crate) delays: Option<Arc<Plan>>,
    pub(crate) events: Events,
    /// The Producer's intake, drained by each incarnation of the producer
    /// connection in turn.
    pub(crate) intake: IntakeReceiver,
    pub(crate) metrics: Metrics,
    /// Where lineage events go, when on.
    pub(crate) lineage: Option<Tap>,
    /// The name of the broker they write to, when it is not the default
    /// one: their ids then end in `@<name>`.
    pub(crate) broker: Option<Arc<str>>,
}

impl Outbound {
    /// Adds the three actors to `root`, in start order.
    pub(crate) fn children(&self, root: Supervisor, settings: OutboundSettings) -> Supervisor {
        let OutboundSettings {
            backend,
            max_record_bytes,
            delivery_timeout,
            delays,
            events,
            intake,
            metrics,
            lineage,
            broker,
        } = settings;
        let id = |base: &str| -> Arc<str> {
            match &broker {
                Some(name) => format!("{base}@{name}").into(),
                None => base.into(),
            }
        };
        let producer = ProducerSettings {
            max_record_bytes,
            delivery_timeout,
            delays,
            metrics,
            lineage,
        };
        let intake = Producer::intake(self.producer.clone(), intake, &producer);
        root
            // Large mailboxes: `send` beyond the capacity would let waiting
            // publishes overtake each other.
            .child(self.connection_spec(
                id("producer-connection"),
                backend,
                delivery_timeout,
                Rc::new(RefCell::new(intake)),
            ))
            .child(self.producer_spec(id("producer"), producer))
            .child(self.dead_letter_spec(id("dead-letter"), delivery_timeout, events))
    }

    /// The producer connection's spec: a client of `backend` draining the
    /// Producer's `intake`, with a large mailbox.
    fn connection_spec(
        &self,
        id: Arc<str>,
        backend: Arc<dyn BrokerBackend>,
        delivery_timeout: Duration,
        intake: Rc<RefCell<crate::producer::ProducerIntake>>,
    ) -> ChildSpec {
        ChildSpec::graceful_with_ref(id, &self.connection, move || {
            ProducerConnection::new(
                backend.clone(),
                ProducerConfig {
                    delivery_timeout,
                    linger: None,
                },
            )
            .with_intake(intake.clone())
        })
        .mailbox_capacity(WRITE_MAILBOX)
    }

    /// The Producer's spec: it writes through the producer connection
    /// (what comes to its address, and failed writes sent again), and has a
    /// large mailbox.
    fn producer_spec(&self, id: Arc<str>, settings: ProducerSettings) -> ChildSpec {
        let (own, connection) = (self.producer.clone(), self.connection.clone());
        ChildSpec::graceful_with_ref(id, &self.producer, move || {
            Producer::new(own.clone(), connection.clone(), &settings)
        })
        .mailbox_capacity(WRITE_MAILBOX)
    }

    /// The dead-letter actor's spec: it writes through the producer
    /// connection.
    fn dead_letter_spec(
        &self,
        id: Arc<str>,
        delivery_timeout: Duration,
        events: Events,
    ) -> ChildSpec {
        let connection = self.connection.clone();
        ChildSpec::graceful_with_ref(id, &self.dead_letter, move || {
            DeadLetter::new(
                Writer::to(connection.clone()),
                delivery_timeout,
                events.clone(),
            )
        })
    }
}
