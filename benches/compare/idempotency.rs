//! idempotency_redis: what the Redis check costs per record. The same
//! subscription on the embedded broker with and without
//! `Idempotency` on a `RedisStore` (loopback Redis), records published in
//! batches of 1 (each waited for before the next: the round trip per
//! record) and of 100 (one claim and one completion per batch); microseconds
//! per record from publish to handled, and their difference is the check's
//! cost.

use super::*;
use e2e::{noop_app, unique};

/// Microseconds per record over `batches` batches of `size`, waiting for
/// each batch to be handled before publishing the next.
pub(crate) async fn idempotency_us_per_record(
    redis: Option<&str>,
    size: usize,
    batches: usize,
) -> f64 {
    let (topic, group) = (unique("idem"), unique("g"));
    let handled = Arc::new(AtomicU64::new(0));
    let mut subscription = Subscription::to(topic.as_str()).group(group.as_str());
    if let Some(url) = redis {
        let store = kafkactor::idempotency::RedisStore::connect(url)
            .await
            .expect("Redis reachable")
            .prefix(&format!("kafkactor:bench:{}:", unique("run")));
        subscription = subscription.idempotent(kafkactor::idempotency::Idempotency::new(store));
    }
    let app = noop_app(Broker::memory(), subscription, &handled).await;
    let producer = app.producer();
    // One warm-up batch (connections, topic, assignment).
    let run = |first: u64, n: usize| {
        let batch = (0..n as u64)
            .map(|i| {
                Publish::to(topic.as_str())
                    .key(key_of(first + i, 1_000))
                    .message(&sample(first + i))
                    .unwrap()
            })
            .collect();
        producer.send_batch(kafkactor::PublishBatch(batch))
    };
    let mut next = 0u64;
    let wait_for = |target: u64| {
        let handled = handled.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while handled.load(Ordering::Relaxed) < target {
                assert!(Instant::now() < deadline, "records not handled in 30 s");
                tokio::task::yield_now().await;
            }
        }
    };
    run(next, size).await.unwrap();
    next += size as u64;
    wait_for(next).await;
    let started = Instant::now();
    for _ in 0..batches {
        run(next, size).await.unwrap();
        next += size as u64;
        wait_for(next).await;
    }
    let took = started.elapsed();
    app.shutdown().await.unwrap();
    took.as_secs_f64() * 1e6 / (size * batches) as f64
}
