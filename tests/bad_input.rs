//! Bad input gets a typed error at publish/build time, or a dead-letter
//! entry with the reason at consume time; never a panic, never a silent drop.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::{header, Error};
use support::*;

/// A broker nobody listens on: `start` says what it waits for while it
/// waits, then fails within its connect timeout with an error that names
/// the address it tried and what to check.
#[actix::test]
async fn an_unreachable_broker_fails_start_clearly() {
    let started = std::time::Instant::now();
    let err = Kafkactor::builder()
        .broker(Broker::kafka("127.0.0.1:1"))
        .connect_timeout(Duration::from_secs(2))
        .start()
        .await
        .map(|_| ())
        .unwrap_err();
    match &err {
        Error::Broker {
            operation,
            reason,
            retriable,
            ..
        } => {
            assert!(operation.contains("127.0.0.1:1"), "{err}");
            assert!(reason.contains("Check that"), "{err}");
            assert!(*retriable, "{err}");
        }
        other => panic!("expected a broker error, got {other:?}"),
    }
    // Bounded by the connect timeout, not by a client's own default (a
    // generous margin: this machine is slow and shared).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[actix::test]
async fn build_time_errors_are_typed() {
    let sub = |t: &str| Subscription::to(t).group("g");
    let start = |b: kafkactor::AppBuilder| async move { b.start().await.map(|_| ()) };

    let err =
        start(Kafkactor::builder().subscribe(sub("orders"), probe(&Log::default(), "a", ack())))
            .await;
    assert!(
        matches!(err, Err(Error::Config(ref m)) if m.contains("no broker")),
        "{err:?}"
    );

    let with_broker = || Kafkactor::builder().broker(Broker::memory());
    let err = start(with_broker().subscribe(sub(""), probe(&Log::default(), "a", ack()))).await;
    assert!(matches!(err, Err(Error::InvalidTopic(_))), "{err:?}");

    let err = start(with_broker().subscribe(
        sub("orders").concurrency(0),
        probe(&Log::default(), "a", ack()),
    ))
    .await;
    // The error names the subscription it is about.
    assert!(
        matches!(err, Err(Error::Config(ref m))
            if m.contains("concurrency") && m.contains("group \"g\"") && m.contains("orders")),
        "{err:?}"
    );

    let err = start(with_broker().subscribe(
        Subscription::to("orders"),
        probe(&Log::default(), "a", ack()),
    ))
    .await;
    assert!(
        matches!(err, Err(Error::Config(ref m)) if m.contains("group")),
        "{err:?}"
    );

    let err = start(with_broker().subscribe(
        sub("orders").dead_letter("bad topic!"),
        probe(&Log::default(), "a", ack()),
    ))
    .await;
    assert!(matches!(err, Err(Error::InvalidTopic(_))), "{err:?}");

    assert!(matches!(
        Broker::memory_with_partitions(0),
        Err(Error::Config(_))
    ));
}

#[actix::test]
async fn publish_errors_are_typed() {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .max_record_bytes(1_000)
        .start()
        .await
        .unwrap();
    let producer = app.producer();

    let err = producer.send(Publish::to("").payload("x")).await.unwrap();
    assert!(matches!(err, Err(Error::InvalidTopic(_))), "{err:?}");
    let err = producer
        .send(Publish::to("a/b").payload("x"))
        .await
        .unwrap();
    assert!(matches!(err, Err(Error::InvalidTopic(_))), "{err:?}");

    let err = producer
        .send(Publish::to("big").payload(vec![0u8; 2_000]))
        .await
        .unwrap();
    match err {
        Err(Error::RecordTooLarge { size, max }) => assert!(size > 2_000 && max == 1_000),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(err_is_fatal(
        &producer
            .send(Publish::to("big").payload(vec![0u8; 2_000]))
            .await
            .unwrap()
    ));

    let err = producer
        .send(Publish::to("orders").partition(7).payload("x"))
        .await
        .unwrap();
    assert!(
        matches!(
            err,
            Err(Error::Produce {
                retriable: false,
                ..
            })
        ),
        "{err:?}"
    );

    // A value serde cannot encode is an Encode error, before anything is sent.
    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 1);
    assert!(matches!(
        Publish::to("orders").json().message(&map),
        Err(Error::Encode(_))
    ));

    // Nothing was written by the failed publishes.
    let memory = app.broker().as_memory().unwrap();
    assert!(memory.records("big").is_empty());
    app.shutdown().await.unwrap();
}

fn err_is_fatal(r: &Result<PublishOutcome, Error>) -> bool {
    matches!(r, Err(e) if e.is_fatal() && !e.is_retriable())
}

#[actix::test]
async fn undecodable_and_unroutable_records_are_dead_lettered_with_the_reason() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("g");
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .max_record_bytes(4_096),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let good = |id: u64| {
        Publish::to(topic.as_str())
            .key("k")
            .message(&Order {
                id,
                key: "k".into(),
                seq: id,
            })
            .unwrap()
    };
    let bad: Vec<(&str, Publish)> = vec![
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .type_name("Order")
                .header(header::CONTENT_TYPE, "application/msgpack")
                .payload(&b"\xc1\xc1 not msgpack"[..]),
        ),
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .header(header::CONTENT_TYPE, "text/csv")
                .payload("1,2,3"),
        ),
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .header(header::CONTENT_TYPE, [0xffu8, 0xfe])
                .payload("x"),
        ),
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .header(header::TYPE_NAME, [0xffu8])
                .payload("x"),
        ),
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .json()
                .message(&"a string, not an Order")
                .unwrap()
                .type_name("Order"),
        ),
        (
            "decode",
            Publish::to(topic.as_str())
                .key("k")
                .header(header::CONTENT_ENCODING, "zstd")
                .payload("x"),
        ),
        (
            "unroutable",
            Publish::to(topic.as_str())
                .key("k")
                .type_name("Refund")
                .payload("x"),
        ),
        (
            "too-large",
            Publish::to(topic.as_str())
                .key("k")
                .message(&Order {
                    id: 99,
                    key: "x".repeat(5_000),
                    seq: 0,
                })
                .unwrap(),
        ),
    ];
    let kinds: Vec<&str> = bad.iter().map(|(k, _)| *k).collect();
    producer.send(good(0)).await.unwrap().unwrap();
    for (_, p) in bad {
        producer.send(p).await.unwrap().unwrap();
    }
    producer.send(good(1)).await.unwrap().unwrap();

    let memory = broker.as_memory().unwrap();
    eventually("all committed", Duration::from_secs(20), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    app.shutdown().await.unwrap();

    // The good records around the bad ones were handled: the partition kept flowing.
    assert_eq!(
        log.seen().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let dead = memory.records(&format!("{topic}.dlq"));
    let got: Vec<&str> = dead
        .iter()
        .map(|r| r.headers.get_str(header::ERROR_KIND).unwrap())
        .collect();
    assert_eq!(got, kinds, "every bad record dead-lettered once, in order");
    for r in &dead {
        let reason = r.headers.get_str(header::ERROR_REASON).unwrap();
        assert!(!reason.is_empty());
        assert_eq!(
            r.headers.get_str(header::ATTEMPT),
            Some("1"),
            "bad input is not retried"
        );
    }
    let reasons: Vec<&str> = dead
        .iter()
        .map(|r| r.headers.get_str(header::ERROR_REASON).unwrap())
        .collect();
    assert!(reasons[0].contains("msgpack"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("unknown content-type"),
        "{}",
        reasons[1]
    );
    assert!(reasons[5].contains("content-encoding"), "{}", reasons[5]);
    assert!(reasons[6].contains("Refund"), "{}", reasons[6]);
    assert!(reasons[7].contains("exceeds"), "{}", reasons[7]);
}

/// Settings kafkactor's guarantees rest on cannot be overridden by accident
/// through `Broker::set`: starting fails with `Error::Config` naming the key
/// and why. Harmless values of the same keys pass.
#[actix::test]
async fn safety_critical_client_settings_are_refused() {
    let start = |broker: Broker| async move {
        Kafkactor::builder()
            .broker(broker)
            .subscribe(
                Subscription::to("orders").group("g"),
                probe(&Log::default(), "a", ack()),
            )
            .start()
            .await
    };
    for (key, value, why) in [
        ("enable.auto.commit", "true", "finished"),
        ("enable.auto.offset.store", "true", "finished"),
        ("group.id", "other", "Subscription::group"),
        ("enable.idempotence", "false", "idempotent"),
        ("acks", "1", "acks=all"),
    ] {
        for broker in [Broker::memory(), Broker::kafka("127.0.0.1:1")] {
            let err = start(broker.set(key, value)).await.map(|_| ());
            let Err(Error::Config(reason)) = &err else {
                panic!("{key}={value}: expected Error::Config, got {err:?}");
            };
            assert!(
                reason.contains(key) && reason.contains(why),
                "{key}: {reason}"
            );
        }
    }
    // The values kafkactor uses itself are accepted.
    let app = start(
        Broker::memory()
            .set("enable.auto.commit", "false")
            .set("enable.idempotence", "true")
            .set("acks", "all"),
    )
    .await
    .unwrap();
    app.shutdown().await.unwrap();
}

/// No public function or setter panics on extreme input: each gives a
/// typed error or a documented clamp.
#[actix::test]
async fn extreme_settings_do_not_panic() {
    use kafkactor::{partition_for_key, Delays, RetryPolicy};
    // partitions below one are taken as one.
    assert_eq!(partition_for_key(b"k", 0), 0);
    assert_eq!(partition_for_key(b"k", -3), 0);
    // A bucket longer than a year is a configuration error, not a panic of
    // the Producer on the next delayed publish.
    let err = Kafkactor::builder()
        .broker(Broker::memory())
        .delays(Delays::default().buckets([Duration::MAX]))
        .start()
        .await
        .map(|_| ());
    assert!(
        matches!(err, Err(Error::Config(ref m)) if m.contains("longer than")),
        "{err:?}"
    );
    // Backoffs of any size.
    let policy = RetryPolicy::exponential(5, Duration::MAX).max_backoff(Duration::MAX);
    assert!(policy.backoff(3) >= Duration::from_secs(1));
    // Timeouts of any size: a day-long delay still publishes, the app still
    // starts, publishes and shuts down.
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .delivery_timeout(Duration::MAX)
        .delays(Delays::default().hold_in_memory(Duration::MAX))
        .subscribe(
            Subscription::to("orders")
                .group("g")
                .drain_timeout(Duration::MAX)
                .handler_timeout(Duration::MAX)
                .commit_interval(Duration::MAX)
                .retry(policy),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, "orders", &orders(10, 2)).await;
    let later = Publish::to("orders")
        .message(&1u8)
        .unwrap()
        .delay(Duration::MAX);
    assert!(app.producer().send(later).await.unwrap().is_ok());
    eventually("handled", Duration::from_secs(5), || log.len() == 10).await;
    app.shutdown().await.unwrap();
}
