//! Ordered retries through the retry topic, then a dead-letter replay.
//!
//! 1,000 orders over 20 customers (the key). Every tenth order fails its
//! first attempt (a flaky downstream): it goes through `orders.billing.retry`
//! and its customer's later orders follow it there, in order, while the
//! other customers' orders flow. The orders of customer `c-7` fail every
//! attempt (a bug): after three they are dead-lettered. The bug is then
//! fixed, and the dead letters replayed to `orders`, once each.
//!
//! Delivery semantics: at least once, in order per customer. The example
//! exits non-zero if an order is missing, handled out of its customer's
//! order, or replayed twice.
//!
//! Run: `cargo run --example retries`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{Replay, RetryTopic};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    /// Position among the customer's orders.
    seq: u64,
}

const ORDERS: u64 = 1_000;
const CUSTOMERS: u64 = 20;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::memory();
    let fixed = Arc::new(AtomicBool::new(false));
    let handled: Arc<Mutex<Vec<Order>>> = Arc::default();
    let handler = {
        let (fixed, handled) = (fixed.clone(), handled.clone());
        move |d: Delivery<Order>| {
            let (fixed, handled) = (fixed.clone(), handled.clone());
            async move {
                let order = d.message();
                if order.customer == "c-7" && !fixed.load(Ordering::Relaxed) {
                    return Outcome::retry("c-7's orders hit a bug");
                }
                if order.id % 10 == 3 && d.attempt() == 1 {
                    return Outcome::retry("the downstream is flaky");
                }
                handled.lock().unwrap().push(order.clone());
                Outcome::Ack
            }
        }
    };
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to("orders")
                .group("billing")
                .concurrency(4)
                .retry(
                    RetryPolicy::exponential(3, Duration::from_millis(20))
                        .via_retry_topic(RetryTopic::Ordered),
                ),
            handler,
        )
        .start()
        .await?;

    let producer = app.producer();
    for id in 0..ORDERS {
        let order = Order {
            id,
            customer: format!("c-{}", id % CUSTOMERS),
            seq: id / CUSTOMERS,
        };
        producer
            .send(Publish::to("orders").key(&order.customer).message(&order)?)
            .await??;
    }

    // Everyone but c-7 is served; c-7's orders end in the dead-letter topic.
    let c7 = ORDERS / CUSTOMERS;
    wait_until("everyone but c-7 served", || {
        handled.lock().unwrap().len() as u64 == ORDERS - c7
    })
    .await?;
    wait_until("c-7's orders dead-lettered", || {
        broker
            .as_memory()
            .map_or(0, |m| m.records("orders.dlq").len() as u64)
            == c7
    })
    .await?;
    println!(
        "served {} orders; c-7's {c7} dead-lettered after 3 attempts each",
        ORDERS - c7
    );

    // The bug is fixed: c-7's orders go back to `orders`, 200 a second.
    fixed.store(true, Ordering::Relaxed);
    let report = Replay::from("orders.dlq").rate(200.0).run(&broker).await?;
    println!("replayed {} dead letters", report.sent);
    wait_until("every order served", || {
        handled.lock().unwrap().len() as u64 == ORDERS
    })
    .await?;
    let again = Replay::from("orders.dlq").run(&broker).await?;
    app.shutdown().await?;

    // What was promised.
    let handled = handled.lock().unwrap().clone();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for order in &handled {
        if let Some(&before) = last.get(order.customer.as_str()) {
            if order.seq <= before {
                return Err(format!(
                    "{} served order {} after order {before}",
                    order.customer, order.seq
                )
                .into());
            }
        }
        last.insert(&order.customer, order.seq);
    }
    let mut ids: Vec<u64> = handled.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() as u64 != ORDERS || handled.len() as u64 != ORDERS {
        return Err(format!("{} orders served, {} distinct", handled.len(), ids.len()).into());
    }
    if report.sent != c7 || again.sent != 0 {
        return Err(format!("replayed {} then {}", report.sent, again.sent).into());
    }
    println!("every order served once, in order per customer; a second replay sent nothing");
    Ok(())
}

/// Waits until `done` holds, for at most 30 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
