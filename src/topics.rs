//! The topics kafkactor derives from a user's, each named by one function
//! here: the dead-letter topic of a subscription's records, a group's
//! retry topic, the parking topic of dead letters replayed too often, the
//! group a replay commits its progress under, and the delay buckets'
//! topics (the reply topic will join them).

use std::sync::Arc;
use std::time::Duration;

/// The dead-letter topic of records of `topic`: the `configured` one, or
/// `<topic>.dlq`.
pub(crate) fn dead_letter(topic: &str, configured: Option<&str>) -> String {
    configured.map_or_else(|| format!("{topic}.dlq"), str::to_string)
}

/// The retry topic of `group`'s records of `topic`: `<topic>.<group>.retry`
/// (a group's own: retries never go back to the shared topic, where other
/// groups would read them again).
pub(crate) fn retry(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.retry")
}

/// The topics a subscription reads, each with its retry topic (empty when
/// it retries in place): which topic a record of a retry topic was read
/// for, and the reverse.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryTopics(Arc<[(Arc<str>, Arc<str>)]>);

impl RetryTopics {
    /// The retry topics of `group`'s `topics`.
    pub(crate) fn of<'a>(topics: impl IntoIterator<Item = &'a String>, group: &str) -> Self {
        RetryTopics(
            topics
                .into_iter()
                .map(|t| (Arc::from(t.as_str()), Arc::from(retry(t, group))))
                .collect(),
        )
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The retry topic of `topic`.
    pub(crate) fn retry_of(&self, topic: &str) -> Option<&Arc<str>> {
        self.0.iter().find(|(t, _)| &**t == topic).map(|(_, r)| r)
    }

    /// The topic whose retry topic `retry` is.
    pub(crate) fn source_of(&self, retry: &str) -> Option<&Arc<str>> {
        self.0.iter().find(|(_, r)| &**r == retry).map(|(t, _)| t)
    }

    /// Each topic with its retry topic.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.0.iter().map(|(t, r)| (t, r))
    }
}

/// Where a replay sends the dead letters of `dead_letters` that were
/// replayed too often: the `configured` topic, or `<dead_letters>.parked`.
pub(crate) fn parking(dead_letters: &str, configured: Option<&str>) -> String {
    configured.map_or_else(|| format!("{dead_letters}.parked"), str::to_string)
}

/// The group under which a replay run named `run` commits its progress
/// through `dead_letters`: `kafkactor.replay.<dead_letters>.<run>`.
pub(crate) fn replay_group(dead_letters: &str, run: &str) -> String {
    format!("kafkactor.replay.{dead_letters}.{run}")
}

/// The topic of the delay bucket of `length` whose topics start with
/// `prefix`: `<prefix>.<length>`, the length written as `500ms`, `1s`,
/// `90s`, `5m` or `6h`.
pub(crate) fn delay_bucket(prefix: &str, length: Duration) -> String {
    format!("{prefix}.{}", length_label(length))
}

/// A bucket's length as its topic name writes it: `500ms`, `1s`, `90s`,
/// `5m`, `6h`.
pub(crate) fn length_label(length: Duration) -> String {
    let ms = length.as_millis();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        assert_eq!(dead_letter("orders", None), "orders.dlq");
        assert_eq!(dead_letter("orders", Some("failed")), "failed");
        assert_eq!(parking("orders.dlq", None), "orders.dlq.parked");
        assert_eq!(retry("orders", "billing"), "orders.billing.retry");
        assert_eq!(parking("orders.dlq", Some("held")), "held");
        assert_eq!(
            replay_group("orders.dlq", "default"),
            "kafkactor.replay.orders.dlq.default"
        );
        let bucket = |ms| delay_bucket("kafkactor.delay", Duration::from_millis(ms));
        assert_eq!(bucket(0), "kafkactor.delay.0s");
        assert_eq!(bucket(500), "kafkactor.delay.500ms");
        assert_eq!(bucket(90_000), "kafkactor.delay.90s");
        assert_eq!(bucket(300_000), "kafkactor.delay.5m");
        assert_eq!(bucket(6 * 3_600_000), "kafkactor.delay.6h");
        assert_eq!(length_label(Duration::from_millis(1500)), "1500ms");
    }
}
