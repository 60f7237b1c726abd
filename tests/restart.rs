//! Shutdown mid-stream, then a new application on the same broker and group:
//! the second one resumes from the committed offsets, so together they
//! handle every record exactly once. On the embedded broker, Apache Kafka and the
//! mock cluster.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

const N: u64 = 10_000;

async fn start(tb: &TestBroker, topic: &str, group: &str, log: &Log, app: &'static str) -> App {
    // The first app's handlers take a while over each record (the work a
    // handler does), so that its shutdown comes mid-stream.
    let behaviour: Behaviour = if app == "first" {
        Arc::new(|_| {
            std::thread::sleep(Duration::from_micros(200));
            Outcome::Ack
        })
    } else {
        ack()
    };
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            // In flight (and drained at shutdown) at most 256 at a time.
            Subscription::to(topic)
                .group(group)
                .concurrency(8)
                .max_in_flight(256),
            probe(log, app, behaviour),
        )
        .start()
        .await
        .unwrap()
}

async fn shutdown_then_restart(tb: TestBroker) {
    let topic = unique("orders");
    let group = unique("billing");
    tb.topics(&[&topic]).await;
    let log = Log::default();

    // The first half is waiting when the first app starts, so it is busy
    // with it from the start.
    let all = orders(N, 100);
    let publisher = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    publish_all(&publisher, &topic, &all[..N as usize / 2]).await;
    publisher.shutdown().await.unwrap();
    let first = start(&tb, &topic, &group, &log, "first").await;
    // Stop the first app mid-stream, while it has records in flight.
    eventually(
        "the first app is busy",
        tb.patience(Duration::from_secs(30)),
        || log.len() >= 1_000,
    )
    .await;
    first.shutdown().await.unwrap();
    let handled_by_first = log.len();
    assert!(
        handled_by_first < N as usize / 2,
        "stopped mid-stream ({handled_by_first})"
    );

    // The rest is published while nobody consumes.
    let second = start(&tb, &topic, &group, &log, "second").await;
    publish_all(&second, &topic, &all[N as usize / 2..]).await;
    eventually(
        "every record handled",
        tb.patience(Duration::from_secs(60)),
        || log.len() >= N as usize,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    second.shutdown().await.unwrap();

    let seen = log.seen();
    assert_eq!(seen.len(), N as usize, "no record handled twice");
    let ids: HashSet<u64> = seen.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), N as usize, "no record lost");
    let by = |app: &str| {
        seen.iter()
            .filter(|s| s.app == app)
            .map(|s| s.id)
            .collect::<HashSet<_>>()
    };
    assert!(by("first").is_disjoint(&by("second")));
    assert_eq!(
        by("first").len(),
        handled_by_first,
        "the first app handled nothing after its shutdown"
    );
    assert_key_order(&seen);
}

on_every_broker!(
    shutdown_then_restart_loses_and_repeats_nothing,
    super::shutdown_then_restart,
    3
);

async fn shutdown_drains(tb: TestBroker) {
    let topic = unique("orders");
    let group = unique("slow");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    // A slow closure handler: shutdown has to wait for what is in flight.
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(2)
                .max_in_flight(20),
            {
                let log = log.clone();
                move |d: Delivery<Order>| {
                    let log = log.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        log.push(Seen::of(&d, "a"));
                        Outcome::Ack
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(500, 10)).await;
    eventually(
        "handling started",
        tb.patience(Duration::from_secs(10)),
        || log.len() >= 10,
    )
    .await;
    app.shutdown().await.unwrap();

    // Everything handled is committed, and nothing beyond it.
    let handled = log.len() as i64;
    let committed: i64 = tb
        .broker
        .committed_offsets(&group, &topic)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.unwrap_or(0))
        .sum();
    assert_eq!(committed, handled, "committed exactly what was handled");
    assert!(handled < 500, "shutdown did not wait for the whole backlog");
}

on_every_broker!(
    shutdown_drains_in_flight_records_before_committing,
    super::shutdown_drains,
    3
);

/// Shutting down an application with many busy subscriptions stops intake
/// of all of them first and drains them side by side: it takes about one
/// drain, not one per subscription, and no subscription starts a record
/// once the shutdown has begun.
async fn many_subscriptions_drain_in_parallel(tb: TestBroker) {
    const SUBSCRIPTIONS: usize = 5;
    let starts: std::sync::Arc<std::sync::Mutex<Vec<(usize, std::time::Instant)>>> =
        Default::default();
    let topics: Vec<String> = (0..SUBSCRIPTIONS).map(|_| unique("orders")).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    tb.topics(&names).await;
    let mut builder = Kafkactor::builder().broker(tb.broker.clone());
    for (i, topic) in topics.iter().enumerate() {
        let starts = starts.clone();
        builder = builder.handle(
            Subscription::to(topic.as_str())
                .group(unique("g").as_str())
                .max_in_flight(1),
            move |_: Delivery<Order>| {
                starts.lock().unwrap().push((i, std::time::Instant::now()));
                async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    Outcome::Ack
                }
            },
        );
    }
    let app = builder.start().await.unwrap();
    for topic in &topics {
        publish_all(&app, topic, &orders(20, 2)).await;
    }
    eventually(
        "every subscription busy",
        tb.patience(Duration::from_secs(10)),
        || {
            let seen: HashSet<usize> = starts.lock().unwrap().iter().map(|s| s.0).collect();
            seen.len() == SUBSCRIPTIONS
        },
    )
    .await;
    let began = std::time::Instant::now();
    app.shutdown().await.unwrap();
    let took = began.elapsed();
    let late: Vec<usize> = starts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > began + Duration::from_millis(50))
        .map(|(i, _)| *i)
        .collect();
    assert!(
        late.is_empty(),
        "subscriptions {late:?} started records after the shutdown began"
    );
    assert!(
        took < Duration::from_millis(800 * 3),
        "shutdown took {took:?}: the {SUBSCRIPTIONS} drains did not run side by side"
    );
}

on_every_broker!(
    shutdown_drains_many_subscriptions_in_parallel,
    super::many_subscriptions_drain_in_parallel,
    1
);
