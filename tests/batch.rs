//! Batch handlers: a subscription hands its handler up to N records of a
//! lane at a time, in order, and each record's fate is its own, as for a
//! single record's handler.
//!
//! A batch of 10 failed at index 3: records 0-2 acknowledged once, 3
//! retried, 4-9 handled after it in key order (retried in place on every
//! broker; through the ordered retry topic on the embedded broker and
//! Kafka). 2,000 records over 20 keys answered per record, some retried
//! and some rejected: each acknowledged once, in key order, the rejected
//! dead-lettered with their reason, everything committed. A wrong number
//! of outcomes retries the batch (nothing acknowledged by accident); an
//! undecodable record is dead-lettered before any batch holds it. A
//! transactional batch failing part way publishes each output once. An
//! idempotent batch subscription handles a copy once. With lanes by
//! partition, a batch holds one partition's records.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use kafkactor::prelude::*;
use kafkactor::{header, Idempotency, MemoryStore, RetryTopic};
use support::*;

/// The batches a handler was called with (ids), and what it acknowledged.
#[derive(Clone, Default)]
struct Batches {
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
    acked: Log,
}

impl Batches {
    /// Notes a call with `b`; logs its first `n` records as acknowledged.
    fn called(&self, b: &Batch<Order>, n: usize) {
        self.calls
            .lock()
            .unwrap()
            .push(b.messages().map(|o| o.id).collect());
        for d in b.iter().take(n) {
            self.acked.push(Seen::of(d, "batch"));
        }
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }
}

/// Fails its first batch at index 3; acknowledges every other whole.
struct FailsAtThree(Batches);
impl Actor for FailsAtThree {
    type Context = Context<Self>;
}
impl Handler<Batch<Order>> for FailsAtThree {
    type Result = BatchOutcome;
    fn handle(&mut self, b: Batch<Order>, _: &mut Context<Self>) -> BatchOutcome {
        if self.0.calls().is_empty() {
            self.0.called(&b, 3);
            return BatchOutcome::FailedAt(3, Outcome::retry("record 3 failed"));
        }
        self.0.called(&b, b.len());
        BatchOutcome::Ack
    }
}

async fn failed_at_three(tb: TestBroker, retry: RetryPolicy) {
    let topic = unique("orders");
    tb.topics(&[&topic]).await;
    let group = unique("batch");
    let batches = Batches::default();
    let seen = batches.clone();
    // Ten records of one key, there before the member starts: one batch.
    let publisher = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    publish_all(&publisher, &topic, &orders(10, 1)).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe_batch(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .batch(10, Duration::from_secs(1))
                .retry(retry),
            move || FailsAtThree(seen.clone()),
        )
        .start()
        .await
        .unwrap();
    eventually(
        "every record acknowledged",
        tb.patience(Duration::from_secs(20)),
        || batches.acked.len() >= 10,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();

    let calls = batches.calls();
    assert_eq!(
        calls[0],
        (0..10).collect::<Vec<_>>(),
        "the first batch: {calls:?}"
    );
    let acked = batches.acked.seen();
    let ids: Vec<u64> = acked.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        (0..10).collect::<Vec<_>>(),
        "acknowledged once each, in order"
    );
    for s in &acked {
        let attempt = if s.id == 3 { 2 } else { 1 };
        assert_eq!(s.attempt, attempt, "record {}'s attempt", s.id);
    }
    assert!(
        calls[1..].iter().all(|c| !c.iter().any(|id| *id < 3)),
        "0-2 handed out once: {calls:?}"
    );
    assert_eq!(calls[1][0], 3, "3 retried before 4-9: {calls:?}");
}

async fn failed_at_three_in_place(tb: TestBroker) {
    let retry = RetryPolicy::exponential(3, Duration::from_millis(20));
    failed_at_three(tb, retry).await;
}

on_every_broker!(
    a_batch_failed_at_index_3_retries_3_in_place,
    super::failed_at_three_in_place,
    2
);

async fn failed_at_three_retry_topic(tb: TestBroker) {
    let retry =
        RetryPolicy::exponential(3, Duration::from_millis(20)).via_retry_topic(RetryTopic::Ordered);
    failed_at_three(tb, retry).await;
}

on_memory_and_kafka!(
    a_batch_failed_at_index_3_retries_3_through_the_retry_topic,
    super::failed_at_three_retry_topic,
    2
);

/// The outcome of each record of a batch: ids 5 mod 97 retried once,
/// 13 mod 500 rejected, the others acknowledged.
fn per_record(b: &Batch<Order>) -> Vec<Outcome> {
    b.iter()
        .map(|d| {
            let id = d.message().id;
            if id % 500 == 13 {
                Outcome::reject(format!("order {id} is refused"))
            } else if id % 97 == 5 && d.attempt() == 1 {
                Outcome::retry("not yet")
            } else {
                Outcome::Ack
            }
        })
        .collect()
}

async fn many_batches(tb: TestBroker) {
    let topic = unique("orders");
    tb.topics(&[&topic]).await;
    let group = unique("batch");
    let batches = Batches::default();
    let seen = batches.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .batch(50, Duration::from_millis(5))
                .retry(RetryPolicy::exponential(3, Duration::from_millis(5))),
            move |b: Batch<Order>| {
                let outcomes = per_record(&b);
                let acked = outcomes.iter().take_while(|o| **o == Outcome::Ack).count();
                seen.called(&b, acked);
                async move { BatchOutcome::PerRecord(outcomes) }
            },
        )
        .start()
        .await
        .unwrap();
    let all = orders(2_000, 20);
    publish_all(&app, &topic, &all).await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();

    let rejected: Vec<u64> = (0..2_000).filter(|id| id % 500 == 13).collect();
    let counts = batches.acked.counts();
    assert_eq!(counts.len(), 2_000 - rejected.len());
    assert!(counts.values().all(|c| *c == 1), "each acknowledged once");
    assert!(rejected.iter().all(|id| !counts.contains_key(id)));
    assert_key_order(&batches.acked.seen());
    let calls = batches.calls();
    assert!(
        calls.iter().any(|c| c.len() > 1),
        "records came in batches: {:?}",
        calls.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(calls.iter().all(|c| c.len() <= 50));
    let dead = tb.records(&format!("{topic}.dlq")).await;
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|r| r.headers.get_str(header::ERROR_REASON).unwrap())
        .collect();
    reasons.sort();
    let mut expected: Vec<String> = rejected
        .iter()
        .map(|id| format!("order {id} is refused"))
        .collect();
    expected.sort();
    assert_eq!(reasons, expected);
}

on_every_broker!(
    batches_answered_per_record_keep_key_order_and_lose_nothing,
    super::many_batches,
    3
);

#[actix::test]
async fn a_wrong_answer_retries_and_bad_records_never_reach_a_batch() {
    let tb = TestBroker::memory(1);
    let topic = unique("orders");
    let group = unique("batch");
    let batches = Batches::default();
    let (seen, calls) = (batches.clone(), Arc::new(AtomicUsize::new(0)));
    let publisher = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    // 0-4, an undecodable record claiming to be an order, then 5-9.
    let all = orders(10, 1);
    publish_all(&publisher, &topic, &all[..5]).await;
    let garbage = Publish::to(&topic)
        .key("k-0")
        .message(&"not an order")
        .unwrap()
        .type_name("Order");
    publisher.producer().send(garbage).await.unwrap().unwrap();
    publish_all(&publisher, &topic, &all[5..]).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .batch(20, Duration::ZERO)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(5))),
            move |b: Batch<Order>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let n = b.len();
                // The first answer is a bug: one outcome short.
                let answer = if first {
                    seen.called(&b, 0);
                    BatchOutcome::PerRecord(vec![Outcome::Ack; n - 1])
                } else {
                    seen.called(&b, n);
                    BatchOutcome::Ack
                };
                async move { answer }
            },
        )
        .start()
        .await
        .unwrap();
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    publisher.shutdown().await.unwrap();

    let calls = batches.calls();
    assert_eq!(
        calls[0],
        vec![0, 1, 2, 3, 4],
        "the batch ends before the bad record"
    );
    let acked = batches.acked.seen();
    assert_eq!(
        acked.iter().map(|s| s.id).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(acked[0].attempt, 2, "the wrong answer retried the batch");
    let dead = tb.records(&format!("{topic}.dlq")).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers.get_str(header::ERROR_KIND), Some("decode"));
    assert!(calls.iter().all(|c| c.len() <= 20));
}

async fn transactional_batches(tb: TestBroker) {
    let (input, output) = (unique("in"), unique("out"));
    tb.topics(&[&input, &output]).await;
    let group = unique("convert");
    let failed_once = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let out = output.clone();
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(input.as_str())
                .group(group.as_str())
                .concurrency(2)
                .batch(20, Duration::from_millis(5))
                .retry(RetryPolicy::exponential(5, Duration::from_millis(5)))
                .transactional(),
            move |b: Batch<Order>| {
                // Every record's output joins the transaction; the first
                // batch holding an id of 7 mod 10 fails there after
                // publishing everything.
                let sent: Vec<_> = b
                    .iter()
                    .map(|d| {
                        let o = d.message();
                        d.publish(Publish::to(&out).key(&o.key).message(o).unwrap())
                    })
                    .collect();
                let fail_at = b.iter().position(|d| {
                    d.message().id % 10 == 7 && failed_once.lock().unwrap().insert(d.message().id)
                });
                async move {
                    for s in sent {
                        if let Err(e) = s.await {
                            return BatchOutcome::All(Outcome::retry(e));
                        }
                    }
                    match fail_at {
                        Some(i) => {
                            BatchOutcome::FailedAt(i, Outcome::retry("failed after publishing"))
                        }
                        None => BatchOutcome::Ack,
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
    let all = orders(400, 10);
    publish_all(&app, &input, &all).await;
    eventually(
        "one output per input read",
        tb.patience(Duration::from_secs(20)),
        || log.counts().len() == all.len(),
    )
    .await;
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let written = tb.records(&output).await;
    assert_eq!(written.len(), all.len(), "each output written once");
    let counts = log.counts();
    assert!(counts.values().all(|c| *c == 1), "each output read once");
    assert_key_order(&log.seen());
}

on_memory_and_kafka!(
    a_transactional_batch_failing_part_way_publishes_each_output_once,
    super::transactional_batches,
    2
);

#[actix::test]
async fn an_idempotent_batch_subscription_handles_a_copy_once() {
    let tb = TestBroker::memory(2);
    let topic = unique("orders");
    let group = unique("batch");
    let batches = Batches::default();
    let seen = batches.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(2)
                .idempotent(
                    Idempotency::new(MemoryStore::new(10_000)).key_header(header::IDEMPOTENCY_KEY),
                ),
            move |b: Batch<Order>| {
                seen.called(&b, b.len());
                async { BatchOutcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let all = orders(200, 10);
    // Each order twice, under one idempotency key.
    for o in all.iter().chain(&all) {
        let publish = Publish::to(&topic)
            .key(&o.key)
            .idempotency_key(&format!("order-{}", o.id))
            .message(o)
            .unwrap();
        producer.send(publish).await.unwrap().unwrap();
    }
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let counts = batches.acked.counts();
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|c| *c == 1), "each order handled once");
}

#[actix::test]
async fn batches_by_partition_hold_one_partition_each() {
    let tb = TestBroker::memory(3);
    let topic = unique("orders");
    let group = unique("batch");
    let calls: Arc<Mutex<Vec<Vec<i32>>>> = Arc::default();
    let log = Log::default();
    let (seen, acked) = (calls.clone(), log.clone());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(3)
                .lanes_by_partition()
                .batch(50, Duration::from_millis(5)),
            move |b: Batch<Order>| {
                seen.lock()
                    .unwrap()
                    .push(b.iter().map(Delivery::partition).collect());
                for d in &b {
                    acked.push(Seen::of(d, "by-partition"));
                }
                async { BatchOutcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(1_000, 30)).await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let calls = calls.lock().unwrap();
    assert!(
        calls.iter().any(|c| c.len() > 1),
        "batches of more than one"
    );
    for partitions in calls.iter() {
        assert!(
            partitions.iter().all(|p| *p == partitions[0]),
            "a batch of one lane holds one partition: {partitions:?}"
        );
    }
    assert_eq!(log.counts().len(), 1_000);
    assert_key_order(&log.seen());
}

#[actix::test]
async fn what_a_batch_publishes_carries_each_records_own_context() {
    let tb = TestBroker::memory(1);
    let (input, output) = (unique("in"), unique("out"));
    let group = unique("batch");
    let out = output.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle_batch(
            Subscription::to(input.as_str())
                .group(group.as_str())
                .batch(20, Duration::from_millis(20)),
            move |b: Batch<Order>| {
                let sent: Vec<_> = b
                    .iter()
                    .map(|d| d.publish(Publish::to(&out).message(d.message()).unwrap()))
                    .collect();
                async move {
                    for s in sent {
                        s.await?;
                    }
                    Ok::<_, kafkactor::Failure>(())
                }
            },
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    for o in orders(60, 3) {
        let publish = Publish::to(&input)
            .key(&o.key)
            .correlation_id(&format!("c-{}", o.id))
            .message(&o)
            .unwrap();
        producer.send(publish).await.unwrap().unwrap();
    }
    tb.until_committed(&group, &input, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let written = tb.records(&output).await;
    assert_eq!(written.len(), 60);
    for r in &written {
        let order = decoded(r);
        assert_eq!(
            r.headers.get_str(header::CORRELATION_ID),
            Some(format!("c-{}", order.id).as_str()),
            "the output of order {} carries its record's correlation id",
            order.id
        );
    }
}

/// The order a record read back holds, decoded as a subscription would.
fn decoded(record: &kafkactor::Record) -> Order {
    use kafkactor::Decode;
    Order::decode_record(record, ContentType::MsgPack).expect("an order")
}
