//! Idempotent consumption (`Subscription::idempotent`): records published
//! twice are handled once, a duplicate is acknowledged and counted, two
//! members racing on the same keys never handle one twice, a dead-lettered
//! record's key counts as handled, and a store that fails pauses the
//! subscription without skipping the check. With the in-memory store and
//! with Redis (`scripts/test.sh` starts it).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkactor::idempotency::{Idempotency, IdempotencyStore, MemoryStore};
use kafkactor::prelude::*;
use kafkactor::{header, Error};
use support::*;

/// How often each key was handled.
type Handled = Arc<Mutex<HashMap<String, usize>>>;

fn handled_once(handled: &Handled, n: usize) {
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len(), n, "every key handled");
    let twice: Vec<_> = handled.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "keys handled more than once: {twice:?}");
}

/// The stores the tests run against.
#[cfg(feature = "redis")]
async fn redis_store() -> Option<Arc<dyn IdempotencyStore>> {
    Some(Arc::new(
        kafkactor::idempotency::RedisStore::connect(&redis_url()?)
            .await
            .expect("Redis reachable"),
    ))
}

fn memory_store() -> Arc<dyn IdempotencyStore> {
    Arc::new(MemoryStore::new(100_000))
}

#[actix::test]
async fn records_published_twice_are_handled_once_in_memory() {
    published_twice(TestBroker::memory(4), memory_store()).await
}

#[cfg(feature = "redis")]
#[actix::test]
async fn records_published_twice_are_handled_once_in_redis() {
    published_twice(TestBroker::memory(4), crate::or_skip!(redis_store().await)).await
}

#[cfg(feature = "redis")]
#[actix::test]
async fn records_published_twice_to_kafka_are_handled_once_in_redis() {
    published_twice(
        crate::or_skip!(TestBroker::kafka(4)),
        crate::or_skip!(redis_store().await),
    )
    .await
}

#[actix::test]
async fn members_racing_on_keys_never_handle_one_twice_in_memory() {
    racing(memory_store()).await
}

#[cfg(feature = "redis")]
#[actix::test]
async fn members_racing_on_keys_never_handle_one_twice_in_redis() {
    racing(crate::or_skip!(redis_store().await)).await
}

/// An unreachable Redis at start is a typed error.
#[cfg(feature = "redis")]
#[actix::test]
async fn an_unreachable_redis_is_a_typed_error() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = kafkactor::idempotency::RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let err = kafkactor::idempotency::RedisStore::connect("not a url")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// 10,000 records, each published twice with one message id (as a
/// producer's retry does), are handled 10,000 times; the other 10,000 are
/// acknowledged as duplicates and committed.
async fn published_twice(tb: TestBroker, store: Arc<dyn IdempotencyStore>) {
    const N: usize = 10_000;
    let topic = unique("payments");
    let group = unique("billing");
    tb.topic(&topic).await;
    let handled = Handled::default();
    let log = handled.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .idempotent(Idempotency::shared(store)),
            move |d: Delivery<u64>| {
                *log.lock()
                    .unwrap()
                    .entry(d.message().to_string())
                    .or_default() += 1;
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let mut batch = Vec::with_capacity(2 * N);
    for i in 0..N as u64 {
        let id = format!("payment-{i}");
        for _ in 0..2 {
            batch.push(
                Publish::to(topic.as_str())
                    .key((i % 97).to_string())
                    .header(header::MESSAGE_ID, &id)
                    .message(&i)
                    .unwrap(),
            );
        }
    }
    for chunk in batch.chunks(1_000) {
        let outcomes = producer
            .send_batch(kafkactor::PublishBatch(chunk.to_vec()))
            .await
            .unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
    }
    eventually(
        "every copy acknowledged",
        tb.patience(Duration::from_secs(30)),
        || counter(&app, "kafkactor_duplicates_total") as usize == N,
    )
    .await;
    tb.until_committed(&group, &topic, tb.patience(Duration::from_secs(10)))
        .await;
    handled_once(&handled, N);
    assert_eq!(counter(&app, "kafkactor_acked_total") as usize, N);
    app.shutdown().await.unwrap();
}

/// Two members of one group share a store; every key is published to
/// several partitions at once, so both members read copies of it at the
/// same time: none is handled twice, nor by two members at once.
async fn racing(store: Arc<dyn IdempotencyStore>) {
    const KEYS: usize = 300;
    let tb = TestBroker::memory(4);
    let topic = unique("racing");
    let group = unique("racers");
    tb.topic(&topic).await;
    let handled = Handled::default();
    let in_progress: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlaps = Arc::new(AtomicUsize::new(0));
    let member = |name: &'static str| {
        let (log, busy, overlaps) = (handled.clone(), in_progress.clone(), overlaps.clone());
        Kafkactor::builder()
            .broker(tb.broker.clone())
            .handle(
                Subscription::to(topic.as_str())
                    .group(group.as_str())
                    .concurrency(4)
                    .idempotent(
                        Idempotency::shared(store.clone()).key_header(header::IDEMPOTENCY_KEY),
                    ),
                move |d: Delivery<String>| {
                    let key = d.message().clone();
                    if !busy.lock().unwrap().insert(key.clone()) {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    *log.lock().unwrap().entry(key.clone()).or_default() += 1;
                    let busy = busy.clone();
                    tracing::debug!(member = name, %key, "handling");
                    async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        busy.lock().unwrap().remove(&key);
                        Outcome::Ack
                    }
                },
            )
            .start()
    };
    let a = member("a").await.unwrap();
    let b = member("b").await.unwrap();
    until_owned(
        "both members own partitions",
        Duration::from_secs(10),
        &a,
        |n| n >= 1,
    )
    .await;
    until_owned(
        "both members own partitions",
        Duration::from_secs(10),
        &b,
        |n| n >= 1,
    )
    .await;
    let producer = a.producer();
    for k in 0..KEYS {
        let key = format!("key-{k}");
        // One copy per partition key: spread over the partitions, so over
        // both members.
        for copy in 0..4 {
            producer
                .send(
                    Publish::to(topic.as_str())
                        .key(format!("{k}-{copy}"))
                        .idempotency_key(&key)
                        .message(&key)
                        .unwrap(),
                )
                .await
                .unwrap()
                .unwrap();
        }
    }
    eventually("every copy finished", Duration::from_secs(30), || {
        counter(&a, "kafkactor_duplicates_total") + counter(&b, "kafkactor_duplicates_total")
            == (3 * KEYS) as f64
    })
    .await;
    handled_once(&handled, KEYS);
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a key handled twice at once"
    );
    assert!(
        counter(&a, "kafkactor_acked_total") > 0.0 && counter(&b, "kafkactor_acked_total") > 0.0,
        "both members handled records"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A record dead-lettered counts as handled: a copy of it arriving later
/// is a duplicate, not handled again.
#[actix::test]
async fn a_dead_lettered_key_is_not_handled_again() {
    let tb = TestBroker::memory(1);
    let topic = unique("rejects");
    tb.topics(&[&topic, &format!("{topic}.dlq")]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group("rejecting")
                .idempotent(Idempotency::new(MemoryStore::new(100))),
            move |_: Delivery<String>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Outcome::reject("not ours") }
            },
        )
        .start()
        .await
        .unwrap();
    let publish = || {
        Publish::to(topic.as_str())
            .header(header::MESSAGE_ID, "m-1")
            .message(&"x".to_string())
            .unwrap()
    };
    app.producer().send(publish()).await.unwrap().unwrap();
    eventually("dead-lettered", Duration::from_secs(5), || {
        counter(&app, "kafkactor_dead_lettered_total") == 1.0
    })
    .await;
    app.producer().send(publish()).await.unwrap().unwrap();
    eventually("the copy acknowledged", Duration::from_secs(5), || {
        counter(&app, "kafkactor_duplicates_total") == 1.0
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(tb.records(&format!("{topic}.dlq")).await.len(), 1);
    app.shutdown().await.unwrap();
}

/// A store that goes away: the records wait (not handled without the
/// check, not committed), the failures are counted and the application is
/// not ready; once the store is back every key is handled once and it is
/// ready again.
#[actix::test]
async fn a_failing_store_pauses_the_subscription() {
    let tb = TestBroker::memory(1);
    let topic = unique("flaky");
    let group = unique("flaky");
    tb.topic(&topic).await;
    let handled = Handled::default();
    let log = handled.clone();
    let switches = support::flaky_store::Switches::default();
    switches.claims_down.store(true, Ordering::SeqCst);
    switches.completions_down.store(true, Ordering::SeqCst);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .idempotent(Idempotency::new(switches.store())),
            move |d: Delivery<String>| {
                *log.lock().unwrap().entry(d.message().clone()).or_default() += 1;
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    for i in 0..20 {
        let m = format!("m-{}", i % 10);
        app.producer()
            .send(
                Publish::to(topic.as_str())
                    .header(header::MESSAGE_ID, &m)
                    .message(&m)
                    .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let store_check = |health: &kafkactor::Health| {
        health
            .checks
            .iter()
            .find(|c| c.name == format!("idempotency:{group}"))
            .map(|c| c.ok)
    };
    eventually_async("the store's check failing", Duration::from_secs(10), || {
        let health = app.health();
        async move { store_check(&health.await) == Some(false) }
    })
    .await;
    assert!(counter(&app, "kafkactor_idempotency_store_errors_total") >= 1.0);
    assert!(!app.health().await.ready);
    assert!(
        handled.lock().unwrap().is_empty(),
        "nothing passes unchecked"
    );
    switches.claims_down.store(false, Ordering::SeqCst);
    switches.completions_down.store(false, Ordering::SeqCst);
    eventually("every copy finished", Duration::from_secs(20), || {
        counter(&app, "kafkactor_duplicates_total") == 10.0
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    handled_once(&handled, 10);
    assert_eq!(store_check(&app.health().await), Some(true));
    app.shutdown().await.unwrap();
}
