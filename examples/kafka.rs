//! Kafka: the same application code on Apache Kafka (or any Kafka-protocol
//! broker), given by address.
//!
//! Publishes 100 shipment events keyed by warehouse through the idempotent
//! producer, consumes them with a 4-lane subscription, and prints where each
//! warehouse's events landed. The topic and the dead-letter topic are created
//! when missing; topic and group names get a per-run suffix.
//!
//! Delivery semantics: at-least-once. Offsets are committed (never
//! auto-committed) only below records whose handler acknowledged them; a
//! crash redelivers what was in flight.
//!
//! Run: `cargo run --example kafka -- 127.0.0.1:9092`
//! (or set `KAFKACTOR_BROKERS`; `scripts/kafka.sh` shows how to start Apache
//! Kafka on loopback).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Shipped {
    order: u64,
    warehouse: String,
}

/// Partition and offset of each event, by warehouse.
type Landed = BTreeMap<String, Vec<(i32, i64)>>;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(brokers) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("KAFKACTOR_BROKERS").ok())
    else {
        return Err(
            "usage: cargo run --example kafka -- <host:port> (or set KAFKACTOR_BROKERS)".into(),
        );
    };
    let run = std::process::id();
    let (topic, group) = (format!("shipments-{run}"), format!("tracking-{run}"));
    let broker = Broker::kafka(brokers.as_str())
        // Any librdkafka setting passes through.
        .set("client.id", "kafkactor-example")
        .topic_partitions(3);

    let seen: Arc<Mutex<Landed>> = Arc::default();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4),
            {
                let seen = seen.clone();
                move |d: Delivery<Shipped>| {
                    seen.lock()
                        .unwrap()
                        .entry(d.message().warehouse.clone())
                        .or_default()
                        .push((d.partition(), d.offset()));
                    async { Outcome::Ack }
                }
            },
        )
        .start()
        .await?;

    let producer = app.producer();
    let sends: Vec<_> = (0..100u64)
        .map(|order| {
            let event = Shipped {
                order,
                warehouse: format!("wh-{}", order % 5),
            };
            Publish::to(topic.as_str())
                .key(&event.warehouse)
                .message(&event)
        })
        .collect::<Result<_, _>>()?;
    let pending: Vec<_> = sends.into_iter().map(|p| producer.send(p)).collect();
    for p in pending {
        p.await??;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.lag(&group, &topic).await? > 0 {
        if Instant::now() > deadline {
            return Err("events were not all handled within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await?;

    for (warehouse, places) in seen.lock().unwrap().iter() {
        let partitions: std::collections::BTreeSet<i32> = places.iter().map(|(p, _)| *p).collect();
        println!(
            "{warehouse}: {} events, partition {:?}",
            places.len(),
            partitions
        );
    }
    let total: usize = seen.lock().unwrap().values().map(Vec::len).sum();
    println!("handled {total} of 100 events from {topic} on {brokers}");
    if total < 100 {
        return Err("events were lost".into());
    }
    Ok(())
}
