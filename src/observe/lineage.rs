//! Lineage: what each message went through, as events on a topic of their
//! own ([`AppBuilder::lineage`](crate::AppBuilder::lineage)), for data
//! catalogues and audit trails: *this service published message M to
//! topic T*, then *group G handled M from T: acknowledged* (or
//! dead-lettered, with the failure kind).
//!
//! Off by default; a subscription opts out with
//! [`Subscription::lineage(false)`](crate::Subscription::lineage). Each
//! event is one JSON record keyed by the message id, published through the
//! application's Producer by the supervised `lineage` actor
//! (`app/lineage.rs`): events are handed to it through a bounded queue and
//! never wait for the broker where they happen.
//! Events that find the queue full are dropped and counted
//! (`kafkactor_lineage_dropped_total`) and logged: lineage is telemetry, and
//! the records it describes never wait for it. Records of the lineage topic
//! itself make no lineage.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::envelope::{header, now_ms, Record};

/// Most events waiting to be published (past it, events are dropped and counted).
const QUEUE: usize = 100_000;

/// Lineage settings: the topic events go to and the name this service
/// goes by in them.
///
/// ```
/// # use kafkactor::prelude::*;
/// # use kafkactor::Lineage;
/// let builder = Kafkactor::builder()
///     .broker(Broker::memory())
///     .lineage(Lineage::to("kafkactor.lineage").service("billing"));
/// ```
#[derive(Debug, Clone)]
pub struct Lineage {
    pub(crate) topic: String,
    pub(crate) service: String,
}

impl Lineage {
    /// Events go to `topic`; the service is called `kafkactor` unless
    /// [`service`](Lineage::service) says otherwise.
    pub fn to(topic: impl Into<String>) -> Self {
        Lineage {
            topic: topic.into(),
            service: "kafkactor".into(),
        }
    }

    /// The name this service goes by in its events.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }
}

/// One lineage event, as published (JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The broker has a record this service published.
    Published {
        service: Arc<str>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        message_id: Option<String>,
        at: i64,
    },
    /// A group's handling of a record is final.
    Handled {
        service: Arc<str>,
        group: Arc<str>,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        message_id: Option<String>,
        /// `acked` or `dead_lettered`.
        outcome: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        kind: Option<&'static str>,
        at: i64,
    },
}

/// Where events are handed over; cheap to clone.
#[derive(Clone)]
pub(crate) struct Tap {
    tx: mpsc::Sender<Event>,
    pub(crate) service: Arc<str>,
    topic: Arc<str>,
    dropped: prometheus::IntCounter,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("topic", &self.topic).finish()
    }
}

impl Tap {
    /// A tap for `lineage`'s events, and where they arrive (read by the
    /// application's `lineage` actor, which publishes them); an event that
    /// finds the queue full is dropped and counted in `dropped`.
    pub(crate) fn new(
        lineage: &Lineage,
        dropped: prometheus::IntCounter,
    ) -> (Tap, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel::<Event>(QUEUE);
        let tap = Tap {
            tx,
            service: Arc::from(lineage.service.as_str()),
            topic: Arc::from(lineage.topic.as_str()),
            dropped,
        };
        (tap, rx)
    }

    /// Whether records of `topic` make lineage (those of the lineage topic do not).
    pub(crate) fn covers(&self, topic: &str) -> bool {
        *self.topic != *topic
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Err(e) = self.tx.try_send(event) {
            self.dropped.inc();
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(topic = %self.topic, "lineage queue full: an event was dropped");
            }
        }
    }

    /// The event of `record` handled by `group` with `outcome`.
    pub(crate) fn handled(
        &self,
        group: &Arc<str>,
        record: &Record,
        outcome: &'static str,
        kind: Option<&'static str>,
    ) {
        if !self.covers(&record.topic) {
            return;
        }
        self.emit(Event::Handled {
            service: self.service.clone(),
            group: group.clone(),
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message_id: record
                .headers
                .get_str(header::MESSAGE_ID)
                .map(str::to_string),
            outcome,
            kind,
            at: now_ms(),
        });
    }
}
