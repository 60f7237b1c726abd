//! What a replay does with one dead letter ([`Fate`]): leave it (outside
//! the selection), send it back to its topic, or park it; and the record
//! it writes.

use std::sync::Arc;

use crate::envelope::{header, now_ms, OutgoingRecord, Record};

/// Which records a replay's filter takes.
pub(super) type Filter = Arc<dyn Fn(&Record) -> bool + Send + Sync>;

/// Which dead letters a replay takes, where they go, and when one has been
/// replayed too often.
#[derive(Clone)]
pub(super) struct Selection {
    pub(super) filter: Option<Filter>,
    /// Failed at or after (ms since the Unix epoch).
    pub(super) failed_from: Option<i64>,
    /// Failed before (ms since the Unix epoch).
    pub(super) failed_until: Option<i64>,
    /// Where they go instead of their `x-original-topic`.
    pub(super) to: Option<Arc<str>>,
    /// Replays of one record before it is parked instead.
    pub(super) max_replays: u32,
    pub(super) parking: Arc<str>,
}

/// What a replay does with a dead letter.
#[derive(Debug)]
pub(super) enum Fate {
    /// Outside the selection: left where it is (and passed over).
    Skip,
    /// Sent back: the record to write.
    Send(OutgoingRecord),
    /// Parked, with why: the record to write to the parking topic.
    Park(OutgoingRecord, &'static str),
}

/// The headers a dead letter's failure (and its retries) added that its
/// replay takes off: a failure again writes its own; the first failure's
/// provenance (original topic, partition, offset, group) stays.
const FAILURE: [&str; 5] = [
    header::ERROR_KIND,
    header::ERROR_REASON,
    header::ATTEMPT,
    header::FAILED_AT,
    header::NOT_BEFORE,
];

impl Selection {
    /// What to do with `record`, a dead letter.
    pub(super) fn fate(&self, record: &Record) -> Fate {
        if !self.selects(record) {
            return Fate::Skip;
        }
        let replays = record
            .headers
            .get_str(header::REPLAY_COUNT)
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if replays >= self.max_replays {
            return Fate::Park(self.parked(record), "replayed as often as allowed");
        }
        if record.headers.contains(header::PAYLOAD_DROPPED) {
            return Fate::Park(self.parked(record), "its payload was dropped");
        }
        let destination = match &self.to {
            Some(to) => to.clone(),
            None => match record.headers.get_str(header::ORIGINAL_TOPIC) {
                Some(topic) if crate::error::check_topic(topic).is_ok() => Arc::from(topic),
                _ => return Fate::Park(self.parked(record), "no valid x-original-topic"),
            },
        };
        let mut headers = record.headers.clone();
        for name in FAILURE {
            headers.remove(name);
        }
        headers.insert(header::REPLAY_COUNT, (replays + 1).to_string());
        Fate::Send(OutgoingRecord {
            topic: destination,
            partition: None,
            key: record.key.clone(),
            headers,
            payload: record.payload_or_null(),
            timestamp_ms: now_ms(),
        })
    }

    /// Whether `record` is in the selection: failed within the time range
    /// (its `x-failed-at`, else its timestamp) and taken by the filter.
    fn selects(&self, record: &Record) -> bool {
        let failed_at = record
            .headers
            .get_str(header::FAILED_AT)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(record.timestamp_ms);
        self.failed_from.is_none_or(|from| failed_at >= from)
            && self.failed_until.is_none_or(|until| failed_at < until)
            && self.filter.as_ref().is_none_or(|filter| filter(record))
    }

    /// `record` as the parking topic takes it: untouched.
    fn parked(&self, record: &Record) -> OutgoingRecord {
        OutgoingRecord {
            topic: self.parking.clone(),
            partition: None,
            key: record.key.clone(),
            headers: record.headers.clone(),
            payload: record.payload_or_null(),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;

    fn dead_letter(headers: &[(&str, &str)]) -> Record {
        let headers: Headers = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
        Record::new(
            Arc::from("orders.dlq"),
            0,
            7,
            Some(bytes::Bytes::from_static(b"k")),
            headers,
            Some(bytes::Bytes::from_static(b"{}")),
            1_000,
        )
    }

    fn selection() -> Selection {
        Selection {
            filter: None,
            failed_from: None,
            failed_until: None,
            to: None,
            max_replays: 2,
            parking: Arc::from("orders.dlq.parked"),
        }
    }

    const FAILED: [(&str, &str); 6] = [
        (header::ORIGINAL_TOPIC, "orders"),
        (header::ORIGINAL_OFFSET, "3"),
        (header::ERROR_KIND, "rejected"),
        (header::ERROR_REASON, "bad"),
        (header::ATTEMPT, "1"),
        (header::FAILED_AT, "5000"),
    ];

    #[test]
    fn a_dead_letter_goes_back_without_its_failure_and_counted() {
        let Fate::Send(out) = selection().fate(&dead_letter(&FAILED)) else {
            panic!("sent back")
        };
        assert_eq!(&*out.topic, "orders");
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.headers.get_str(header::REPLAY_COUNT), Some("1"));
        assert_eq!(out.headers.get_str(header::ORIGINAL_OFFSET), Some("3"));
        for name in FAILURE {
            assert!(!out.headers.contains(name), "{name} taken off");
        }
    }

    #[test]
    fn replayed_too_often_it_is_parked_untouched() {
        let mut headers = FAILED.to_vec();
        headers.push((header::REPLAY_COUNT, "2"));
        let Fate::Park(out, why) = selection().fate(&dead_letter(&headers)) else {
            panic!("parked")
        };
        assert_eq!(&*out.topic, "orders.dlq.parked");
        assert_eq!(out.headers.get_str(header::ERROR_REASON), Some("bad"));
        assert_eq!(why, "replayed as often as allowed");
    }

    #[test]
    fn without_a_destination_or_a_payload_it_is_parked() {
        let no_topic = dead_letter(&[(header::ERROR_REASON, "bad")]);
        assert!(matches!(selection().fate(&no_topic), Fate::Park(_, _)));
        let mut headers = FAILED.to_vec();
        headers.push((header::PAYLOAD_DROPPED, "too large"));
        assert!(matches!(
            selection().fate(&dead_letter(&headers)),
            Fate::Park(_, "its payload was dropped")
        ));
        let mut to = selection();
        to.to = Some(Arc::from("orders-v2"));
        let Fate::Send(out) = to.fate(&no_topic) else {
            panic!("sent to the given topic")
        };
        assert_eq!(&*out.topic, "orders-v2");
    }

    #[test]
    fn the_time_range_and_the_filter_select() {
        let record = dead_letter(&FAILED);
        let mut range = selection();
        range.failed_from = Some(5_000);
        range.failed_until = Some(5_001);
        assert!(matches!(range.fate(&record), Fate::Send(_)));
        range.failed_from = Some(5_001);
        assert!(matches!(range.fate(&record), Fate::Skip));
        let mut filtered = selection();
        filtered.filter = Some(Arc::new(|r: &Record| {
            r.headers.get_str(header::ERROR_KIND) == Some("decode")
        }));
        assert!(matches!(filtered.fate(&record), Fate::Skip));
    }
}
