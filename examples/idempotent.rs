//! Idempotent consumption: a payments service that must not charge twice.
//!
//! An upstream publishes 1,000 charge requests, each twice (as a producer's
//! retry after a lost acknowledgement would: the same message id), and
//! another 200 with a business idempotency key that a second, independent
//! publish of the same charge repeats under a new message id. The
//! subscription reads both copies of everything; the handler charges each
//! payment once, and the copies are acknowledged as duplicates without
//! reaching it. It prints the charges made, the duplicates skipped (the
//! `kafkactor_duplicates_total` counter) and exits 0 when every copy was
//! committed.
//!
//! The store is in memory here (`MemoryStore`: one process). Several
//! instances share Redis instead: `cargo run --example idempotent
//! --features redis -- redis://127.0.0.1:6379` uses `RedisStore`.
//!
//! Delivery semantics: effectively once for the handler's effects. A
//! record whose key the store holds as handled is acknowledged without
//! calling the handler; a key is recorded as handled once the handler's
//! outcome is final, and only then is the record committed. If the
//! process dies between a charge and the store write, that record is read
//! again and charged again once the claim's lease (60 s) runs out: at least
//! once for that window (make the charge and the key one database
//! transaction to close it).
//!
//! Run: `cargo run --example idempotent`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{header, PublishBatch};
use kafkactor::{Idempotency, IdempotencyStore, MemoryStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charge {
    payment: String,
    cents: u64,
}

/// The store: Redis when a URL is given (feature `redis`), else memory.
async fn store() -> Result<Arc<dyn IdempotencyStore>, Error> {
    match std::env::args().nth(1) {
        #[cfg(feature = "redis")]
        Some(url) => {
            // Each run keys of its own: the embedded broker starts empty,
            // and a key Redis kept from an earlier run would make its
            // payments duplicates.
            let run = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let store = kafkactor::RedisStore::connect(&url).await?;
            Ok(Arc::new(store.prefix(&format!("kafkactor:example:{run}:"))))
        }
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(Error::Config(
            "a Redis URL needs the redis feature: --features redis".into(),
        )),
        None => Ok(Arc::new(MemoryStore::new(100_000))),
    }
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let charged: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let store = store().await?;
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("charges")
                .group("payments")
                .concurrency(4)
                .idempotent(
                    // The business key when there is one, else the message id.
                    Idempotency::shared(store).key_with(|record| {
                        record
                            .headers
                            .get_str(header::IDEMPOTENCY_KEY)
                            .or_else(|| record.headers.get_str(header::MESSAGE_ID))
                            .map(str::to_string)
                    }),
                ),
            {
                let charged = charged.clone();
                move |d: Delivery<Charge>| {
                    // The side effect that must happen once per payment.
                    *charged
                        .lock()
                        .unwrap()
                        .entry(d.message().payment.clone())
                        .or_default() += 1;
                    async { Outcome::Ack }
                }
            },
        )
        .start()
        .await?;

    let producer = app.producer();
    let mut batch = Vec::new();
    for i in 0..1_000u64 {
        let charge = Charge {
            payment: format!("pay-{i}"),
            cents: 100 + i,
        };
        let id = format!("msg-{i}");
        // The same record twice: a producer retry.
        for _ in 0..2 {
            batch.push(
                Publish::to("charges")
                    .key(format!("customer-{}", i % 50))
                    .header(header::MESSAGE_ID, &id)
                    .message(&charge)?,
            );
        }
    }
    for i in 1_000..1_200u64 {
        let charge = Charge {
            payment: format!("pay-{i}"),
            cents: 100 + i,
        };
        // Two independent publishes of one charge: new message ids, one
        // business key.
        for _ in 0..2 {
            batch.push(
                Publish::to("charges")
                    .key(format!("customer-{}", i % 50))
                    .idempotency_key(&charge.payment)
                    .message(&charge)?,
            );
        }
    }
    let published = batch.len();
    let outcomes = producer
        .send_batch(PublishBatch(batch))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    if let Some(Err(e)) = outcomes.into_iter().find(Result::is_err) {
        return Err(e);
    }

    let duplicates = |app: &App| -> f64 {
        app.metrics_registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "kafkactor_duplicates_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while duplicates(&app) < (published / 2) as f64 {
        if Instant::now() > deadline {
            app.shutdown().await?;
            return Err(Error::Unavailable(
                "not every copy was finished in 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let charged = charged.lock().unwrap().clone();
    let twice = charged.values().filter(|n| **n > 1).count();
    println!(
        "published {published} records for {} payments; charged {} payments ({} more than once); \
         {} copies acknowledged as duplicates; {:.2} s",
        published / 2,
        charged.len(),
        twice,
        duplicates(&app),
        started.elapsed().as_secs_f64()
    );
    app.shutdown().await?;
    if charged.len() != published / 2 || twice > 0 {
        return Err(Error::Unavailable(
            "a payment was charged twice or not at all".into(),
        ));
    }
    Ok(())
}
