//! The test harness itself (`kafkactor::testing`): `quiet` waits for
//! retries and fails, naming what is not done, when a handler never
//! finishes; a second run on the same Kafka broker sees nothing of the
//! first; scripted failures fail what they say; a revoked subscription
//! hands its records in flight to its next incarnation, nothing lost. On
//! the embedded broker and Apache Kafka.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::testing::{fail_attempts, fail_first, TestApp};
use kafkactor::Error;
use support::*;

async fn quiet_waits_for_retries(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let t = t
        .handle(
            Subscription::to(topic.as_str())
                .group("g")
                .retry(RetryPolicy::exponential(5, Duration::from_millis(100))),
            fail_attempts(2, |_: Delivery<Order>| async { Outcome::Ack }),
        )
        .start()
        .await
        .unwrap();
    publish_all(t.app(), &topic, &orders(4, 2)).await;
    t.quiet().await.unwrap();
    // Quiet only once every record's third attempt answered: 100 ms and
    // 200 ms of backoff later.
    let calls = t.calls(&topic);
    assert_eq!(calls.len(), 12, "{calls:?}");
    for id in 0..4 {
        let attempts: Vec<(u32, bool)> = calls
            .iter()
            .filter(|c| c.message::<Order>().unwrap().id == id)
            .map(|c| (c.attempt(), c.outcome() == &Outcome::Ack))
            .collect();
        assert_eq!(attempts, [(1, false), (2, false), (3, true)], "order {id}");
    }
    assert_eq!(t.lag("g", &topic).await.unwrap(), 0);
    assert!(t.dead_letters(&topic).await.unwrap().is_empty());
    t.shutdown().await.unwrap();
}
on_memory_and_kafka!(
    quiet_waits_for_retries_to_end,
    super::quiet_waits_for_retries,
    2
);

async fn quiet_names_what_is_not_done(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone()).patience(Duration::from_secs(3));
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let t = t
        .handle(
            Subscription::to(topic.as_str())
                .group("stuck")
                .handler_timeout(None),
            |_: Delivery<Order>| std::future::pending::<Outcome>(),
        )
        .start()
        .await
        .unwrap();
    let order = &orders(1, 1)[0];
    t.publish(Publish::to(topic.as_str()).key("k").message(order).unwrap())
        .await
        .unwrap();
    match t.quiet().await {
        Err(Error::Unavailable(why)) => assert!(
            why.contains("group stuck has 1 of") && why.contains(&topic),
            "{why}"
        ),
        other => panic!("a handler that never answers is not quiet: {other:?}"),
    }
}
on_memory_and_kafka!(
    quiet_fails_naming_what_is_not_done,
    super::quiet_names_what_is_not_done,
    1
);

/// Two runs of one test on one Kafka broker, with the same names in the
/// code: the second sees neither the first's records nor its dead letter.
#[actix::test]
async fn a_second_run_on_kafka_sees_nothing_of_the_first() {
    let addr = or_skip!(kafka_address());
    let mut seen = Vec::new();
    for run in 0..2u64 {
        let t = TestApp::kafka(addr.as_str()).partitions(1);
        let topic = t.topic("orders");
        let t = t
            .handle(
                Subscription::to(topic.as_str()).group("billing"),
                |d: Delivery<Order>| async move {
                    if d.message().id == 0 {
                        Outcome::reject("order 0 is refused")
                    } else {
                        Outcome::Ack
                    }
                },
            )
            .start()
            .await
            .unwrap();
        let order = Order {
            id: run,
            key: "k".into(),
            seq: 0,
        };
        t.publish(
            Publish::to(topic.as_str())
                .key("k")
                .message(&order)
                .unwrap(),
        )
        .await
        .unwrap();
        t.quiet().await.unwrap();
        seen.push((
            t.messages::<Order>(&topic).unwrap(),
            t.dead_letters(&topic).await.unwrap().len(),
            t.group("billing"),
        ));
        t.shutdown().await.unwrap();
    }
    assert_eq!(seen[0].0.len(), 1, "run 1 handled its one order");
    assert_eq!(seen[0].1, 1, "run 1 dead-lettered order 0");
    assert_eq!(
        seen[1].0.iter().map(|o| o.id).collect::<Vec<_>>(),
        [1],
        "run 2 handled its own order only"
    );
    assert_eq!(seen[1].1, 0, "run 2 sees no dead letter of run 1");
    assert_ne!(seen[0].2, seen[1].2, "each run its own group");
}

/// `KAFKACTOR_TEST_KAFKA` switches `TestApp::builder()` to Kafka.
#[actix::test]
async fn the_environment_switches_to_kafka() {
    assert!(!TestApp::memory().is_kafka());
    let addr = or_skip!(kafka_address());
    // This test runs in a process of its own (nextest), or is the only
    // one reading the variable.
    std::env::set_var(kafkactor::testing::KAFKA_ENV, &addr);
    let t = TestApp::builder();
    std::env::remove_var(kafkactor::testing::KAFKA_ENV);
    assert!(t.is_kafka());
    assert_ne!(t.topic("orders"), "orders", "a name of the run's own");
    let topic = t.topic("orders");
    let t = t
        .handle(
            Subscription::to(topic.as_str()).group("g"),
            |_: Delivery<Order>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    assert!(t.is_kafka() && t.broker().as_memory().is_none());
    publish_all(t.app(), &topic, &orders(3, 3)).await;
    t.quiet().await.unwrap();
    assert_eq!(t.calls(&topic).len(), 3);
    t.shutdown().await.unwrap();
}

async fn scripted_failures(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let t = t
        .handle(
            Subscription::to(topic.as_str())
                .group("g")
                .retry(RetryPolicy::exponential(2, Duration::from_millis(1))),
            fail_first(3, |_: Delivery<Order>| async { Outcome::Ack }),
        )
        .start()
        .await
        .unwrap();
    // One key: the first order fails twice and is dead-lettered, the
    // second fails once and is acknowledged on its second attempt.
    publish_all(t.app(), &topic, &orders(3, 1)).await;
    t.quiet().await.unwrap();
    let calls: Vec<(u64, u32, bool)> = t
        .calls(&topic)
        .iter()
        .map(|c| {
            let id = c.message::<Order>().unwrap().id;
            (id, c.attempt(), c.outcome() == &Outcome::Ack)
        })
        .collect();
    assert_eq!(
        calls,
        [
            (0, 1, false),
            (0, 2, false),
            (1, 1, false),
            (1, 2, true),
            (2, 1, true)
        ]
    );
    let dead = t.dead_letters(&topic).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message::<Order>().unwrap().id, 0);
    assert_eq!(dead[0].why.reason, "scripted failure 2 of 3");
    t.shutdown().await.unwrap();
}
on_memory_and_kafka!(
    scripted_failures_fail_what_they_say,
    super::scripted_failures,
    1
);

async fn revoked_mid_stream(tb: TestBroker) {
    const N: u64 = 2_000;
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let t = t
        .handle(
            Subscription::to(topic.as_str()).group("g").concurrency(4),
            |_: Delivery<Order>| async {
                tokio::time::sleep(Duration::from_micros(200)).await;
                Outcome::Ack
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(t.app(), &topic, &orders(N, 20)).await;
    t.until("some records handled", || async {
        !t.calls(&topic).is_empty()
    })
    .await
    .unwrap();
    t.revoke("g").await.unwrap();
    let at_revoke = t.calls(&topic).len() as u64;
    t.quiet().await.unwrap();
    assert!(
        at_revoke < N,
        "revoked mid-stream ({at_revoke} of {N} handled)"
    );
    let handled: std::collections::BTreeSet<u64> = t
        .messages::<Order>(&topic)
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(handled.len() as u64, N, "every order handled, none lost");
    assert_eq!(t.lag("g", &topic).await.unwrap(), 0);
    assert!(
        t.revoke("nobody").await.is_err(),
        "an unknown group is an error"
    );
    t.shutdown().await.unwrap();
}
on_memory_and_kafka!(
    a_revoke_mid_stream_loses_nothing,
    super::revoked_mid_stream,
    3
);

/// A record delayed by an hour and one scheduled two hours ahead are
/// delivered as soon as the test's clock is advanced past them, in
/// seconds of real time; one delayed past the advance stays in its bucket.
async fn delays_follow_the_test_clock(tb: TestBroker) {
    use std::time::{Instant, SystemTime};
    let t = TestApp::on(tb.broker.clone());
    let (topic, prefix) = (t.topic("reminders"), t.topic("delay"));
    tb.topics(&[&topic]).await;
    let delays = kafkactor::Delays::default()
        .topic_prefix(&prefix)
        .group(&t.topic("republisher"));
    let t = t
        .with(|b| b.delays(delays))
        .handle(
            Subscription::to(topic.as_str()).group("g"),
            |_: Delivery<Order>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let order = |id| Order {
        id,
        key: "k".into(),
        seq: id,
    };
    let started = Instant::now();
    t.publish(
        Publish::to(topic.as_str())
            .key("k")
            .delay(Duration::from_secs(3600))
            .message(&order(1))
            .unwrap(),
    )
    .await
    .unwrap();
    let in_two_hours = SystemTime::now() + t.clock().unwrap().ahead() + Duration::from_secs(7200);
    t.publish(
        Publish::to(topic.as_str())
            .key("k")
            .at(in_two_hours)
            .message(&order(2))
            .unwrap(),
    )
    .await
    .unwrap();
    t.publish(
        Publish::to(topic.as_str())
            .key("k")
            .delay(Duration::from_secs(6 * 3600))
            .message(&order(3))
            .unwrap(),
    )
    .await
    .unwrap();
    t.quiet().await.unwrap();
    assert!(t.calls(&topic).is_empty(), "nothing due yet");
    t.clock()
        .unwrap()
        .advance(Duration::from_secs(2 * 3600 + 60));
    t.until("both due orders handled", || async {
        t.calls(&topic).len() >= 2
    })
    .await
    .unwrap();
    let mut ids: Vec<u64> = t
        .messages::<Order>(&topic)
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2], "the six-hour one stays delayed");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "hours of delay in {:?}",
        started.elapsed()
    );
    t.shutdown().await.unwrap();
}
#[actix::test]
async fn delays_follow_the_test_clock_not_the_wall() {
    delays_follow_the_test_clock(TestBroker::memory(2)).await
}

/// On Kafka the test clock is refused: the broker would refuse records
/// stamped hours ahead of its own clock.
#[actix::test]
async fn the_test_clock_is_refused_on_kafka() {
    let addr = or_skip!(kafka_address());
    let t = TestApp::kafka(addr.as_str()).start().await.unwrap();
    match t.clock() {
        Err(Error::Config(why)) => assert!(why.contains("message.timestamp.after.max.ms"), "{why}"),
        Ok(_) => panic!("the test clock on Kafka should be refused"),
        Err(other) => panic!("{other:?}"),
    }
    t.shutdown().await.unwrap();
}
