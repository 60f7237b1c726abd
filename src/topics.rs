//! The topics kafkactor derives from a user's, each named by one function
//! here: the dead-letter topic of a subscription's records, the parking
//! topic of dead letters replayed too often, the group a replay commits
//! its progress under, and the delay buckets' topics (the retry and reply
//! topics will join them).

use std::time::Duration;

/// The dead-letter topic of records of `topic`: the `configured` one, or
/// `<topic>.dlq`.
pub(crate) fn dead_letter(topic: &str, configured: Option<&str>) -> String {
    configured.map_or_else(|| format!("{topic}.dlq"), str::to_string)
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
