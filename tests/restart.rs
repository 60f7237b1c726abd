//! Shutdown mid-stream, then a new application on the same broker and group:
//! the second one resumes from the committed offsets, so together they
//! handle every record exactly once.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

const N: u64 = 10_000;

async fn start(broker: &Broker, topic: &str, group: &str, log: &Log, app: &'static str) -> App {
    Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic).group(group).concurrency(8),
            probe(log, app, Arc::new(|_| Outcome::Ack)),
        )
        .start()
        .await
        .unwrap()
}

#[actix::test]
async fn shutdown_then_restart_loses_and_repeats_nothing() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("billing");
    let log = Log::default();

    let first = start(&broker, &topic, &group, &log, "first").await;
    // Produce while the first app consumes, and stop it mid-stream.
    let all = orders(N, 100);
    publish_all(&first, &topic, &all[..N as usize / 2]).await;
    eventually("the first app is busy", Duration::from_secs(30), || {
        log.len() >= 1_000
    })
    .await;
    first.shutdown().await.unwrap();
    let handled_by_first = log.len();
    assert!(handled_by_first < N as usize, "stopped mid-stream");

    // The rest is published while nobody consumes.
    let second = start(&broker, &topic, &group, &log, "second").await;
    publish_all(&second, &topic, &all[N as usize / 2..]).await;
    eventually("every record handled", Duration::from_secs(60), || {
        log.len() >= N as usize
    })
    .await;
    let memory = broker.as_memory().unwrap();
    eventually("all committed", Duration::from_secs(10), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    second.shutdown().await.unwrap();

    let seen = log.seen();
    assert_eq!(seen.len(), N as usize, "no record handled twice");
    let ids: HashSet<u64> = seen.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), N as usize, "no record lost");
    let first_ids: HashSet<u64> = seen
        .iter()
        .filter(|s| s.app == "first")
        .map(|s| s.id)
        .collect();
    let second_ids: HashSet<u64> = seen
        .iter()
        .filter(|s| s.app == "second")
        .map(|s| s.id)
        .collect();
    assert!(first_ids.is_disjoint(&second_ids));
    assert!(!second_ids.is_empty());
    assert_key_order(&seen);
}

#[actix::test]
async fn shutdown_drains_in_flight_records_before_committing() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("slow");
    let log = Log::default();
    // A slow closure handler: shutdown has to wait for what is in flight.
    let app = Kafkactor::builder()
        .broker(broker.clone())
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
                        Outcome::Ack
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(500, 10)).await;
    eventually("handling started", Duration::from_secs(10), || {
        log.len() >= 10
    })
    .await;
    app.shutdown().await.unwrap();

    // Everything handled is committed, and nothing beyond it.
    let memory = broker.as_memory().unwrap();
    let handled = log.len() as i64;
    let committed: i64 = (0..3)
        .map(|p| memory.committed(&group, &topic, p).unwrap_or(0))
        .sum();
    assert_eq!(committed, handled, "committed exactly what was handled");
    assert!(handled < 500, "shutdown did not wait for the whole backlog");
}
