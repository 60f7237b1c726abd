//! Transactional subscriptions (`Subscription::transactional`): what a
//! handler publishes commits with the handled record's offset, in one
//! transaction. A handler that publishes and then fails every tenth call
//! (its attempt retried) produces exactly one output per input, as a
//! `read_committed` consumer (librdkafka's default; the embedded broker's
//! only mode) sees it; the input group's offsets are all committed. On the
//! embedded broker and on Apache Kafka.

mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::{Error, ProducerHandle, PublishOutcome, RetryPolicy};
use support::*;

thread_local! {
    /// The application's producer, for its handlers.
    static PRODUCER: RefCell<Option<ProducerHandle>> = const { RefCell::new(None) };
}

async fn exactly_one_output_per_input(tb: TestBroker) {
    let (input, output) = (unique("in"), unique("out"));
    tb.topics(&[&input, &output]).await;
    let group = unique("transform");
    let calls = Arc::new(AtomicU64::new(0));
    let aborted = Arc::new(AtomicU64::new(0));
    let log = Log::default();
    let (out, handler_calls, handler_aborted) = (output.clone(), calls.clone(), aborted.clone());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(input.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(RetryPolicy::exponential(10, Duration::from_millis(5)))
                .transactional(),
            move |d: Delivery<Order>| {
                let call = handler_calls.fetch_add(1, Ordering::SeqCst);
                let producer = PRODUCER.with(|p| p.borrow().clone()).unwrap();
                let order = d.message().clone();
                let sent = producer.send(
                    Publish::to(out.as_str())
                        .key(&order.key)
                        .message(&order)
                        .unwrap(),
                );
                let abort = call % 10 == 9;
                if abort {
                    handler_aborted.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    let outcome = sent.await.unwrap().unwrap();
                    assert_eq!(outcome, PublishOutcome::Transactional);
                    if abort {
                        Outcome::retry("aborted after publishing")
                    } else {
                        Outcome::Ack
                    }
                }
            },
        )
        .subscribe(
            Subscription::to(output.as_str()).group(unique("reader").as_str()),
            probe(&log, "reader", ack()),
        )
        .start()
        .await
        .unwrap();
    PRODUCER.with(|p| *p.borrow_mut() = Some(app.producer()));

    let orders = orders(500, 20);
    publish_all(&app, &input, &orders).await;
    eventually(
        "one output per input read",
        tb.patience(Duration::from_secs(20)),
        || log.counts().len() == orders.len(),
    )
    .await;
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;
    // Past the last commit: anything more would have come by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = log.counts();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "outputs read more than once: {twice:?}");
    assert_eq!(counts.len(), orders.len());
    assert_key_order(&log.seen());
    assert!(
        aborted.load(Ordering::SeqCst) >= 50,
        "every tenth call aborted: {} of {}",
        aborted.load(Ordering::SeqCst),
        calls.load(Ordering::SeqCst)
    );
    // Every output is in the topic once.
    let written = tb.records(&output).await;
    assert_eq!(written.len(), orders.len(), "records in {output}");
    app.shutdown().await.unwrap();
}

/// On the embedded broker and Apache Kafka. Not on librdkafka's mock
/// cluster: its transactions make the outputs visible but it never shows
/// offsets committed through `send_offsets_to_transaction` to the group
/// (tried: the outputs were all read, the group's offsets stayed behind).
mod exactly_one_output_per_input {
    #[actix::test]
    async fn memory() {
        super::exactly_one_output_per_input(super::TestBroker::memory(4)).await
    }
    #[actix::test]
    async fn kafka() {
        super::exactly_one_output_per_input(super::TestBroker::kafka(4)).await
    }
}

#[actix::test]
async fn transactional_and_idempotent_together_are_refused() {
    let idempotency =
        kafkactor::idempotency::Idempotency::new(kafkactor::idempotency::MemoryStore::new(10));
    let err = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("t")
                .group("g")
                .transactional()
                .idempotent(idempotency),
            |_: Delivery<String>| async { Outcome::Ack },
        )
        .start()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[actix::test]
async fn a_delayed_publish_cannot_join_a_transaction() {
    let tb = TestBroker::memory(2);
    let input = unique("in");
    let answers: Arc<std::sync::Mutex<HashMap<u64, String>>> = Arc::default();
    let seen = answers.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(input.as_str())
                .group(unique("g").as_str())
                .transactional(),
            move |d: Delivery<Order>| {
                let producer = PRODUCER.with(|p| p.borrow().clone()).unwrap();
                let sent = producer.send(
                    Publish::to("later")
                        .delay(Duration::from_secs(1))
                        .message(d.message())
                        .unwrap(),
                );
                let (seen, id) = (seen.clone(), d.message().id);
                async move {
                    let answer = sent.await.unwrap();
                    seen.lock().unwrap().insert(id, format!("{answer:?}"));
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap();
    PRODUCER.with(|p| *p.borrow_mut() = Some(app.producer()));
    publish_all(&app, &input, &orders(1, 1)).await;
    eventually("handled", Duration::from_secs(10), || {
        !answers.lock().unwrap().is_empty()
    })
    .await;
    let answer = answers.lock().unwrap()[&0].clone();
    assert!(answer.contains("cannot join a transaction"), "{answer}");
    app.shutdown().await.unwrap();
}
