//! Transactional subscriptions (`Subscription::transactional`): what a
//! handler publishes commits with the handled record's offset, in one
//! transaction. A handler that publishes and then fails every tenth call
//! (its attempt retried) produces exactly one output per input, as a
//! `read_committed` consumer (librdkafka's default; the embedded broker's
//! only mode) sees it; the input group's offsets are all committed. So
//! does a group one of whose members is stopped (a deploy) or restarted
//! mid-stream, with outputs pending or not; on Kafka kafka-python reading
//! `read_committed` sees the same. On the embedded broker and on Apache
//! Kafka.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::{App, Error, PublishOutcome, RetryPolicy};
use support::python::kafka_python;
use support::*;

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
                // Joins the transaction of the record handled.
                let order = d.message().clone();
                let sent = d.publish(
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
                    let outcome = sent.await.unwrap();
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
        super::exactly_one_output_per_input(crate::or_skip!(super::TestBroker::kafka(4))).await
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
                let sent = d.publish(
                    Publish::to("later")
                        .delay(Duration::from_secs(1))
                        .message(d.message())
                        .unwrap(),
                );
                let (seen, id) = (seen.clone(), d.message().id);
                async move {
                    let answer = sent.await;
                    seen.lock().unwrap().insert(id, format!("{answer:?}"));
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &input, &orders(1, 1)).await;
    eventually("handled", Duration::from_secs(10), || {
        !answers.lock().unwrap().is_empty()
    })
    .await;
    let answer = answers.lock().unwrap()[&0].clone();
    assert!(answer.contains("cannot join a transaction"), "{answer}");
    app.shutdown().await.unwrap();
}

/// What a member of the converting group handled.
#[derive(Clone, Default)]
struct Member {
    handled: Arc<AtomicU64>,
}

/// A member of `group` converting each order of `input` into one record of
/// `output`, in a transaction, taking about a millisecond per order.
async fn converter(
    tb: &TestBroker,
    input: &str,
    output: &str,
    group: &str,
    commit_interval: Duration,
) -> (App, Member) {
    let member = Member::default();
    let (out, m) = (output.to_string(), member.clone());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(input)
                .group(group)
                .concurrency(2)
                .commit_interval(commit_interval)
                .transactional(),
            move |d: Delivery<Order>| {
                let order = d.message().clone();
                let sent = d.publish(
                    Publish::to(out.as_str())
                        .key(&order.key)
                        .message(&order)
                        .unwrap(),
                );
                let handled = m.handled.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let outcome = sent.await.unwrap();
                    assert_eq!(outcome, PublishOutcome::Transactional);
                    handled.fetch_add(1, Ordering::SeqCst);
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap();
    (app, member)
}

/// Two members convert 1,000 orders; one of them is shut down gracefully
/// mid-stream (a deploy) while the other carries on, and with `restart` a
/// new member takes its place. Every order has exactly one output as a
/// `read_committed` reader sees it (kafkactor's own reader, and on Kafka
/// kafka-python's), and the input is committed to its end. The final
/// commit of the stopped member was a plain commit of its offsets: the
/// outputs of every record it finished since its last transaction were
/// lost (all of them with a long commit interval).
async fn a_member_stopped_mid_stream_keeps_its_outputs(
    tb: TestBroker,
    commit_interval: Duration,
    restart: bool,
) {
    let (input, output) = (unique("in"), unique("out"));
    tb.topics(&[&input, &output]).await;
    let group = unique("convert");
    let (a, in_a) = converter(&tb, &input, &output, &group, commit_interval).await;
    let (b, in_b) = converter(&tb, &input, &output, &group, commit_interval).await;
    let patience = tb.patience(Duration::from_secs(10));
    until_owned("a owns partitions", patience, &a, |n| n > 0).await;
    until_owned("b owns partitions", patience, &b, |n| n > 0).await;

    let orders = orders(1_000, 50);
    publish_all(&a, &input, &orders).await;
    eventually("the stopped member is mid-stream", patience, || {
        in_a.handled.load(Ordering::SeqCst) >= 100
    })
    .await;
    a.shutdown().await.unwrap();
    let stopped_at = in_a.handled.load(Ordering::SeqCst);
    let others = if restart {
        let (c, in_c) = converter(&tb, &input, &output, &group, commit_interval).await;
        vec![(b, in_b), (c, in_c)]
    } else {
        vec![(b, in_b)]
    };
    eventually(
        "every order handled",
        tb.patience(Duration::from_secs(30)),
        || {
            stopped_at
                + others
                    .iter()
                    .map(|(_, m)| m.handled.load(Ordering::SeqCst))
                    .sum::<u64>()
                >= orders.len() as u64
        },
    )
    .await;
    // The others commit periodically, or with a long interval when they stop.
    for (app, _) in others {
        app.shutdown().await.unwrap();
    }
    assert!(
        stopped_at < orders.len() as u64,
        "the stopped member handled everything before it stopped"
    );
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;

    // What a read_committed reader sees: kafkactor's own subscription...
    let log = Log::default();
    let reader = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(output.as_str()).group(unique("reader").as_str()),
            probe(&log, "reader", ack()),
        )
        .start()
        .await
        .unwrap();
    let ids = |counts: &HashMap<u64, usize>| {
        let missing: Vec<u64> = orders
            .iter()
            .map(|o| o.id)
            .filter(|id| !counts.contains_key(id))
            .collect();
        let twice: Vec<u64> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        (missing, twice)
    };
    let deadline = std::time::Instant::now() + tb.patience(Duration::from_secs(10));
    while log.counts().len() < orders.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.shutdown().await.unwrap();
    let (missing, twice) = ids(&log.counts());
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} outputs missing ({} handled by the stopped member), {} read twice: missing {:?}, twice {:?}",
        missing.len(),
        stopped_at,
        twice.len(),
        &missing[..missing.len().min(10)],
        &twice[..twice.len().min(10)]
    );
    // ... and kafka-python's.
    if let Some(bootstrap) = tb.bootstrap() {
        let read = kafka_python("consume_committed", bootstrap, &output, orders.len()).await;
        let mut counts = HashMap::new();
        for r in &read {
            let payload = support::python::unhex(r["payload"].as_str().unwrap());
            // kafkactor's default codec, MessagePack.
            let order: Order = rmp_serde::from_slice(&payload).unwrap();
            *counts.entry(order.id).or_default() += 1;
        }
        let (missing, twice) = ids(&counts);
        assert!(
            missing.is_empty() && twice.is_empty(),
            "kafka-python: {} outputs missing, {} read twice",
            missing.len(),
            twice.len()
        );
    }
}

/// Both brokers, for each way of stopping a member.
macro_rules! member_stopped {
    ($name:ident, $interval:expr, $restart:expr) => {
        mod $name {
            use super::*;
            #[actix::test]
            async fn memory() {
                a_member_stopped_mid_stream_keeps_its_outputs(
                    TestBroker::memory(4),
                    $interval,
                    $restart,
                )
                .await
            }
            #[actix::test]
            async fn kafka() {
                a_member_stopped_mid_stream_keeps_its_outputs(
                    crate::or_skip!(TestBroker::kafka(4)),
                    $interval,
                    $restart,
                )
                .await
            }
        }
    };
}

member_stopped!(
    a_member_stopped_mid_stream,
    Duration::from_millis(100),
    false
);
member_stopped!(
    a_member_restarted_mid_stream,
    Duration::from_millis(100),
    true
);
member_stopped!(
    a_member_stopped_with_every_output_pending,
    Duration::from_secs(3600),
    false
);

/// One handler output to a partition its topic does not have. The first
/// (made before anything of the topic is known) is refused by the broker
/// at commit: its record is dead-lettered with the reason
/// (`output-refused`) and every other output commits. Once the topic's
/// partition count is known, the same publish is refused when it is made,
/// with a typed error. Before: every transaction failed from then on, with
/// the same outputs each interval; nothing became visible and the lag
/// never fell.
async fn one_bad_output_does_not_stop_every_commit(tb: TestBroker) {
    let (input, output) = (unique("in"), unique("out"));
    tb.topics(&[&input, &output]).await;
    let group = unique("convert");
    let out = output.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(input.as_str())
                .group(group.as_str())
                .transactional(),
            move |d: Delivery<Order>| {
                let order = d.message().clone();
                let mut publish = Publish::to(out.as_str())
                    .key(&order.key)
                    .message(&order)
                    .unwrap();
                if order.id % 1_000 == 0 {
                    publish = publish.partition(7);
                }
                let sent = d.publish(publish);
                async move {
                    match sent.await {
                        Ok(_) => Outcome::Ack,
                        Err(e) => Outcome::reject(e.to_string()),
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();

    // Order 0 first: its publish joins the transaction unchecked.
    let first = orders(200, 10);
    publish_all(&app, &input, &first).await;
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;
    let dead = tb.records(&format!("{input}.dlq")).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(
        dead[0].headers.get_str(kafkactor::header::ERROR_KIND),
        Some("output-refused")
    );
    let reason = dead[0]
        .headers
        .get_str(kafkactor::header::ERROR_REASON)
        .unwrap();
    assert!(reason.contains("refused"), "{reason}");
    let written = tb.records(&output).await;
    assert_eq!(written.len(), 199, "every other output in {output}");

    // Now the topic is known: refused when published.
    let later = Order {
        id: 1_000,
        key: "k-0".into(),
        seq: 20,
    };
    publish_all(&app, &input, &[later]).await;
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;
    let dead = tb.records(&format!("{input}.dlq")).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[1].headers.get_str(kafkactor::header::ERROR_KIND),
        Some("rejected")
    );
    let reason = dead[1]
        .headers
        .get_str(kafkactor::header::ERROR_REASON)
        .unwrap();
    assert!(reason.contains("partition 7 does not exist"), "{reason}");
    assert_eq!(tb.records(&output).await.len(), 199);
    app.shutdown().await.unwrap();
}

mod one_bad_output_does_not_stop_every_commit {
    #[actix::test]
    async fn memory() {
        super::one_bad_output_does_not_stop_every_commit(super::TestBroker::memory(2)).await
    }
    #[actix::test]
    async fn kafka() {
        super::one_bad_output_does_not_stop_every_commit(crate::or_skip!(super::TestBroker::kafka(
            2
        )))
        .await
    }
}
