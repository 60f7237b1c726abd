//! An observed service: a workload with retries, dead letters, a slow
//! spell, a crash and delayed records, served on `/metrics` and
//! `/health/*` while it runs, with its metrics recorded every half second.
//!
//! Run: `cargo run --release --example observed` (about 30 s), then open
//! the printed address, or point Prometheus at it with
//! `dashboards/kafkactor.json` in Grafana. `KAFKACTOR_HTTP` sets the
//! address (default: a free loopback port); `KAFKACTOR_SAMPLES` names a
//! file to write the samples to (Prometheus' text format, each scrape
//! after a `# scrape <unix ms>` line), from which
//! `scripts/dashboard.py` renders the dashboard as a PNG.
//!
//! Delivery semantics: at-least-once, as every subscription: a record is
//! committed once handled or dead-lettered.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Payment {
    id: u64,
    account: u64,
}

const RUN: Duration = Duration::from_secs(30);

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http = std::env::var("KAFKACTOR_HTTP").unwrap_or_else(|_| "127.0.0.1:0".into());
    let slow = Arc::new(AtomicU64::new(0));
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .serve_http(http)
        .delays(kafkactor::Delays::default())
        .handle(
            Subscription::to("payments")
                .group("ledger")
                .concurrency(4)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(5))),
            {
                let slow = slow.clone();
                move |d: Delivery<Payment>| {
                    let pause = slow.load(Ordering::Relaxed);
                    let p = d.message();
                    // Every 97th payment fails validation; every 101st
                    // needs a second attempt.
                    let outcome = if p.id % 97 == 0 {
                        Outcome::reject("unknown account")
                    } else if p.id % 101 == 0 && d.attempt() == 1 {
                        Outcome::retry("ledger busy")
                    } else {
                        Outcome::Ack
                    };
                    async move {
                        if pause > 0 {
                            tokio::time::sleep(Duration::from_micros(pause)).await;
                        }
                        outcome
                    }
                }
            },
        )
        .handle(
            Subscription::to("statements").group("mailer"),
            |_: Delivery<Payment>| async { Outcome::Ack },
        )
        .start()
        .await?;
    let addr = app.http_addr().expect("serving HTTP");
    println!("metrics on http://{addr}/metrics, health on http://{addr}/health/ready");
    let mut samples = match std::env::var("KAFKACTOR_SAMPLES") {
        Ok(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        Err(_) => None,
    };
    let producer = app.producer();
    let started = Instant::now();
    let mut id = 0;
    let mut next_scrape = Instant::now();
    let mut crashed = false;
    while started.elapsed() < RUN {
        let t = started.elapsed().as_secs_f64();
        // A slow spell from 10 s to 16 s (the lag grows, then drains);
        // a lane crashes at 20 s.
        slow.store(
            if (10.0..16.0).contains(&t) { 2_500 } else { 0 },
            Ordering::Relaxed,
        );
        if t >= 20.0 && !crashed {
            crashed = true;
            let path = "subscription:ledger:payments/handlers/handler-0";
            app.fail_actor(path, "demo crash").await?;
        }
        // About 2,000 payments a second.
        let burst = 20;
        for _ in 0..burst {
            id += 1;
            let p = Payment {
                id,
                account: id % 100,
            };
            let publish = Publish::to("payments")
                .key(p.account.to_string())
                .message(&p)?;
            producer.do_send(publish);
            if id % 10 == 0 {
                let later = Publish::to("statements")
                    .message(&p)?
                    .delay(Duration::from_secs(2));
                producer.do_send(later);
            }
        }
        if Instant::now() >= next_scrape {
            next_scrape += Duration::from_millis(500);
            if let Some(out) = samples.as_mut() {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
                writeln!(out, "# scrape {}", now.as_millis())?;
                out.write_all(app.metrics_text().await.as_bytes())?;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(mut out) = samples {
        out.flush()?;
    }
    println!("published {id} payments in {:.1?}", started.elapsed());
    println!("ready: {}", app.health().await.ready);
    app.shutdown().await?;
    Ok(())
}
