//! Supervision: a handler that crashes now and then is re-created from its
//! factory while the stream keeps flowing, and every lifecycle event of the
//! supervision tree is printed as it happens.
//!
//! 2,000 payments are handled on 4 lanes. The handler panics on the first
//! attempt of every 250th payment; the lane's supervisor restarts it (with
//! backoff), the payment is retried as attempt 2 and succeeds. The other
//! lanes never stop. At the end the tree shuts down in reverse start order.
//!
//! Delivery semantics: at-least-once. A payment is committed only after its
//! handler acknowledged it; the one a crashed handler had is retried, never
//! skipped, and no consumer-group rebalance happens.
//!
//! Run: `cargo run --example supervision`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use kafkactor::SupervisionEvent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Payment {
    id: u64,
    account: String,
}

struct Payments {
    handled: Arc<AtomicU64>,
}

impl Actor for Payments {
    type Context = Context<Self>;
}

impl Handler<Delivery<Payment>> for Payments {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Payment>, _: &mut Context<Self>) -> Outcome {
        let p = d.message();
        if p.id % 250 == 0 && d.attempt() == 1 {
            panic!("ledger connection lost while booking payment {}", p.id);
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Outcome::Ack
    }
}

fn describe(event: &SupervisionEvent) -> Option<String> {
    Some(match event {
        SupervisionEvent::Started { supervisor, child } => {
            format!("started     {supervisor} / {child}")
        }
        SupervisionEvent::Failed {
            supervisor,
            child,
            exit,
        } => {
            format!("failed      {supervisor} / {child}: {exit}")
        }
        SupervisionEvent::Restarting {
            supervisor,
            child,
            delay,
        } => {
            format!("restarting  {supervisor} / {child} in {delay:?}")
        }
        SupervisionEvent::Restarted {
            supervisor,
            child,
            restarts,
        } => {
            format!("restarted   {supervisor} / {child} (restart #{restarts})")
        }
        SupervisionEvent::Stopped {
            supervisor,
            child,
            exit,
        } => {
            format!("stopped     {supervisor} / {child}: {exit}")
        }
        SupervisionEvent::Escalated { supervisor, reason } => {
            format!("escalated   {supervisor}: {reason}")
        }
        _ => return None,
    })
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the demo's output to the events (the panics are expected).
    std::panic::set_hook(Box::new(|_| {}));
    const PAYMENTS: u64 = 2_000;
    let handled = Arc::new(AtomicU64::new(0));
    let broker = Broker::memory();
    let events = kafkactor::Events::new();
    let mut rx = events.subscribe();
    let printer = actix::spawn(async move {
        let started = Instant::now();
        while let Ok(event) = rx.recv().await {
            if let Some(line) = describe(&event) {
                println!("[{:>7.1?}] {line}", started.elapsed());
            }
        }
    });

    let app = Kafkactor::builder()
        .broker(broker.clone())
        .events(events)
        .subscribe(
            Subscription::to("payments")
                .group("ledger")
                .concurrency(4)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(10))),
            {
                let handled = handled.clone();
                move || Payments {
                    handled: handled.clone(),
                }
            },
        )
        .start()
        .await?;

    let producer = app.producer();
    for id in 1..=PAYMENTS {
        let payment = Payment {
            id,
            account: format!("acct-{}", id % 40),
        };
        producer
            .send(
                Publish::to("payments")
                    .key(&payment.account)
                    .message(&payment)?,
            )
            .await??;
    }
    let memory = broker.as_memory().expect("embedded broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while memory.lag("ledger", "payments") > 0 {
        if Instant::now() > deadline {
            return Err("payments not handled within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generation = memory.generation("ledger");
    app.shutdown().await?;
    printer.abort();

    println!();
    println!("payments published  {PAYMENTS}");
    println!("payments handled    {}", handled.load(Ordering::Relaxed));
    println!(
        "dead-lettered       {}",
        memory.records("payments.dlq").len()
    );
    println!(
        "group rebalances    {} (the initial assignment only)",
        generation
    );
    if handled.load(Ordering::Relaxed) != PAYMENTS {
        return Err("a payment was lost".into());
    }
    Ok(())
}
