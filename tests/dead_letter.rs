//! Rejected records, exhausted retries and handler panics land in the
//! dead-letter topic with headers saying why; nothing else is lost and the
//! partitions keep flowing. On the embedded broker, Apache Kafka and the mock cluster.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor::actors::Backoff;
use kafkactor::header;
use kafkactor::prelude::*;
use kafkactor::testing::{DeadLetter, TestApp};
use kafkactor::FailureKind;
use support::*;

const N: u64 = 1_000;

/// Checks what `d` says of its failure.
fn assert_failure(
    d: &DeadLetter,
    kind: FailureKind,
    reason_part: &str,
    attempts: u32,
    topic: &str,
    group: &str,
) {
    let why = &d.why;
    assert_eq!(why.kind, Some(kind), "{why:?}");
    assert!(
        why.reason.contains(reason_part),
        "reason {:?} should mention {reason_part:?}",
        why.reason
    );
    assert_eq!(why.attempts, Some(attempts), "{why:?}");
    assert_eq!(why.original_topic.as_deref(), Some(topic));
    assert!(
        why.original_partition.is_some() && why.original_offset.is_some(),
        "{why:?}"
    );
    assert_eq!(why.group.as_deref(), Some(group));
    assert!(
        why.failed_at_ms.unwrap() >= d.record.timestamp_ms,
        "failure time after the record was produced"
    );
    let h = &d.record.headers;
    assert!(
        h.get_str(header::MESSAGE_ID).is_some(),
        "original headers kept"
    );
    assert!(d.record.key.is_some(), "original key kept");
}

async fn rejects_exhausted_retries_and_panics(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("payments");
    let dlq = format!("{topic}.failed");
    tb.topic(&topic).await;
    tb.topic(&dlq).await;
    let log = Log::default();
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| match d.message().id % 100 {
        1 => Outcome::reject(format!("order {} is invalid", d.message().id)),
        2 => Outcome::retry("downstream unavailable"),
        3 => panic!("handler bug on order {}", d.message().id),
        4 if d.attempt() < 3 => Outcome::retry("flaky, succeeds on attempt 3"),
        _ => Outcome::Ack,
    });
    let t = t
        .subscribe(
            Subscription::to(topic.as_str())
                .group("ledger")
                .concurrency(4)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(1)))
                .dead_letter(dlq.as_str())
                .restart_limit(1_000, Duration::from_secs(1))
                .restart_backoff(Backoff::none()),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(t.app(), &topic, &orders(N, 25)).await;
    t.quiet().await.unwrap();

    let dead: BTreeMap<u64, DeadLetter> = t
        .dead_letters(&topic)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.message::<Order>().expect("payload untouched").id, d))
        .collect();
    let expect = |rem: u64| {
        (0..N)
            .filter(move |id| id % 100 == rem)
            .collect::<BTreeSet<_>>()
    };
    let dead_ids: BTreeSet<u64> = dead.keys().copied().collect();
    let expected: BTreeSet<u64> = expect(1)
        .into_iter()
        .chain(expect(2))
        .chain(expect(3))
        .collect();
    assert_eq!(
        dead_ids, expected,
        "exactly the failed records are dead-lettered"
    );
    assert_eq!(
        t.records(&dlq).await.unwrap().len(),
        expected.len(),
        "each once"
    );
    let group = t.group("ledger");
    for id in expect(1) {
        let reason = format!("order {id} is invalid");
        assert_failure(
            &dead[&id],
            FailureKind::Rejected,
            &reason,
            1,
            &topic,
            &group,
        );
    }
    for id in expect(2) {
        let reason = "downstream unavailable";
        assert_failure(
            &dead[&id],
            FailureKind::RetriesExhausted,
            reason,
            3,
            &topic,
            &group,
        );
    }
    for id in expect(3) {
        let reason = format!("handler bug on order {id}");
        assert_failure(&dead[&id], FailureKind::Panic, &reason, 3, &topic, &group);
    }
    t.shutdown().await.unwrap();

    // Every other record was acknowledged exactly once; retried ones on attempt 3.
    let acked: BTreeMap<u64, u32> = log
        .seen()
        .into_iter()
        .filter(|s| !matches!(s.id % 100, 1..=3))
        .fold(BTreeMap::new(), |mut m, s| {
            let e = m.entry(s.id).or_insert(0);
            *e = (*e).max(s.attempt);
            m
        });
    assert_eq!(
        acked.len() as u64,
        N - expected.len() as u64,
        "nothing else lost"
    );
    for (id, attempts) in acked {
        let want = if id % 100 == 4 { 3 } else { 1 };
        assert_eq!(attempts, want, "order {id}");
    }
}

/// A handler whose response future panics: the panic fails the handler
/// (its lane awaits the future in the handler's context), the handler is
/// re-created, the record is retried and finally dead-lettered with the
/// panic's message.
struct Flaky;

impl Actor for Flaky {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Flaky {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        let id = d.message().id;
        Box::pin(async move {
            if id == 7 {
                panic!("async failure on order 7");
            }
            Outcome::Ack
        })
    }
}

on_every_broker!(
    rejects_exhausted_retries_and_panics_are_dead_lettered,
    super::rejects_exhausted_retries_and_panics,
    3
);

async fn response_future_panic(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let t = t
        .subscribe(
            Subscription::to(topic.as_str())
                .group("g")
                .retry(RetryPolicy::exponential(2, Duration::from_millis(1))),
            || Flaky,
        )
        .start()
        .await
        .unwrap();
    publish_all(t.app(), &topic, &orders(20, 3)).await;
    t.quiet().await.unwrap();

    let dead = t.dead_letters(&topic).await.unwrap();
    let ids: Vec<u64> = dead
        .iter()
        .map(|d| d.message::<Order>().unwrap().id)
        .collect();
    assert_eq!(ids, vec![7]);
    let reason = "panicked: async failure on order 7";
    assert_failure(
        &dead[0],
        FailureKind::Panic,
        reason,
        2,
        &topic,
        &t.group("g"),
    );
    t.shutdown().await.unwrap();
}

on_every_broker!(
    a_panic_in_a_response_future_retries_then_dead_letters,
    super::response_future_panic,
    3
);

/// A record the dead-letter topic cannot take (larger than its broker
/// accepts) is dead-lettered without its payload, saying so, and its
/// partition keeps flowing: the refusal is not retried forever.
async fn an_unwritable_dead_letter_is_written_without_its_payload(tb: TestBroker) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (topic, group) = (unique("uploads"), unique("g"));
    let brokers = tb.bootstrap().unwrap().to_string();
    // The topic takes records up to 3 MB; its dead-letter topic the
    // default (1 MB here, as the clients' own message.max.bytes).
    match tb.mock_cluster() {
        Some(mock) => mock.create_topic(&topic, 1, 1).unwrap(),
        None => {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<_> = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1))
                .set("max.message.bytes", "3000000");
            for r in admin
                .create_topics([&new], &AdminOptions::new())
                .await
                .unwrap()
            {
                r.unwrap();
            }
        }
    }
    tb.topic(&format!("{topic}.dlq")).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "3000000")
        .create()
        .unwrap();
    let big = vec![7u8; 1_500_000];
    producer
        .send(
            FutureRecord::<str, _>::to(&topic).payload(&big),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    for o in orders(10, 2) {
        let payload = rmp_serde::to_vec_named(&o).unwrap();
        producer
            .send(
                FutureRecord::to(&topic).key(&o.key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let log = Log::default();
    let events = kafkactor::Events::new();
    events.record();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .events(events.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .max_record_bytes(4 << 20),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    // The big record does not decode as an Order: dead-lettered (kind
    // decode), which the dead-letter topic refuses.
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(log.counts().len(), 10, "the records behind it were handled");
    let dlq = tb.records(&format!("{topic}.dlq")).await;
    assert_eq!(dlq.len(), 1, "one dead letter");
    let h = &dlq[0].headers;
    assert!(dlq[0].payload.is_empty(), "written without its payload");
    assert_eq!(h.get_str(header::PAYLOAD_SIZE), Some("1500000"));
    assert!(h
        .get_str(header::PAYLOAD_DROPPED)
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(h.get_str(header::ERROR_KIND), Some("decode"));
    let (child, reason) = events
        .recorded()
        .into_iter()
        .find_map(|e| match e {
            kafkactor::SupervisionEvent::Degraded { child, reason, .. } => Some((child, reason)),
            _ => None,
        })
        .expect("a Degraded event");
    assert_eq!(&*child, "dead-letter");
    assert!(reason.contains("without its payload"), "{reason}");
}

on_every_kafka_broker!(
    an_unwritable_dead_letter_does_not_wedge_its_partition,
    super::an_unwritable_dead_letter_is_written_without_its_payload,
    1
);
