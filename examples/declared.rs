//! Declared handlers: an invoicing service whose two handlers are plain
//! async functions, each declaring its subscription with
//! `#[kafkactor::handler(..)]` and registered by name (`.handler(on_order)`).
//!
//! `on_order` invoices each of 500 orders by publishing an `Invoice` from
//! the handler; an order of nothing is rejected (dead-lettered with the
//! reason). `on_invoice` files each invoice. The example prints what was
//! filed and exits non-zero unless every order but the empty ones was
//! invoiced exactly once and every empty one was dead-lettered.
//!
//! Delivery semantics: at-least-once. An order is committed only once its
//! invoice is written (the handler awaits the publish before it answers)
//! or once it is dead-lettered; a crash before that invoices it again,
//! which is why `on_invoice` files by order id.
//!
//! Run: `cargo run --example declared`

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    order: u64,
    cents: u64,
}

/// What was filed: invoice count per order id.
static FILED: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

/// Invoices an order; an order of nothing can never be invoiced.
#[kafkactor::handler(
    topic = "orders",
    group = "invoicing",
    concurrency = 4,
    retry = RetryPolicy::exponential(3, Duration::from_millis(20)),
)]
async fn on_order(d: Delivery<Order>) -> Result<(), Failure> {
    let order = d.message();
    if order.cents == 0 {
        return Err(Failure::reject(format!(
            "order {} is for nothing",
            order.id
        )));
    }
    let invoice = Invoice {
        order: order.id,
        cents: order.cents,
    };
    d.publish(
        Publish::to("invoices")
            .key(&order.customer)
            .message(&invoice)?,
    )
    .await?;
    Ok(())
}

/// Files an invoice, once per order however often it comes.
#[kafkactor::handler(topic = "invoices", group = "filing")]
async fn on_invoice(d: Delivery<Invoice>) -> Outcome {
    let mut filed = FILED.lock().unwrap();
    *filed
        .get_or_insert_with(HashMap::new)
        .entry(d.message().order)
        .or_default() += 1;
    Outcome::Ack
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const ORDERS: u64 = 500;
    let broker = Broker::memory();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handler(on_order)
        .handler(on_invoice)
        .start()
        .await?;
    let producer = app.producer();
    for id in 0..ORDERS {
        let order = Order {
            id,
            customer: format!("customer-{}", id % 20),
            cents: if id % 100 == 0 { 0 } else { 100 + id },
        };
        producer
            .send(Publish::to("orders").key(&order.customer).message(&order)?)
            .await??;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.lag("invoicing", "orders").await? > 0
        || broker.lag("filing", "invoices").await? > 0
    {
        if Instant::now() > deadline {
            return Err("orders and invoices were not all handled within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await?;

    let filed = FILED.lock().unwrap().take().unwrap_or_default();
    let dead = broker.read_topic("orders.dlq").await?;
    let empty: Vec<u64> = (0..ORDERS).filter(|id| id % 100 == 0).collect();
    println!(
        "{} invoices filed, {} orders dead-lettered ({})",
        filed.len(),
        dead.len(),
        dead.first()
            .and_then(|r| r.dead_lettered())
            .map(|d| d.reason)
            .unwrap_or_default()
    );
    let twice = filed.values().filter(|&&n| n > 1).count();
    let missing = (0..ORDERS)
        .filter(|id| id % 100 != 0 && !filed.contains_key(id))
        .count();
    if missing > 0 || filed.len() as u64 != ORDERS - empty.len() as u64 || dead.len() != empty.len()
    {
        eprintln!(
            "FAILED: {missing} orders not invoiced, {} dead letters",
            dead.len()
        );
        std::process::exit(1);
    }
    println!("every order invoiced once or dead-lettered ({twice} invoices came twice and were filed once)");
    Ok(())
}
