//! Exactly once, consume-transform-produce: a currency service that reads
//! payments in euros and publishes each converted to dollars.
//!
//! The subscription is transactional: what its handler publishes joins the
//! transaction of the payment it handles, committed with that payment's
//! offset. The handler fails every seventh call after it published (a
//! rate service timing out, say); that attempt's output is dropped and the
//! payment is handled again. A second subscription reads the converted
//! payments. It prints how many handler calls failed and how many outputs
//! were read, and exits 0 when every payment was converted exactly once.
//!
//! Delivery semantics: exactly once for what the handler publishes, as a
//! `read_committed` consumer sees it (the embedded broker's only mode;
//! librdkafka's default on Kafka): a payment's output is written if and
//! only if its offset is committed with it. The handler's other effects
//! (a log line here) happen once per attempt: at least once.
//!
//! Run: `cargo run --example exactly_once` (on Kafka: the same code with
//! `Broker::kafka(..)`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{PublishBatch, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    id: u64,
    account: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Converted {
    payment: u64,
    account: String,
    us_cents: u64,
}

/// Converts one payment: the publish joins the payment's transaction;
/// `fail`: the rate service times out after it (the attempt's output is
/// dropped, and the payment handled again). `?` fails the attempt by the
/// error's kind (see `Failure`).
async fn convert(d: Delivery<Payment>, fail: bool) -> Result<(), Failure> {
    let p = d.message();
    let converted = Converted {
        payment: p.id,
        account: p.account.clone(),
        us_cents: p.cents * 108 / 100,
    };
    d.publish(
        Publish::to("payments.usd")
            .key(&converted.account)
            .message(&converted)?,
    )
    .await?;
    if fail {
        return Err(Failure::retry("the rate service timed out"));
    }
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let calls = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let read: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("payments")
                .group("currency")
                .concurrency(4)
                .retry(RetryPolicy::exponential(5, Duration::from_millis(10)))
                .transactional(),
            {
                let (calls, failed) = (calls.clone(), failed.clone());
                move |d: Delivery<Payment>| {
                    let call = calls.fetch_add(1, Ordering::Relaxed);
                    let fail = call % 7 == 6;
                    if fail {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    convert(d, fail)
                }
            },
        )
        .handle(Subscription::to("payments.usd").group("ledger"), {
            let read = read.clone();
            move |d: Delivery<Converted>| {
                *read.lock().unwrap().entry(d.message().payment).or_default() += 1;
                async { Outcome::Ack }
            }
        })
        .start()
        .await?;

    let payments: Vec<Publish> = (0..2_000u64)
        .map(|id| {
            Publish::to("payments")
                .key(format!("account-{}", id % 40))
                .message(&Payment {
                    id,
                    account: format!("account-{}", id % 40),
                    cents: 1_000 + id,
                })
        })
        .collect::<Result<_, _>>()?;
    let total = payments.len();
    let outcomes = app
        .producer()
        .send_batch(PublishBatch(payments))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    if let Some(Err(e)) = outcomes.into_iter().find(Result::is_err) {
        return Err(e);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while read.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment past the last commit: a duplicate would show up by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = read.lock().unwrap().clone();
    let twice = read.values().filter(|n| **n > 1).count();
    println!(
        "{total} payments, {} handler calls ({} failed after publishing); {} conversions read, \
         {twice} more than once; {:.2} s",
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        read.len(),
        started.elapsed().as_secs_f64()
    );
    app.shutdown().await?;
    if read.len() != total || twice > 0 {
        return Err(Error::Unavailable(
            "a payment was converted twice or not at all".into(),
        ));
    }
    Ok(())
}
