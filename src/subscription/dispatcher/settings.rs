//! What a Dispatcher and its lanes know of their subscription
//! ([`DispatchSettings`]), shared by every incarnation of both.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::ContentType;
use crate::connection::producer::Writer;
use crate::delivery::outlet::{OutletId, Registration};
use crate::envelope::Record;
use crate::observe::health::Failing;
use crate::observe::lineage::Tap;
use crate::observe::metrics::{HandleMetrics, Metrics};
use crate::subscription::retry::RetryPolicy;
use crate::topics;

/// What a dispatcher and its lanes need to know about their subscription.
#[derive(Debug, Clone)]
pub(crate) struct DispatchSettings {
    pub(crate) group: Arc<str>,
    pub(crate) retry: RetryPolicy,
    /// Dead-letter topic; `None` means `<record topic>.dlq`.
    pub(crate) dead_letter: Option<Arc<str>>,
    pub(crate) default_content_type: ContentType,
    pub(crate) max_record_bytes: usize,
    /// How long one attempt may take (None: no limit).
    pub(crate) handler_timeout: Option<Duration>,
    /// With `OnRestartLimit::DeadLetter`: the handlers' restart limit, past
    /// which failing records are dead-lettered without further retries.
    pub(crate) handler_restart_limit: Option<(usize, Duration)>,
    pub(crate) metrics: Metrics,
    /// Where lineage events go, when on for this subscription.
    pub(crate) lineage: Option<Tap>,
    /// How it consumes idempotently, when it does.
    pub(crate) idempotency: Option<crate::idempotency::Idempotency>,
    /// This member, as the owner of its idempotency claims.
    pub(crate) member: Arc<str>,
    /// The readiness check of its handlers (`handlers:<group>`): failing
    /// while they are in a crash loop.
    pub(crate) health: Failing,
    /// Each subscribed topic with its retry topic, when it retries through
    /// one (`retries.rs`).
    pub(crate) retry_topics: topics::RetryTopics,
    /// Writes to the retry topics (the application's producer connection).
    pub(crate) writer: Writer,
    /// How long a write to a retry topic may take.
    pub(crate) delivery_timeout: Duration,
    /// Where its handlers' publishes go (through their deliveries), for
    /// as long as the subscription lives.
    pub(crate) outlet: Option<Arc<Registration>>,
    /// A batch handler's batch size and linger.
    pub(crate) batch: (usize, Duration),
    /// Whether records are put on lanes by partition rather than by key.
    pub(crate) lanes_by_partition: bool,
}

impl DispatchSettings {
    /// The lane of `record` among `lanes`: by its partition, or its key
    /// (`turn`: the count of keyless records so far, which go round).
    #[inline]
    pub(crate) fn lane_of(&self, record: &Record, turn: usize, lanes: usize) -> usize {
        if self.lanes_by_partition {
            record.partition.unsigned_abs() as usize % lanes
        } else {
            super::lane_of_key(record.key.as_deref(), turn, lanes)
        }
    }

    /// The number its deliveries carry of where their publishes go.
    #[inline]
    pub(crate) fn outlet(&self) -> Option<OutletId> {
        self.outlet.as_deref().map(Registration::id)
    }

    /// The counters of `topic`'s records in this subscription.
    pub(crate) fn counters(&self, topic: &str) -> Arc<HandleMetrics> {
        self.metrics.handle(topic, &self.group)
    }

    /// The dead-letter topic of `record`: the subscription's, or that of
    /// the topic it was read for (a record of a retry topic: its source's).
    pub(super) fn dead_letter_topic(&self, record: &Record) -> Arc<str> {
        match &self.dead_letter {
            Some(t) => t.clone(),
            None => {
                let topic = self
                    .retry_topics
                    .source_of(&record.topic)
                    .map_or(&*record.topic, |source| &**source);
                Arc::from(topics::dead_letter(topic, None))
            }
        }
    }
}
