//! Batch handlers: a ledger service writing payments to its database in
//! bulk, up to 100 at a time.
//!
//! 5,000 payments over 50 accounts (the key). The handler, an actix actor
//! implementing `Handler<Batch<Payment>>`, gets up to 100 payments of a
//! lane at a time (waiting up to 20 ms for a batch to fill) and answers per
//! record: a payment of nothing is rejected (dead-lettered with its
//! reason); the database refuses a bulk write now and then part way, and
//! the handler answers `FailedAt(i)`: the rows before it are kept, the
//! payment at `i` is retried, and the ones after it are handed out again
//! after it, in order.
//!
//! Delivery semantics: at least once, in order per account; each payment
//! written once here (the rows before a failure are acknowledged, never
//! handed out again). The example exits non-zero if a payment is missing,
//! written twice or out of its account's order.
//!
//! Run: `cargo run --example batch`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    id: u64,
    account: String,
    /// Position among the account's payments.
    seq: u64,
    cents: u64,
}

const PAYMENTS: u64 = 5_000;
const ACCOUNTS: u64 = 50;

/// The ledger's table: rows in the order written.
type Table = Arc<Mutex<Vec<Payment>>>;

/// Writes batches of payments in bulk.
struct Ledger {
    table: Table,
    writes: u64,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Batch<Payment>> for Ledger {
    type Result = BatchOutcome;

    fn handle(&mut self, batch: Batch<Payment>, _: &mut Context<Self>) -> BatchOutcome {
        self.batches.lock().unwrap().push(batch.len());
        self.writes += 1;
        // Every 7th bulk write fails at its middle row (a lock timeout).
        let fails_at = (self.writes % 7 == 0 && batch.len() > 1).then_some(batch.len() / 2);
        let mut table = self.table.lock().unwrap();
        for (i, delivery) in batch.iter().enumerate() {
            let payment = delivery.message();
            if payment.cents == 0 {
                return BatchOutcome::FailedAt(i, Outcome::reject("a payment of nothing"));
            }
            if fails_at == Some(i) {
                return BatchOutcome::FailedAt(i, Outcome::retry("lock timeout"));
            }
            table.push(payment.clone());
        }
        BatchOutcome::Ack
    }
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let table: Table = Arc::default();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let broker = Broker::memory();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe_batch(
            Subscription::to("payments")
                .group("ledger")
                .concurrency(4)
                .batch(100, Duration::from_millis(20))
                .retry(RetryPolicy::exponential(5, Duration::from_millis(10))),
            {
                let (table, batches) = (table.clone(), batches.clone());
                move || Ledger {
                    table: table.clone(),
                    writes: 0,
                    batches: batches.clone(),
                }
            },
        )
        .start()
        .await?;
    let producer = app.producer();
    let payments: Vec<Payment> = (0..PAYMENTS)
        .map(|id| Payment {
            id,
            account: format!("account-{}", id % ACCOUNTS),
            seq: id / ACCOUNTS,
            // Every 1,000th payment is of nothing.
            cents: if id % 1_000 == 999 { 0 } else { 100 + id },
        })
        .collect();
    let rejected = payments.iter().filter(|p| p.cents == 0).count();
    let sent: Vec<_> = payments
        .iter()
        .map(|p| {
            Publish::to("payments")
                .key(&p.account)
                .message(p)
                .map(|publish| producer.send(publish))
        })
        .collect::<Result<_, _>>()?;
    for s in sent {
        s.await??;
    }

    let expected = payments.len() - rejected;
    let deadline = Instant::now() + Duration::from_secs(30);
    while table.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await?;
    let dead = broker.read_topic("payments.dlq").await?.len();

    let table = table.lock().unwrap();
    let mut written: HashMap<u64, usize> = HashMap::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut out_of_order = 0;
    for p in table.iter() {
        *written.entry(p.id).or_default() += 1;
        if last
            .insert(&p.account, p.seq)
            .is_some_and(|prev| prev >= p.seq)
        {
            out_of_order += 1;
        }
    }
    let twice = written.values().filter(|n| **n > 1).count();
    let batches = batches.lock().unwrap();
    println!(
        "{} payments written in {} batches (largest {}, mean {:.1}); {dead} dead-lettered; \
         {twice} written twice, {out_of_order} out of order; {:.2} s",
        written.len(),
        batches.len(),
        batches.iter().max().unwrap_or(&0),
        batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    if written.len() != expected || twice > 0 || out_of_order > 0 || dead != rejected {
        return Err(Error::Unavailable(
            "a payment was lost, written twice or out of its account's order".into(),
        ));
    }
    Ok(())
}
