//! 10,000 records over 100 keys with concurrency 8: every record is handled
//! exactly once, records of one key in order, lanes really concurrent.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

const N: u64 = 10_000;
const KEYS: u64 = 100;

#[actix::test]
async fn exactly_once_in_key_order_with_concurrent_lanes() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("billing");
    let log = Log::default();
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));

    let app = Kafkactor::builder()
        .broker(broker.clone())
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
                        let m = d.message();
                        log.push(Seen {
                            id: m.id,
                            key: m.key.clone(),
                            seq: m.seq,
                            partition: d.partition(),
                            offset: d.offset(),
                            attempt: d.attempt(),
                            app: "a",
                        });
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
    eventually("all records handled", Duration::from_secs(60), || {
        log.len() >= N as usize
    })
    .await;
    let memory = broker.as_memory().unwrap();
    eventually("all offsets committed", Duration::from_secs(10), || {
        memory.lag(&group, &topic) == 0
    })
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

#[actix::test]
async fn actor_handler_keeps_key_order_across_partitions() {
    let broker = Broker::memory_with_partitions(6).unwrap();
    let topic = unique("orders");
    let group = unique("billing");
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(broker.clone())
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
    eventually("all records handled", Duration::from_secs(30), || {
        log.len() >= 2_000
    })
    .await;
    app.shutdown().await.unwrap();

    let seen = log.seen();
    assert_eq!(seen.len(), 2_000);
    assert_key_order(&seen);
    // Records of one key all came from one partition: the one Kafka would choose.
    for s in &seen {
        assert_eq!(
            s.partition,
            kafkactor::partition_for_key(s.key.as_bytes(), 6),
            "key {}",
            s.key
        );
    }
}
