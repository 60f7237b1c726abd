//! retry_topic: a subscription retrying through its ordered retry topic
//! (concurrency 4), with 1 % of the keys failing their first record once,
//! against the same subscription with no failure (records per second,
//! publish of the first to the last handled); and when each retried record
//! was handled again against its backoff (milliseconds from the failure,
//! p50 and p99, over the configured backoff).

use std::collections::HashMap;

use kafkactor::RetryTopic;

use super::*;
use e2e::unique;

/// The backoff of the retried records.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// What one run measured.
pub(crate) struct RetryRun {
    /// Records per second, first publish to last handled.
    pub(crate) rate: f64,
    /// Milliseconds from each retried record's failure to its second attempt.
    pub(crate) waits_ms: Vec<f64>,
}

/// `records` over `keys` keys through `broker`, the first record of each
/// of the first `failing` keys failing its first attempt.
pub(crate) async fn retry_topic_run(
    broker: Broker,
    records: u64,
    keys: u64,
    failing: u64,
) -> RetryRun {
    let (topic, group) = (unique("retry"), unique("g"));
    let handled = Arc::new(AtomicU64::new(0));
    let failed_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let waits: Arc<Mutex<Vec<f64>>> = Arc::default();
    let handler = {
        let (handled, failed_at, waits) = (handled.clone(), failed_at.clone(), waits.clone());
        move |d: Delivery<Sample>| {
            let id = d.message().id;
            let outcome = if id < failing && d.attempt() == 1 {
                failed_at.lock().unwrap().insert(id, Instant::now());
                Outcome::retry("fails once")
            } else {
                if let Some(at) = failed_at.lock().unwrap().remove(&id) {
                    waits.lock().unwrap().push(at.elapsed().as_secs_f64() * 1e3);
                }
                handled.fetch_add(1, Ordering::Relaxed);
                Outcome::Ack
            };
            async move { outcome }
        }
    };
    let app = Kafkactor::builder()
        .broker(broker)
        .metrics(false)
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(
                    RetryPolicy::exponential(3, BACKOFF)
                        .jitter(0.0)
                        .via_retry_topic(RetryTopic::Ordered),
                ),
            handler,
        )
        .start()
        .await
        .expect("the application starts");
    let producer = app.producer();
    let started = Instant::now();
    let mut id = 0;
    while id < records {
        let end = (id + 1_000).min(records);
        let batch = (id..end)
            .map(|i| {
                Publish::to(topic.as_str())
                    .key(key_of(i, keys))
                    .message(&sample(i))
                    .unwrap()
            })
            .collect();
        producer
            .send_batch(kafkactor::PublishBatch(batch))
            .await
            .expect("the Producer answers");
        id = end;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while handled.load(Ordering::Relaxed) < records {
        assert!(Instant::now() < deadline, "records not handled in 300 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    app.shutdown().await.expect("the application stops");
    let waits = std::mem::take(&mut *waits.lock().unwrap());
    RetryRun {
        rate: records as f64 / took.as_secs_f64(),
        waits_ms: waits,
    }
}

/// The rows of `retry_topic` on `on` (embedded, kafka): throughput with
/// failures over without, and the waits of the retried records over the
/// backoff.
pub(crate) async fn retry_topic_rows(
    on: &str,
    broker: impl Fn() -> Broker,
    records: u64,
    keys: u64,
    rounds: usize,
) -> Vec<Outcome2> {
    let failing = (keys / 100).max(1);
    let notes = format!(
        "{records} records over {keys} keys, concurrency 4, ordered retry topic; {failing} keys (1 %) fail their first record once (backoff {} ms); baseline: no failure",
        BACKOFF.as_millis()
    );
    let mut throughput = throughput_outcome(&format!("retry_topic_throughput_{on}"), None, &notes);
    let row = |name: &str, what: &str| {
        latency_ms_outcome(
            format!("retry_topic_wait_{name}_ms_{on}"),
            format!(
                "{what} of a retried record from its failure to its second attempt; baseline: the backoff"
            ),
        )
    };
    let (mut p50, mut p99) = (
        row("p50", "median wait"),
        row("p99", "99th percentile wait"),
    );
    for round in 0..rounds {
        let with = retry_topic_run(broker(), records, keys, failing).await;
        let without = retry_topic_run(broker(), records, keys, 0).await;
        let mut waits = with.waits_ms.clone();
        waits.sort_by(f64::total_cmp);
        let at = |q: f64| waits[((waits.len() as f64 - 1.0) * q).round() as usize];
        eprintln!(
            "  retry_topic {on} round {round}: {:.0}/s with failures, {:.0}/s without; waits p50 {:.1} ms p99 {:.1} ms ({} retried)",
            with.rate,
            without.rate,
            at(0.5),
            at(0.99),
            waits.len()
        );
        throughput.kafkactor.push(with.rate);
        throughput.baseline.push(without.rate);
        let backoff = BACKOFF.as_secs_f64() * 1e3;
        p50.kafkactor.push(at(0.5));
        p50.baseline.push(backoff);
        p99.kafkactor.push(at(0.99));
        p99.baseline.push(backoff);
    }
    vec![throughput, p50, p99]
}
