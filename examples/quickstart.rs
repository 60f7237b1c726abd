//! Quickstart: a small order-processing service on the embedded broker.
//!
//! It publishes 1,000 orders over 50 customers (the key), handles them with a
//! `Billing` actor on 4 lanes (orders of one customer in order, customers
//! concurrently), retries one order whose payment gateway times out once,
//! dead-letters one order that fails validation, prints a summary and exits 0.
//!
//! Delivery semantics: at-least-once. An order's offset is committed only
//! after its handler answered `Ack` or after it was written to the
//! dead-letter topic `orders.dlq`; a crash before that redelivers it.
//!
//! It also serves its Prometheus metrics and health checks over HTTP
//! (`/metrics`, `/health/live`, `/health/ready`) on `KAFKACTOR_HTTP`
//! (default: a free loopback port), prints where, and prints a few of the
//! metrics at the end.
//!
//! Run: `cargo run --release --example quickstart`
//! On Kafka: `KAFKACTOR_BROKERS=127.0.0.1:9092 cargo run --release --example quickstart`
//! (topic and group names then get a per-run suffix, so reruns start clean).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
    customer: String,
    total_cents: i64,
}

/// What the service did, shared by every lane.
#[derive(Default)]
struct Ledger {
    charged: AtomicU64,
    revenue_cents: AtomicU64,
    retried: AtomicU64,
    /// Last order id charged per customer, to show per-key order.
    last_by_customer: Mutex<HashMap<String, u64>>,
    out_of_order: AtomicU64,
}

/// The billing handler: one instance per lane, built by the factory.
struct Billing {
    ledger: Arc<Ledger>,
}

impl Actor for Billing {
    type Context = Context<Self>;
}

impl Handler<Delivery<OrderPlaced>> for Billing {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<OrderPlaced>, _: &mut Context<Self>) -> Outcome {
        let order = d.message();
        if order.total_cents < 0 {
            // Permanent: no retry will fix it. Goes to `orders.dlq` with the reason.
            return Outcome::reject(format!("order {} has a negative total", order.id));
        }
        if order.id == 42 && d.attempt() == 1 {
            // Transient: the payment gateway timed out; retried in place.
            self.ledger.retried.fetch_add(1, Ordering::Relaxed);
            return Outcome::retry("payment gateway timed out");
        }
        let mut last = self.ledger.last_by_customer.lock().unwrap();
        let previous = last.insert(order.customer.clone(), order.id);
        if previous.is_some_and(|p| p > order.id) {
            self.ledger.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.ledger.charged.fetch_add(1, Ordering::Relaxed);
        self.ledger
            .revenue_cents
            .fetch_add(order.total_cents as u64, Ordering::Relaxed);
        Outcome::Ack
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const ORDERS: u64 = 1_000;
    let ledger = Arc::new(Ledger::default());
    // The embedded broker by default; Kafka when KAFKACTOR_BROKERS names one.
    let (broker, run) = match std::env::var("KAFKACTOR_BROKERS") {
        Ok(addr) if !addr.is_empty() => {
            let run = format!("-{}", std::process::id());
            (Broker::kafka(addr), run)
        }
        _ => (Broker::memory(), String::new()),
    };
    let (orders, dlq, group) = (
        format!("orders{run}"),
        format!("orders{run}.dlq"),
        format!("billing{run}"),
    );

    let http = std::env::var("KAFKACTOR_HTTP").unwrap_or_else(|_| "127.0.0.1:0".into());
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .serve_http(http)
        .subscribe(
            Subscription::to(orders.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(50)))
                .dead_letter(dlq.as_str()),
            {
                let ledger = ledger.clone();
                move || Billing {
                    ledger: ledger.clone(),
                }
            },
        )
        .start()
        .await?;
    if let Some(addr) = app.http_addr() {
        println!("metrics            http://{addr}/metrics");
        println!("health             http://{addr}/health/ready");
    }

    let started = Instant::now();
    let producer = app.producer();
    for id in 1..=ORDERS {
        let order = OrderPlaced {
            id,
            customer: format!("customer-{}", id % 50),
            // Order 500 is invalid and will be dead-lettered.
            total_cents: if id == 500 { -1 } else { 1_000 + id as i64 },
        };
        producer
            .send(
                Publish::to(orders.as_str())
                    .key(&order.customer)
                    .message(&order)?,
            )
            .await??;
    }

    // Wait (with a deadline) until every order has a final fate.
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.lag(&group, &orders).await? > 0 {
        if Instant::now() > deadline {
            return Err("orders were not all handled within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let ready = app.health().await.ready;
    let metrics = app.metrics_text().await;
    app.shutdown().await?;

    let dead = broker.read_topic(&dlq).await?;
    println!("orders published   {ORDERS}");
    println!(
        "orders charged     {}",
        ledger.charged.load(Ordering::Relaxed)
    );
    println!(
        "revenue            ${:.2}",
        ledger.revenue_cents.load(Ordering::Relaxed) as f64 / 100.0
    );
    println!(
        "retried in place   {}",
        ledger.retried.load(Ordering::Relaxed)
    );
    println!("dead-lettered      {}", dead.len());
    for r in &dead {
        println!(
            "  {} offset {}: {} ({})",
            r.headers.get_str("x-original-topic").unwrap_or("?"),
            r.headers.get_str("x-original-offset").unwrap_or("?"),
            r.headers.get_str("x-error-reason").unwrap_or("?"),
            r.headers.get_str("x-error-kind").unwrap_or("?"),
        );
    }
    println!(
        "out-of-order       {}",
        ledger.out_of_order.load(Ordering::Relaxed)
    );
    println!("elapsed            {elapsed:.2?}");
    println!("ready              {ready}");
    println!("some of its metrics:");
    for line in metrics.lines().filter(|l| {
        [
            "kafkactor_published_total{",
            "kafkactor_acked_total{",
            "kafkactor_retried_total{",
            "kafkactor_dead_lettered_total{",
            "kafkactor_consumer_lag{",
            "kafkactor_handler_duration_seconds_count{",
        ]
        .iter()
        .any(|m| l.starts_with(m))
    }) {
        println!("  {line}");
    }

    let charged = ledger.charged.load(Ordering::Relaxed);
    if charged + dead.len() as u64 != ORDERS || ledger.out_of_order.load(Ordering::Relaxed) > 0 {
        return Err("summary does not add up".into());
    }
    Ok(())
}
