//! Rebalances end a member's work on the partitions it gives up: past the
//! drain timeout nothing queued for a released partition is handled,
//! retried or dead-lettered by the old member while the new one reads it.
//! (The Republisher's side is in `delayed.rs`.) On the embedded broker,
//! Apache Kafka and the mock cluster.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use support::*;

/// `(app, partition, id, when the handling began)` of every handling.
type Starts = Arc<Mutex<Vec<(&'static str, i32, u64, Instant)>>>;

/// One lane; every record takes 2 ms, but with `hold` the one with id 0
/// is held until `hold` is set (at most a minute): longer than the drain
/// timeout, for as long as the test needs, however slow the broker's
/// rebalance.
async fn slow_member(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    app: &'static str,
    starts: &Starts,
    hold: Option<Arc<AtomicBool>>,
) -> App {
    let starts = starts.clone();
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic)
                .group(group)
                .concurrency(1)
                .drain_timeout(Duration::from_millis(300)),
            move |d: Delivery<Order>| {
                starts
                    .lock()
                    .unwrap()
                    .push((app, d.partition(), d.message().id, Instant::now()));
                let hold = hold.clone().filter(|_| d.message().id == 0);
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if let Some(hold) = hold {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while !hold.load(Ordering::SeqCst) && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap()
}

async fn released_partitions_are_not_handled_any_more(tb: TestBroker) {
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let starts = Starts::default();
    let hold = Arc::new(AtomicBool::new(false));
    let a = slow_member(&tb, &topic, &group, "a", &starts, Some(hold.clone())).await;
    // Record 0 holds a's only lane; the 400 behind it wait in its queue.
    publish_all(&a, &topic, &orders(400, 40)).await;
    eventually(
        "a is on record 0",
        tb.patience(Duration::from_secs(10)),
        || starts.lock().unwrap().iter().any(|s| s.2 == 0),
    )
    .await;
    // b joins: a's drain timeout passes with record 0 unfinished, so a
    // gives its partitions up with records still queued.
    let b = slow_member(&tb, &topic, &group, "b", &starts, None).await;
    // Record 0 is held until b owns a partition: a gave that one up with
    // records still queued, whatever the rebalance took.
    until_owned(
        "b owns a partition",
        tb.patience(Duration::from_secs(10)),
        &b,
        |n| n > 0,
    )
    .await;
    hold.store(true, Ordering::SeqCst);
    eventually(
        "everything handled",
        tb.patience(Duration::from_secs(30)),
        || {
            let ids: std::collections::HashSet<u64> =
                starts.lock().unwrap().iter().map(|s| s.2).collect();
            ids.len() == 400
        },
    )
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();

    // Once b handles a partition, a starts nothing more of it.
    let starts = starts.lock().unwrap().clone();
    let mut b_from: HashMap<i32, Instant> = HashMap::new();
    for &(app, p, _, at) in &starts {
        if app == "b" {
            let first = b_from.entry(p).or_insert(at);
            *first = (*first).min(at);
        }
    }
    assert!(!b_from.is_empty(), "b never got a partition");
    let late: Vec<_> = starts
        .iter()
        .filter(|(app, p, _, at)| *app == "a" && b_from.get(p).is_some_and(|b| at > b))
        .map(|(_, p, id, at)| (*p, *id, at.duration_since(b_from[p])))
        .collect();
    // Should this fail, what tells a stale queue from a second rebalance
    // that gave a partition back to a: whether b handled those records too,
    // and every start in order.
    let by_b: std::collections::HashSet<u64> =
        starts.iter().filter(|s| s.0 == "b").map(|s| s.2).collect();
    assert!(
        late.is_empty(),
        "a handled records of partitions b had taken over, (partition, id, after b's first): \
         {late:?}; of them b handled too: {:?}; every start (app, partition, id): {:?}",
        late.iter()
            .filter(|l| by_b.contains(&l.1))
            .collect::<Vec<_>>(),
        starts.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>()
    );
}

on_every_broker!(
    a_released_partition_is_not_handled_any_more,
    super::released_partitions_are_not_handled_any_more,
    2
);
