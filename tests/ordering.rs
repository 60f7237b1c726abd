//! 10,000 records over 100 keys with concurrency 8: every record is handled
//! exactly once, records of one key in order, lanes really concurrent; keys
//! land on the partitions Kafka's Java client would choose. On the embedded
//! broker, Apache Kafka and the mock cluster alike.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

const N: u64 = 10_000;
const KEYS: u64 = 100;

async fn exactly_once_in_key_order(tb: TestBroker) {
    let topic = unique("orders");
    let group = unique("billing");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));

    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(8),
            {
                let (log, active, max_active) = (log.clone(), active.clone(), max_active.clone());
                move |d: Delivery<Order>| {
                    let (log, active, max_active) =
                        (log.clone(), active.clone(), max_active.clone());
                    async move {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        max_active.fetch_max(now, Ordering::SeqCst);
                        // Interleave lanes: give other lanes a chance to run mid-handling.
                        for _ in 0..fastrand::usize(0..4) {
                            tokio::task::yield_now().await;
                        }
                        log.push(Seen::of(&d, "a"));
                        active.fetch_sub(1, Ordering::SeqCst);
                        Outcome::Ack
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();

    publish_all(&app, &topic, &orders(N, KEYS)).await;
    eventually(
        "all records handled",
        tb.patience(Duration::from_secs(60)),
        || log.len() >= N as usize,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), N as usize, "every record handled");
    assert!(counts.values().all(|&c| c == 1), "no record handled twice");
    assert_key_order(&log.seen());
    let max = max_active.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&max),
        "lanes ran concurrently (max {max} at once, at most 8)"
    );
}

on_every_broker!(
    exactly_once_in_key_order_with_concurrent_lanes,
    super::exactly_once_in_key_order,
    3
);

async fn keys_land_where_kafka_puts_them(tb: TestBroker) {
    let topic = unique("orders");
    let group = unique("billing");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(2_000, 37)).await;
    eventually(
        "all records handled",
        tb.patience(Duration::from_secs(30)),
        || log.len() >= 2_000,
    )
    .await;
    app.shutdown().await.unwrap();

    let seen = log.seen();
    assert_eq!(seen.len(), 2_000);
    assert_key_order(&seen);
    // Records of one key all came from one partition: the one Kafka's Java
    // client (and librdkafka's murmur2_random) chooses.
    for s in &seen {
        assert_eq!(
            s.partition,
            kafkactor::partition_for_key(s.key.as_bytes(), 6),
            "key {}",
            s.key
        );
    }
}

on_every_broker!(
    actor_handler_keeps_key_order_across_partitions,
    super::keys_land_where_kafka_puts_them,
    6
);
