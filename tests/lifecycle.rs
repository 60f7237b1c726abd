//! An application's life off the happy path: the producer handle a user
//! keeps reaches the Producer after the actor was restarted, and an
//! application dropped without being shut down (a panic in `main`) does not
//! panic again.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::SupervisionEvent;
use support::*;

#[actix::test]
async fn the_producer_handle_reaches_a_restarted_producer() {
    let tb = TestBroker::memory(3);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let mut events = app.events().subscribe();
    let producer = app.producer();
    let publish = || Publish::to("orders").key("k").message(&1u32).unwrap();
    producer.send(publish()).await.unwrap().unwrap();

    app.fail_actor("producer", "injected by the test")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SupervisionEvent::Restarted { child, .. } = events.recv().await.unwrap() {
                if &*child == "producer" {
                    return;
                }
            }
        }
    })
    .await
    .expect("the producer was restarted");

    // The handle taken before the restart publishes through the new one.
    for _ in 0..10 {
        let outcome = producer.send(publish()).await;
        assert!(
            matches!(outcome, Ok(Ok(PublishOutcome::Direct { .. }))),
            "{outcome:?}"
        );
    }
    app.shutdown().await.unwrap();
    assert_eq!(tb.records("orders").await.len(), 11);
}

/// As when `main` panics: the application is dropped while the panic
/// unwinds and the runtime shuts down with the whole tree still running.
/// Nothing may panic a second time (that aborts the process).
#[actix::test]
#[should_panic(expected = "main failed")]
async fn a_panic_with_a_running_app_is_the_only_panic() {
    let tb = TestBroker::memory(3);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to("orders").group("g").concurrency(2),
            // Busy with every record when the panic comes.
            |_: Delivery<Order>| async {
                std::future::pending::<()>().await;
                Outcome::Ack
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, "orders", &orders(20, 4)).await;
    let busy = tb.broker.clone();
    eventually_async("records taken", Duration::from_secs(10), || {
        let busy = busy.clone();
        async move {
            busy.as_memory()
                .unwrap()
                .position("g", "orders", 0)
                .is_some()
        }
    })
    .await;
    panic!("main failed");
}

/// The application outlives the runtime it ran on and is dropped last.
#[test]
fn an_app_dropped_after_its_runtime_does_not_panic() {
    let system = actix::System::new();
    let app = system.block_on(async {
        let tb = TestBroker::memory(3);
        let log = Log::default();
        let app = Kafkactor::builder()
            .broker(tb.broker.clone())
            .subscribe(
                Subscription::to("orders").group("g"),
                probe(&log, "a", ack()),
            )
            .start()
            .await
            .unwrap();
        publish_all(&app, "orders", &orders(20, 4)).await;
        eventually("handled", Duration::from_secs(10), || log.len() == 20).await;
        app
    });
    drop(system);
    drop(app);
}
