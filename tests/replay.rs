//! Dead-letter replay: records sent back once each, in key order, at the
//! rate asked; a second run of the same range sends nothing; a record that
//! fails again is not replayed in a loop (the run's snapshot, then the
//! parking topic); a cancelled run resumes without sending twice. On the
//! embedded broker and Apache Kafka.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{header, App, Record, Replay};
use support::*;

/// An application whose handler of `topic` (group `group`) answers with
/// `behaviour`, logging every handling to `log`.
async fn consumer(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    log: &Log,
    behaviour: Behaviour,
) -> App {
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic).group(group).concurrency(4),
            probe(log, "a", behaviour),
        )
        .start()
        .await
        .unwrap()
}

/// Publishes `orders` to `topic` through a subscription that rejects them
/// all, and waits until every one is in `<topic>.dlq`.
async fn dead_lettered(tb: &TestBroker, topic: &str, group: &str, orders: &[Order]) -> App {
    tb.topics(&[topic]).await;
    let log = Log::default();
    let app = consumer(
        tb,
        topic,
        group,
        &log,
        Arc::new(|_| Outcome::reject("bad order")),
    )
    .await;
    publish_all(&app, topic, orders).await;
    let dlq = format!("{topic}.dlq");
    tb.until_records(&dlq, orders.len()).await;
    app
}

/// How often each order id was handled.
fn handled(log: &Log) -> HashMap<u64, usize> {
    log.counts()
}

async fn replays_each_dead_letter_once_in_key_order(tb: TestBroker) {
    const N: u64 = 1_000;
    let topic = unique("orders");
    let group = unique("shop");
    let dlq = format!("{topic}.dlq");
    let rejecting = dead_lettered(&tb, &topic, &group, &orders(N, 50)).await;
    rejecting.shutdown().await.unwrap();

    // A dry run counts and writes nothing.
    let dry = Replay::from(dlq.as_str())
        .dry_run()
        .run(&tb.broker)
        .await
        .unwrap();
    assert_eq!((dry.matched, dry.sent, dry.parked), (N, N, 0), "{dry:?}");
    assert!(dry.dry_run);

    // The same group, now acknowledging, sees only what is replayed.
    let log = Log::default();
    let app = consumer(&tb, &topic, &group, &log, ack()).await;
    let started = Instant::now();
    let report = Replay::from(dlq.as_str())
        .rate(200.0)
        .run(&tb.broker)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (report.matched, report.sent, report.parked),
        (N, N, 0),
        "{report:?}"
    );
    assert_eq!(report.remaining, 0);
    assert!(
        took >= Duration::from_millis(N * 1000 / 200 - 500),
        "1,000 records at 200 a second took {took:?}"
    );
    eventually(
        "every replayed record handled",
        tb.patience(Duration::from_secs(30)),
        || handled(&log).len() as u64 == N,
    )
    .await;

    // The same range again sends nothing.
    let again = Replay::from(dlq.as_str()).run(&tb.broker).await.unwrap();
    assert_eq!((again.matched, again.sent), (0, 0), "{again:?}");
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(
        tb.records(&topic).await.len() as u64,
        2 * N,
        "each sent back once"
    );
    let seen = log.seen();
    assert!(handled(&log).values().all(|&n| n == 1), "each handled once");
    assert_key_order(&seen);
    let written = tb.records(&topic).await;
    let counts: Vec<_> = written
        .iter()
        .filter_map(|r| r.headers.get_str(header::REPLAY_COUNT))
        .collect();
    assert_eq!(counts.len() as u64, N, "every replay counted");
    assert!(counts.iter().all(|c| *c == "1"));
}

on_memory_and_kafka!(
    replays_each_dead_letter_once_in_key_order,
    super::replays_each_dead_letter_once_in_key_order,
    4
);

/// How many times `name` appears in `record`'s headers.
fn header_count(record: &Record, name: &str) -> usize {
    record.headers.iter().filter(|(n, _)| *n == name).count()
}

async fn a_record_failing_again_is_parked_not_looped(tb: TestBroker) {
    const N: u64 = 10;
    let topic = unique("payments");
    let group = unique("ledger");
    let dlq = format!("{topic}.dlq");
    // Every handling is rejected, the replayed ones too.
    let app = dead_lettered(&tb, &topic, &group, &orders(N, 3)).await;
    let first: HashMap<String, String> = tb
        .records(&dlq)
        .await
        .iter()
        .map(|r| {
            let id = r.headers.get_str(header::MESSAGE_ID).unwrap().to_string();
            (
                id,
                r.headers
                    .get_str(header::ORIGINAL_OFFSET)
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();

    let replay = || Replay::from(dlq.as_str()).max_replays(2);
    // Each run takes only what was dead-lettered before it started.
    for (run, total) in [(1u64, 2 * N), (2, 3 * N)] {
        let report = replay().run(&tb.broker).await.unwrap();
        assert_eq!(
            (report.sent, report.parked),
            (N, 0),
            "run {run}: {report:?}"
        );
        tb.until_records(&dlq, total as usize).await;
    }
    let third = replay().run(&tb.broker).await.unwrap();
    assert_eq!((third.sent, third.parked), (0, N), "replayed twice: parked");
    let fourth = replay().run(&tb.broker).await.unwrap();
    assert_eq!((fourth.sent, fourth.parked, fourth.matched), (0, 0, 0));
    app.shutdown().await.unwrap();

    assert_eq!(tb.records(&dlq).await.len() as u64, 3 * N, "no loop");
    let parked = tb.records(&format!("{dlq}.parked")).await;
    assert_eq!(parked.len() as u64, N);
    for record in &parked {
        assert_eq!(record.headers.get_str(header::REPLAY_COUNT), Some("2"));
        assert_eq!(
            header_count(record, header::ERROR_REASON),
            1,
            "the latest reason only"
        );
        assert_eq!(
            record.headers.get_str(header::ERROR_REASON),
            Some("bad order")
        );
        let id = record.headers.get_str(header::MESSAGE_ID).unwrap();
        assert_eq!(
            record.headers.get_str(header::ORIGINAL_OFFSET),
            Some(first[id].as_str()),
            "the first failure's provenance kept"
        );
        assert_eq!(
            record.headers.get_str(header::ORIGINAL_TOPIC),
            Some(topic.as_str())
        );
    }
}

on_memory_and_kafka!(
    a_record_failing_again_is_parked_not_looped,
    super::a_record_failing_again_is_parked_not_looped,
    4
);

async fn a_cancelled_replay_resumes_without_sending_twice(tb: TestBroker) {
    const N: u64 = 300;
    let topic = unique("invoices");
    let group = unique("billing");
    let dlq = format!("{topic}.dlq");
    let rejecting = dead_lettered(&tb, &topic, &group, &orders(N, 10)).await;
    rejecting.shutdown().await.unwrap();
    let log = Log::default();
    let app = consumer(&tb, &topic, &group, &log, ack()).await;

    let run = Replay::from(dlq.as_str())
        .name("resumable")
        .rate(100.0)
        .start(&tb.broker)
        .await
        .unwrap();
    eventually("a third sent", tb.patience(Duration::from_secs(20)), || {
        run.progress().sent >= N / 3
    })
    .await;
    run.cancel();
    let first = run.finished().await.unwrap();
    assert!(first.cancelled, "{first:?}");
    assert!(first.sent >= N / 3 && first.sent < N, "{first:?}");
    assert!(first.remaining > 0, "{first:?}");

    let rest = Replay::from(dlq.as_str())
        .name("resumable")
        .run(&tb.broker)
        .await
        .unwrap();
    assert_eq!(first.sent + rest.sent, N, "{first:?} then {rest:?}");
    assert_eq!(rest.remaining, 0);
    eventually(
        "every record handled",
        tb.patience(Duration::from_secs(30)),
        || handled(&log).len() as u64 == N,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert_eq!(
        tb.records(&topic).await.len() as u64,
        2 * N,
        "each sent back once"
    );
    assert!(handled(&log).values().all(|&n| n == 1), "each handled once");
    assert_key_order(&log.seen());
}

on_memory_and_kafka!(
    a_cancelled_replay_resumes_without_sending_twice,
    super::a_cancelled_replay_resumes_without_sending_twice,
    4
);

#[actix::test]
async fn bad_input_is_refused_with_a_reason() {
    let tb = TestBroker::memory(1);
    let missing = Replay::from("no-such.dlq")
        .run(&tb.broker)
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("no topic `no-such.dlq`"),
        "{missing}"
    );
    let rate = Replay::from("a.dlq")
        .rate(0.0)
        .run(&tb.broker)
        .await
        .unwrap_err();
    assert!(rate.to_string().contains("rate"), "{rate}");
    let name = Replay::from("a.dlq")
        .to("bad topic!")
        .run(&tb.broker)
        .await
        .unwrap_err();
    assert!(matches!(name, kafkactor::Error::InvalidTopic(_)), "{name}");
}

/// An idempotent subscription records a dead-lettered record's key as
/// done; the replay of it is still handled (a new delivery), once.
#[actix::test]
async fn an_idempotent_subscription_handles_a_replayed_record() {
    use kafkactor::{Idempotency, MemoryStore};
    const N: u64 = 20;
    let tb = TestBroker::memory(2);
    let topic = unique("refunds");
    let group = unique("payouts");
    let dlq = format!("{topic}.dlq");
    tb.topics(&[topic.as_str()]).await;
    let log = Log::default();
    // Rejects every first handling, acknowledges every replay.
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| {
        if d.headers().contains(header::REPLAY_COUNT) {
            Outcome::Ack
        } else {
            Outcome::reject("not yet")
        }
    });
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .idempotent(Idempotency::new(MemoryStore::new(1_000))),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N, 4)).await;
    tb.until_records(&dlq, N as usize).await;
    let report = Replay::from(dlq.as_str()).run(&tb.broker).await.unwrap();
    assert_eq!(report.sent, N);
    eventually("every replay handled", Duration::from_secs(10), || {
        log.len() as u64 == 2 * N
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    assert!(
        handled(&log).values().all(|&n| n == 2),
        "rejected once, then handled once"
    );
}
