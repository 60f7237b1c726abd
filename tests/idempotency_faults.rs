//! Idempotent consumption at its edges: a copy of a record (the same
//! idempotency key) waiting while its original is handled, when the
//! original's partition moves to another member (queued or running), and a
//! store that fails (its backoff, and readiness through a Dispatcher
//! restart and while only one kind of call fails).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::idempotency::{Idempotency, IdempotencyStore};
use kafkactor::prelude::*;
use kafkactor::{header, App};
use support::flaky_store::{Flaky, Switches};
use support::*;

/// One handling: which member, the payload, and whether it was acknowledged.
#[derive(Debug, Clone, PartialEq)]
struct Handling {
    app: &'static str,
    payload: String,
    acked: bool,
}

#[derive(Clone, Default)]
struct Handlings(Arc<Mutex<Vec<Handling>>>);

impl Handlings {
    fn all(&self) -> Vec<Handling> {
        self.0.lock().unwrap().clone()
    }

    /// Acknowledged handlings of `payload`.
    fn acked(&self, payload: &str) -> usize {
        self.all()
            .iter()
            .filter(|h| h.acked && h.payload == payload)
            .count()
    }
}

/// A member of `group` reading `topic` with one lane. A record whose payload
/// is "slow" or "retry" waits until `go` is set, then is acknowledged
/// ("slow") or answered `Retry` ("retry", and acknowledged on a later
/// attempt).
async fn member(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    store: Arc<dyn IdempotencyStore>,
    app: &'static str,
    handlings: &Handlings,
    go: &Arc<AtomicBool>,
) -> App {
    let (log, go) = (handlings.clone(), go.clone());
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic)
                .group(group)
                .concurrency(1)
                .drain_timeout(Duration::from_millis(300))
                .retry(kafkactor::RetryPolicy::exponential(
                    3,
                    Duration::from_millis(5),
                ))
                .idempotent(Idempotency::shared(store)),
            move |d: Delivery<String>| {
                let (log, go) = (log.clone(), go.clone());
                let payload = d.message().clone();
                let first = d.attempt() == 1;
                async move {
                    if payload == "slow" || (payload == "retry" && first) {
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while !go.load(Ordering::SeqCst) && Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    let acked = !(payload == "retry" && first);
                    log.0.lock().unwrap().push(Handling {
                        app,
                        payload,
                        acked,
                    });
                    if acked {
                        Outcome::Ack
                    } else {
                        Outcome::retry("the first attempt fails")
                    }
                }
            },
        )
        .start()
        .await
        .unwrap()
}

/// Publishes `payload` to `partition` with idempotency key (message id)
/// `id` and Kafka key `key`.
async fn put(app: &App, topic: &str, partition: i32, key: &str, id: &str, payload: &str) {
    app.producer()
        .send(
            Publish::to(topic)
                .partition(partition)
                .key(key)
                .header(header::MESSAGE_ID, id)
                .message(&payload.to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
}

/// Member `a` reads partition 1 (a slow record, then the original of key
/// "K" queued behind it on a's one lane) and then partition 0 (a copy of
/// "K", then five more records); member `b` joins and takes partition 1
/// (the embedded broker gives the newer member the odd partitions) while
/// the slow record runs: past the drain timeout the original is dropped
/// from a's queue. `running`: the original itself is the record running
/// (answering `Retry` once the partition moved), not queued.
async fn a_copy_outlives_its_original(running: bool) -> (Handlings, TestBroker, String, String) {
    let tb = TestBroker::memory(2);
    let (topic, group) = (unique("pay"), unique("billing"));
    tb.topic(&topic).await;
    let switches = Switches::default();
    let store: Arc<dyn IdempotencyStore> = Arc::new(switches.store());
    let (handlings, go) = (Handlings::default(), Arc::new(AtomicBool::new(false)));
    let a = member(&tb, &topic, &group, store.clone(), "a", &handlings, &go).await;
    until_owned("a owns both partitions", Duration::from_secs(5), &a, |n| {
        n == 2
    })
    .await;
    let original = if running { "retry" } else { "original" };
    if !running {
        put(&a, &topic, 1, "s", "slow", "slow").await;
    }
    put(&a, &topic, 1, "o", "K", original).await;
    // The record ahead (or the original itself) is running: "K" is claimed.
    let k = format!("{group}:K");
    eventually("K claimed by a", Duration::from_secs(5), || {
        switches.claimed.lock().unwrap().contains(&k)
    })
    .await;
    put(&a, &topic, 0, "x", "K", "copy").await;
    for i in 0..5 {
        put(&a, &topic, 0, "x", &format!("r{i}"), &format!("r{i}")).await;
    }
    let b = member(&tb, &topic, &group, store, "b", &handlings, &go).await;
    until_owned("b took partition 1", Duration::from_secs(5), &b, |n| n == 1).await;
    until_owned("a gave partition 1 up", Duration::from_secs(5), &a, |n| {
        n == 1
    })
    .await;
    go.store(true, Ordering::SeqCst);
    eventually(
        "the five records after the copy handled",
        Duration::from_secs(10),
        || (0..5).all(|i| handlings.acked(&format!("r{i}")) == 1),
    )
    .await;
    // Not committed past the copy while it is stranded: the lag stays.
    let broker = tb.broker.clone();
    eventually_async("everything committed", Duration::from_secs(10), || {
        let (broker, group, topic) = (broker.clone(), group.clone(), topic.clone());
        async move { broker.lag(&group, &topic).await.unwrap() == 0 }
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    (handlings, tb, topic, group)
}

/// The original of key "K" is queued when its partition is given up: its
/// claim is kept for the copy waiting on the partition a keeps, which is
/// handled (K once, by either member) and committed. Before, the claim
/// was released while the copy stayed parked: never claimed, finished or
/// dropped, its partition's commit stuck there for good (lag 6), and
/// shutdown waited the whole drain timeout.
#[actix::test]
async fn a_copy_parked_behind_a_revoked_original_is_handled() {
    let (handlings, ..) = a_copy_outlives_its_original(false).await;
    let k = handlings.acked("original") + handlings.acked("copy");
    assert_eq!(k, 1, "K handled once: {:?}", handlings.all());
}

/// The original of key "K" is running when its partition is given up and
/// fails (`Retry`) afterwards: the copy is handled then, ahead of the
/// records of its Kafka key behind it. Before, the copy had held nothing
/// back: re-claimed after the later records of its key had passed, it was
/// handled after them.
#[actix::test]
async fn a_copy_of_an_abandoned_original_keeps_its_key_order() {
    let (handlings, ..) = a_copy_outlives_its_original(true).await;
    let on_a: Vec<String> = handlings
        .all()
        .into_iter()
        .filter(|h| h.app == "a" && h.acked && h.payload != "retry")
        .map(|h| h.payload)
        .collect();
    assert_eq!(
        on_a,
        ["copy", "r0", "r1", "r2", "r3", "r4"],
        "{:?}",
        handlings.all()
    );
    assert_eq!(handlings.acked("retry") + handlings.acked("copy"), 1);
}

/// An application whose subscription to `topic` is idempotent over `store`;
/// a record with payload "hold" waits until `go` is set.
async fn idempotent_app(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    store: Flaky,
    go: &Arc<AtomicBool>,
) -> App {
    let go = go.clone();
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic)
                .group(group)
                .idempotent(Idempotency::new(store)),
            move |d: Delivery<String>| {
                let go = go.clone();
                let hold = d.message() == "hold";
                async move {
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while hold && !go.load(Ordering::SeqCst) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap()
}

/// The readiness check of `group`'s idempotency store.
async fn store_check(app: &App, group: &str) -> kafkactor::Check {
    app.health()
        .await
        .checks
        .into_iter()
        .find(|c| c.name == format!("idempotency:{group}"))
        .expect("the store's check")
}

/// Claims failing for two seconds while a partition is held (its key
/// claimed by another member) and new records arrive every 20 ms: claims
/// back off (100 ms, 200 ms, .. up to 5 s) for the new records and the held
/// partition alike. Before, the held partition was claimed every 100 ms
/// and each new batch claimed at once (over 60 calls here).
#[actix::test]
async fn a_failing_store_is_called_with_backoff() {
    let tb = TestBroker::memory(2);
    let (topic, group) = (unique("flaky"), unique("flaky"));
    tb.topic(&topic).await;
    let switches = Switches::default();
    let store = switches.store();
    // Another member holds key "held" (for 3 s): partition 0 waits behind it.
    store
        .claim(
            &[format!("{group}:held")],
            "another member",
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let go = Arc::new(AtomicBool::new(true));
    let app = idempotent_app(&tb, &topic, &group, store, &go).await;
    put(&app, &topic, 0, "h", "held", "held").await;
    eventually("the held partition claimed", Duration::from_secs(5), || {
        switches.claims.load(Ordering::SeqCst) >= 1
    })
    .await;
    switches.claims_down.store(true, Ordering::SeqCst);
    let before = switches.claims.load(Ordering::SeqCst);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(2) {
        put(&app, &topic, 1, &format!("k{i}"), &format!("m{i}"), "new").await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = switches.claims.load(Ordering::SeqCst) - before;
    switches.claims_down.store(false, Ordering::SeqCst);
    // 100 + 200 + 400 + 800 ms: four failures and a fifth call by 2 s,
    // and one more for the scheduling of the calls already failed.
    assert!(
        calls <= 6,
        "{calls} claims in 2 s while the store failed ({i} records published)"
    );
    eventually_async(
        "the store's check passing",
        Duration::from_secs(10),
        || async { store_check(&app, &group).await.ok },
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
}

/// The store fails while the Dispatcher is restarted: once it answers
/// again, the new incarnation's first successful call clears the check.
/// Before, a new incarnation never cleared a failure an old one had set
/// (its own count of failures was 0), and `/health/ready` stayed 503.
#[actix::test]
async fn readiness_recovers_after_a_dispatcher_restart() {
    let tb = TestBroker::memory(1);
    let (topic, group) = (unique("flaky"), unique("flaky"));
    tb.topic(&topic).await;
    let switches = Switches::default();
    switches.claims_down.store(true, Ordering::SeqCst);
    let go = Arc::new(AtomicBool::new(true));
    let app = idempotent_app(&tb, &topic, &group, switches.store(), &go).await;
    put(&app, &topic, 0, "a", "m-1", "first").await;
    eventually_async(
        "the store's check failing",
        Duration::from_secs(10),
        || async { !store_check(&app, &group).await.ok },
    )
    .await;
    let path = format!("subscription:{group}:{topic}/dispatcher");
    app.fail_actor(&path, "test: restart the dispatcher")
        .await
        .unwrap();
    switches.claims_down.store(false, Ordering::SeqCst);
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    put(&app, &topic, 0, "a", "m-2", "second").await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    let check = store_check(&app, &group).await;
    assert!(check.ok, "the check still fails: {}", check.detail);
    assert!(app.health().await.ready);
    app.shutdown().await.unwrap();
}

/// Claims fail while completions succeed (records claimed before finish):
/// the check keeps failing, naming the claims, until a claim succeeds.
/// Before, claims and completions shared one count of failures: a
/// completion's success cleared the check while every claim failed.
#[actix::test]
async fn a_completion_does_not_hide_failing_claims() {
    let tb = TestBroker::memory(1);
    let (topic, group) = (unique("flaky"), unique("flaky"));
    tb.topic(&topic).await;
    let switches = Switches::default();
    let go = Arc::new(AtomicBool::new(false));
    let app = idempotent_app(&tb, &topic, &group, switches.store(), &go).await;
    // Claimed, and held by its handler.
    put(&app, &topic, 0, "a", "m-1", "hold").await;
    eventually("the held record claimed", Duration::from_secs(5), || {
        switches.claims.load(Ordering::SeqCst) >= 1
    })
    .await;
    switches.claims_down.store(true, Ordering::SeqCst);
    let before = switches.claims.load(Ordering::SeqCst);
    put(&app, &topic, 0, "a", "m-2", "after").await;
    // Four claims failed: the next is at least 400 ms away.
    eventually(
        "claims failing for a while",
        Duration::from_secs(10),
        || switches.claims.load(Ordering::SeqCst) >= before + 4,
    )
    .await;
    assert!(!store_check(&app, &group).await.ok);
    // The held record finishes: its key is recorded (a completion succeeds).
    go.store(true, Ordering::SeqCst);
    let broker = tb.broker.clone();
    eventually_async("the held record committed", Duration::from_secs(10), || {
        let (broker, group, topic) = (broker.clone(), group.clone(), topic.clone());
        async move { broker.committed_offsets(&group, &topic).await.unwrap()[0] == Some(1) }
    })
    .await;
    // Until the next claim (failing too), and after it: never ready.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let check = store_check(&app, &group).await;
        assert!(!check.ok && check.detail.contains("claim"), "{check:?}");
        assert!(!app.health().await.ready);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    switches.claims_down.store(false, Ordering::SeqCst);
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    eventually_async("the check passing", Duration::from_secs(10), || async {
        store_check(&app, &group).await.ok
    })
    .await;
    app.shutdown().await.unwrap();
}
