//! The transactional outbox: an orders service that writes each order and
//! its `OrderPlaced` event in one PostgreSQL transaction.
//!
//! It places 1,000 orders, each in a transaction of its own that inserts
//! the order row and writes the event with `Outbox::publish`; every tenth
//! is declined after the insert and its transaction rolled back, so neither
//! the row nor the event exists. The outbox relay (an actor of the
//! application) moves committed events to the broker, and a subscription
//! reads them. It prints what was placed, declined and delivered, and exits
//! 0 when the events delivered are exactly the orders in the table, in
//! order per customer.
//!
//! Delivery semantics: an event is published if and only if its
//! transaction commits, at least once: the relay deletes a row only after
//! the broker acknowledged it, so a relay that dies in between sends that
//! batch again (same message ids: an idempotent subscription drops the
//! copies). Events of one key (here the customer) reach the broker in the
//! order they were written.
//!
//! Run (PostgreSQL 14 or later; `scripts/test.sh` starts one):
//! `cargo run --example outbox --features postgres -- postgres://user:password@127.0.0.1/db`
//! (or set `DATABASE_URL`). It creates two tables of its own and drops them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kafkactor::outbox::database;
use kafkactor::prelude::*;
use kafkactor::{Outbox, OutboxRelay};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: i64,
    customer: String,
    cents: i64,
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or_else(|| {
            Error::Config("give a PostgreSQL URL: cargo run --example outbox --features postgres -- postgres://..".into())
        })?;
    let started = Instant::now();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .map_err(database)?;
    // Tables of this run's own.
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let orders_table = format!("example_orders_{run}");
    let outbox = Outbox::table(&format!("example_outbox_{run}"))?;
    outbox.migrate(&pool).await?;
    let ddl = format!(
        "CREATE TABLE {orders_table} (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, cents BIGINT NOT NULL)"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&pool)
        .await
        .map_err(database)?;

    // What the subscription received, per customer in arrival order.
    let delivered: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("orders").group("shipping").concurrency(4),
            {
                let delivered = delivered.clone();
                move |d: Delivery<OrderPlaced>| {
                    let m = d.message();
                    delivered
                        .lock()
                        .unwrap()
                        .entry(m.customer.clone())
                        .or_default()
                        .push(m.order);
                    async { Outcome::Ack }
                }
            },
        )
        .outbox_relay(OutboxRelay::new(pool.clone(), outbox.clone()))
        .start()
        .await?;

    let insert = format!("INSERT INTO {orders_table} (id, customer, cents) VALUES ($1, $2, $3)");
    let (mut placed, mut declined) = (0, 0);
    for order in 0..1_000i64 {
        let event = OrderPlaced {
            order,
            customer: format!("customer-{}", order % 25),
            cents: 500 + order,
        };
        let mut tx = pool.begin().await.map_err(database)?;
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(order)
            .bind(&event.customer)
            .bind(event.cents)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        let publish = Publish::to("orders").key(&event.customer).message(&event)?;
        outbox.publish(&mut *tx, publish).await?;
        if order % 10 == 9 {
            // Declined after the insert: the order and its event go together.
            tx.rollback().await.map_err(database)?;
            declined += 1;
        } else {
            tx.commit().await.map_err(database)?;
            placed += 1;
        }
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let count = |d: &HashMap<String, Vec<i64>>| d.values().map(Vec::len).sum::<usize>();
    while count(&delivered.lock().unwrap()) < placed {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = delivered.lock().unwrap().clone();
    let in_table: BTreeSet<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {orders_table}"
    )))
    .fetch_all(&pool)
    .await
    .map_err(database)?
    .into_iter()
    .collect();
    let events: BTreeSet<i64> = delivered.values().flatten().copied().collect();
    let in_order = delivered
        .values()
        .all(|orders| orders.windows(2).all(|w| w[0] < w[1]));
    println!(
        "placed {placed} orders, declined {declined}; {} events delivered for {} customers, \
         {} in customer order; events match the orders table: {}; {:.2} s",
        count(&delivered),
        delivered.len(),
        if in_order { "all" } else { "NOT all" },
        events == in_table,
        started.elapsed().as_secs_f64()
    );
    app.shutdown().await?;
    let drop = format!(
        "DROP TABLE {orders_table}, {table}; DROP FUNCTION {table}_notify()",
        table = outbox.table_name()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .map_err(database)?;
    if events != in_table || count(&delivered) != placed || !in_order {
        return Err(Error::Unavailable(
            "the events delivered are not the orders committed".into(),
        ));
    }
    Ok(())
}
