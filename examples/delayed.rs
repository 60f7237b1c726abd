//! Delayed delivery: reminders and cart expiries on the embedded broker.
//!
//! It schedules eight reminders with delays from 0.2 s to 3 s (published out
//! of due order) and one cart expiry at a wall-clock time 2.5 s from now,
//! then prints each as it arrives, with how long after its due time it came,
//! and exits 0 once all arrived. With the default buckets (1s, 5s, 30s, ..
//! 24h) a 3 s delay waits in the `1s` bucket once and the remaining 2 s in
//! the Republisher's timer (`Delays::hold_in_memory`, default 5 s).
//!
//! Delivery semantics: at-least-once, never early. A delayed record is
//! durable in its delay bucket once `send` answers `Delayed`; the bucket
//! record is committed only after the Republisher's write to the
//! destination is acknowledged, so a crash or restart meanwhile delivers it
//! later (possibly twice), never loses it and never delivers it before it
//! is due.
//!
//! Run: `cargo run --example delayed`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kafkactor::prelude::*;
use kafkactor::Delays;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Reminder {
    text: String,
    /// When it is due, ms since the Unix epoch (for the printout).
    due_ms: u128,
}

fn ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let start_ms = ms(SystemTime::now());
    let arrived = Arc::new(Mutex::new(0usize));
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .delays(Delays::default())
        .handle(Subscription::to("reminders").group("notifier"), {
            let arrived = arrived.clone();
            move |d: Delivery<Reminder>| {
                let arrived = arrived.clone();
                async move {
                    let now = ms(SystemTime::now());
                    let r = d.message();
                    println!(
                        "{:>6.3}s  {:<28} due at {:>6.3}s: {} ms after its due time",
                        (now - start_ms) as f64 / 1000.0,
                        r.text,
                        (r.due_ms - start_ms) as f64 / 1000.0,
                        now.saturating_sub(r.due_ms),
                    );
                    *arrived.lock().unwrap() += 1;
                    Outcome::Ack
                }
            }
        })
        .start()
        .await?;

    let producer = app.producer();
    let delays_ms = [3_000, 200, 1_500, 800, 2_200, 400, 1_100, 2_700];
    for (i, delay) in delays_ms.iter().enumerate() {
        let delay = Duration::from_millis(*delay);
        let reminder = Reminder {
            text: format!("reminder {i} (+{} ms)", delay.as_millis()),
            due_ms: ms(SystemTime::now() + delay),
        };
        let publish = Publish::to("reminders")
            .key(format!("user-{}", i % 3))
            .message(&reminder)?
            .delay(delay);
        match producer
            .send(publish)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??
        {
            PublishOutcome::Delayed { bucket, .. } if bucket.is_zero() => {
                println!(
                    "scheduled {:<28} in the 0s bucket (shorter than any)",
                    reminder.text
                )
            }
            PublishOutcome::Delayed { bucket, .. } => {
                println!("scheduled {:<28} in the {:?} bucket", reminder.text, bucket)
            }
            other => println!("published {} directly: {other:?}", reminder.text),
        }
    }
    let expires_at = SystemTime::now() + Duration::from_millis(2_500);
    let expiry = Reminder {
        text: "cart 42 expires".into(),
        due_ms: ms(expires_at),
    };
    producer
        .send(
            Publish::to("reminders")
                .key("cart-42")
                .message(&expiry)?
                .at(expires_at),
        )
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))??;
    println!("scheduled {:<28} at a wall-clock time", expiry.text);

    let expected = delays_ms.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(15);
    while *arrived.lock().unwrap() < expected {
        if Instant::now() > deadline {
            app.shutdown().await?;
            return Err(Error::Unavailable(
                "not every reminder arrived in 15 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "all {expected} arrived, none early, in {:.2?}",
        started.elapsed()
    );
    app.shutdown().await
}
