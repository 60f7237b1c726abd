//! Flow control: a subscription never has more than `max_in_flight` records
//! read and unfinished; past it the partitions are paused, not buffered.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;
use tokio::sync::Semaphore;

#[actix::test]
async fn in_flight_records_stay_bounded_while_handlers_are_slow() {
    const MAX_IN_FLIGHT: i64 = 40;
    const N: usize = 1_000;
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("g");
    let log = Log::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(2)
                .max_in_flight(MAX_IN_FLIGHT as usize),
            {
                let (log, gate) = (log.clone(), gate.clone());
                move |d: Delivery<Order>| {
                    let (log, gate) = (log.clone(), gate.clone());
                    async move {
                        gate.acquire().await.unwrap().forget();
                        log.push(Seen::of(&d, "a"));
                        Outcome::Ack
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N as u64, 20)).await;
    let memory = broker.as_memory().unwrap();
    let fetched = || {
        (0..3)
            .map(|p| memory.position(&group, &topic, p).unwrap_or(0))
            .sum::<i64>()
    };

    eventually(
        "the consumer filled its window",
        Duration::from_secs(10),
        || fetched() >= MAX_IN_FLIGHT,
    )
    .await;
    for released in (100..=N).step_by(100) {
        // While handlers are blocked nothing finishes, so whatever was fetched
        // beyond the handled records is in flight, and must stay within the bound.
        let handled = log.len() as i64;
        let in_flight = fetched() - handled;
        assert!(
            in_flight <= MAX_IN_FLIGHT,
            "{in_flight} records in flight with a bound of {MAX_IN_FLIGHT}"
        );
        gate.add_permits(100);
        eventually("released records handled", Duration::from_secs(10), || {
            log.len() >= released
        })
        .await;
    }
    eventually("all committed", Duration::from_secs(10), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    app.shutdown().await.unwrap();
    assert_eq!(log.counts().len(), N);
}
