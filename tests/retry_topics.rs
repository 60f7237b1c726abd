//! Retries through the group's retry topic: with order kept, every key's
//! records are handled in order while keys without failures flow past the
//! failing ones; the retry topic's records carry their attempts and due
//! time; exhausted records are dead-lettered with their first provenance.
//! On the embedded broker and Apache Kafka.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{header, RetryTopic};
use support::*;

/// Whether order `id` of key `k-<key>` fails its first attempt: every
/// fifth record of the first 25 keys (500 of 10,000: 5 %).
fn fails_first(order: &Order) -> bool {
    let key: u64 = order.key[2..].parse().unwrap();
    key < 25 && order.seq % 5 == 2
}

/// The sum of gauge `name`'s samples in `app`'s registry.
fn gauge(app: &kafkactor::App, name: &str) -> i64 {
    app.metrics_registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

/// Asserts that each key's records were first acknowledged in order; a
/// record acknowledged again (one in flight at a kill may be) counts only
/// the first time.
fn assert_first_acks_in_key_order<'a>(acked: impl IntoIterator<Item = (&'a Order, &'a str)>) {
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (order, app) in acked {
        if !seen.insert(order.id) {
            continue;
        }
        if let Some(&prev) = last.get(order.key.as_str()) {
            assert!(
                order.seq > prev,
                "key {} handled {} after {} (by {app})",
                order.key,
                order.seq,
                prev
            );
        }
        last.insert(&order.key, order.seq);
    }
}

/// One acknowledged handling, and when.
#[derive(Debug, Clone)]
struct Acked {
    order: Order,
    attempt: u32,
    at: Instant,
}

async fn ordered_retries_keep_key_order_and_let_other_keys_flow(tb: TestBroker) {
    const N: u64 = 10_000;
    let topic = unique("orders");
    let group = unique("shop");
    tb.topics(&[topic.as_str()]).await;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0u64));
    let behaviour: Behaviour = {
        let (acked, failed) = (acked.clone(), failed.clone());
        Arc::new(move |d: &Delivery<Order>| {
            let order = d.message();
            if d.attempt() == 1 && fails_first(order) {
                *failed.lock().unwrap() += 1;
                return Outcome::retry("fails its first attempt");
            }
            acked.lock().unwrap().push(Acked {
                order: order.clone(),
                attempt: d.attempt(),
                at: Instant::now(),
            });
            Outcome::Ack
        })
    };
    let log = Log::default();
    let policy = RetryPolicy::exponential(3, Duration::from_millis(50))
        .jitter(0.0)
        .via_retry_topic(RetryTopic::Ordered);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(policy),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    let all = orders(N, 100);
    publish_all(&app, &topic, &all).await;
    eventually("keys parked", tb.patience(Duration::from_secs(30)), || {
        gauge(&app, "kafkactor_parked_keys") > 0
    })
    .await;
    eventually(
        "every record acknowledged",
        tb.patience(Duration::from_secs(60)),
        || acked.lock().unwrap().len() as u64 >= N,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    let retry_topic = format!("{topic}.{group}.retry");
    tb.until_committed(&group, &retry_topic, Duration::from_secs(30))
        .await;
    eventually("every key released", Duration::from_secs(10), || {
        gauge(&app, "kafkactor_parked_keys") == 0
    })
    .await;
    app.shutdown().await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_eq!(*failed.lock().unwrap(), 500, "5 % of first attempts failed");
    // Each once.
    let mut once: HashMap<u64, u32> = HashMap::new();
    for a in &acked {
        *once.entry(a.order.id).or_default() += 1;
    }
    assert_eq!(once.len() as u64, N, "every record acknowledged");
    assert!(once.values().all(|&n| n == 1), "each once");
    // In order per key.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for a in &acked {
        if let Some(&prev) = last.get(a.order.key.as_str()) {
            assert!(
                a.order.seq > prev,
                "key {} handled {} after {}",
                a.order.key,
                a.order.seq,
                prev
            );
        }
        last.insert(&a.order.key, a.order.seq);
    }
    // The failed ones on their second attempt.
    for a in acked.iter().filter(|a| fails_first(&a.order)) {
        assert_eq!(a.attempt, 2, "order {} on its second attempt", a.order.id);
    }
    // Keys without failures were not held back: all of them were done
    // while the failing keys' retries were still going.
    let clean_done = acked
        .iter()
        .filter(|a| a.order.key[2..].parse::<u64>().unwrap() >= 25)
        .map(|a| a.at)
        .max()
        .unwrap();
    let failing_done = acked
        .iter()
        .filter(|a| a.order.key[2..].parse::<u64>().unwrap() < 25)
        .map(|a| a.at)
        .max()
        .unwrap();
    assert!(
        clean_done < failing_done,
        "keys without failures finished before the failing keys' retries"
    );
    let retried = tb.records(&retry_topic).await;
    assert!(
        retried.len() >= 500,
        "every failure went through the retry topic"
    );
    for r in retried
        .iter()
        .filter(|r| r.headers.get_str(header::ATTEMPT) == Some("1"))
    {
        assert!(
            r.headers
                .get_str(header::NOT_BEFORE)
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
        assert_eq!(
            r.headers.get_str(header::ORIGINAL_TOPIC),
            Some(topic.as_str())
        );
    }
    assert!(
        tb.records(&format!("{topic}.dlq")).await.is_empty(),
        "nothing dead-lettered"
    );
}

on_memory_and_kafka!(
    ordered_retries_keep_key_order_and_let_other_keys_flow,
    super::ordered_retries_keep_key_order_and_let_other_keys_flow,
    4
);

async fn exhausted_retries_are_dead_lettered_with_their_first_provenance(tb: TestBroker) {
    const N: u64 = 40;
    let topic = unique("payments");
    let group = unique("ledger");
    tb.topics(&[topic.as_str()]).await;
    // Key k-0 always fails; the others never.
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| {
        if d.message().key == "k-0" {
            Outcome::retry(format!("attempt {} failed", d.attempt()))
        } else {
            Outcome::Ack
        }
    });
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(
                    RetryPolicy::exponential(3, Duration::from_millis(10))
                        .jitter(0.0)
                        .via_retry_topic(RetryTopic::Ordered),
                ),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N, 4)).await;
    let dlq = format!("{topic}.dlq");
    tb.until_records(&dlq, (N / 4) as usize).await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();

    let dead = tb.records(&dlq).await;
    assert_eq!(dead.len() as u64, N / 4, "each of k-0's records once");
    let originals: BTreeMap<i64, kafkactor::Record> = tb
        .records(&topic)
        .await
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"k-0"[..]))
        .map(|r| (r.offset, r))
        .collect();
    let mut seqs = Vec::new();
    for r in &dead {
        assert_eq!(
            r.headers.get_str(header::ORIGINAL_TOPIC),
            Some(topic.as_str())
        );
        let offset: i64 = r
            .headers
            .get_str(header::ORIGINAL_OFFSET)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            originals.contains_key(&offset),
            "the first provenance: {offset}"
        );
        assert_eq!(r.headers.get_str(header::ATTEMPT), Some("3"));
        assert_eq!(
            r.headers.get_str(header::ERROR_REASON),
            Some("attempt 3 failed")
        );
        let order: Order = rmp_serde::from_slice(&r.payload).unwrap();
        seqs.push(order.seq);
    }
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted, "dead-lettered in key order");
    // Every other key's records were acknowledged once.
    let others = log.counts();
    assert_eq!(
        others.iter().filter(|(id, _)| *id % 4 != 0).count() as u64,
        N - N / 4
    );
}

on_memory_and_kafka!(
    exhausted_retries_are_dead_lettered_with_their_first_provenance,
    super::exhausted_retries_are_dead_lettered_with_their_first_provenance,
    4
);

#[actix::test]
async fn a_retry_topic_is_refused_where_it_cannot_hold() {
    let tb = TestBroker::memory(1);
    let policy = RetryPolicy::default().via_retry_topic(RetryTopic::Ordered);
    let log = Log::default();
    let refused = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to("t")
                .group("g")
                .retry(policy)
                .transactional(),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("retries in place"),
        "{refused}"
    );
}

async fn ordered_retries_survive_restarts_and_members_joining(tb: TestBroker) {
    const N: u64 = 10_000;
    let topic = unique("orders");
    let group = unique("shop");
    tb.topics(&[topic.as_str()]).await;
    let acked: Arc<Mutex<Vec<(Order, &'static str)>>> = Arc::default();
    let member = |name: &'static str| {
        let acked = acked.clone();
        let behaviour: Behaviour = Arc::new(move |d: &Delivery<Order>| {
            if d.attempt() == 1 && fails_first(d.message()) {
                return Outcome::retry("fails its first attempt");
            }
            acked.lock().unwrap().push((d.message().clone(), name));
            Outcome::Ack
        });
        Kafkactor::builder().broker(tb.broker.clone()).subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(
                    RetryPolicy::exponential(3, Duration::from_millis(50))
                        .jitter(0.0)
                        .via_retry_topic(RetryTopic::Ordered),
                ),
            probe(&Log::default(), name, behaviour),
        )
    };
    let a = member("a").start().await.unwrap();
    publish_all(&a, &topic, &orders(N, 100)).await;
    let acked_len = || acked.lock().unwrap().len() as u64;
    eventually("a under way", tb.patience(Duration::from_secs(30)), || {
        acked_len() >= 1_000
    })
    .await;
    // A's Dispatcher dies: its parking outlives it.
    let dispatcher = format!("subscription:{group}:{topic}/dispatcher");
    a.fail_actor(&dispatcher, "killed by the test")
        .await
        .unwrap();
    // B joins: partitions move with their retry partitions.
    let b = member("b").start().await.unwrap();
    eventually("more handled", tb.patience(Duration::from_secs(30)), || {
        acked_len() >= 4_000
    })
    .await;
    // A's group membership dies: it joins again and rebuilds from the log.
    let connection = format!("subscription:{group}:{topic}/consumer-connection");
    a.fail_actor(&connection, "killed by the test")
        .await
        .unwrap();
    let all_acked = || {
        let acked = acked.lock().unwrap();
        acked
            .iter()
            .map(|(o, _)| o.id)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
    };
    eventually(
        "every record acknowledged",
        tb.patience(Duration::from_secs(90)),
        || all_acked() >= N,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    tb.until_committed(
        &group,
        &format!("{topic}.{group}.retry"),
        Duration::from_secs(30),
    )
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();

    let acked = acked.lock().unwrap().clone();
    // In order per key, counting each record's first acknowledgement
    // (records in flight at a kill may be handled again).
    assert_first_acks_in_key_order(acked.iter().map(|(order, app)| (order, *app)));
    assert!(
        acked.iter().any(|(_, app)| *app == "b"),
        "b took partitions over"
    );
    let again = acked.len() as u64 - N;
    assert!(
        again < N / 10,
        "{again} handled again: only what was in flight at a kill"
    );
}

on_memory_and_kafka!(
    ordered_retries_survive_restarts_and_members_joining,
    super::ordered_retries_survive_restarts_and_members_joining,
    4
);

async fn unordered_retries_let_the_key_go_on(tb: TestBroker) {
    const N: u64 = 40;
    let topic = unique("events");
    let group = unique("audit");
    tb.topics(&[topic.as_str()]).await;
    // The first record of k-0 fails its first attempt; nothing else fails.
    let acked: Arc<Mutex<Vec<Order>>> = Arc::default();
    let behaviour: Behaviour = {
        let acked = acked.clone();
        Arc::new(move |d: &Delivery<Order>| {
            if d.message().id == 0 && d.attempt() == 1 {
                return Outcome::retry("once");
            }
            acked.lock().unwrap().push(d.message().clone());
            Outcome::Ack
        })
    };
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(
                    RetryPolicy::exponential(3, Duration::from_secs(2))
                        .jitter(0.0)
                        .via_retry_topic(RetryTopic::Unordered),
                ),
            probe(&Log::default(), "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N, 4)).await;
    eventually(
        "every record acknowledged",
        tb.patience(Duration::from_secs(30)),
        || acked.lock().unwrap().len() as u64 == N,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    assert_eq!(gauge(&app, "kafkactor_parked_keys"), 0, "nothing parked");
    app.shutdown().await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let k0: Vec<u64> = acked
        .iter()
        .filter(|o| o.key == "k-0")
        .map(|o| o.seq)
        .collect();
    assert_eq!(k0.len() as u64, N / 4, "each of k-0's records once");
    assert_eq!(
        k0.last(),
        Some(&0),
        "k-0's later records went on without it: {k0:?}"
    );
    let retried = tb.records(&format!("{topic}.{group}.retry")).await;
    assert_eq!(
        retried.len(),
        1,
        "only the failed record went through the retry topic"
    );
}

on_memory_and_kafka!(
    unordered_retries_let_the_key_go_on,
    super::unordered_retries_let_the_key_go_on,
    4
);

/// Apache Kafka killed and started again while keys are parked: the
/// retry partitions are read again, every key's records acknowledged in
/// order (first acknowledgements: what was uncommitted at the kill may be
/// handled twice).
#[actix::test]
async fn ordered_retries_survive_kafka_killed_and_restarted() {
    use support::kafka_process::KafkaProcess;
    const N: u64 = 3_000;
    init_tracing();
    let mut kafka = crate::or_skip!(KafkaProcess::start().await);
    let tb = TestBroker::kafka_at(kafka.addr(), 4);
    let (topic, group) = (unique("orders"), unique("shop"));
    tb.topics(&[topic.as_str()]).await;
    let acked: Arc<Mutex<Vec<Order>>> = Arc::default();
    let behaviour: Behaviour = {
        let acked = acked.clone();
        Arc::new(move |d: &Delivery<Order>| {
            if d.attempt() == 1 && fails_first(d.message()) {
                return Outcome::retry("fails its first attempt");
            }
            acked.lock().unwrap().push(d.message().clone());
            Outcome::Ack
        })
    };
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        // Longer than the broker takes to come back: writes ride through.
        .delivery_timeout(Duration::from_secs(180))
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .retry(
                    RetryPolicy::exponential(3, Duration::from_millis(50))
                        .jitter(0.0)
                        .via_retry_topic(RetryTopic::Ordered),
                ),
            probe(&Log::default(), "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N, 100)).await;
    let distinct = || {
        let acked = acked.lock().unwrap();
        acked
            .iter()
            .map(|o| o.id)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
    };
    eventually(
        "a third acknowledged",
        tb.patience(Duration::from_secs(30)),
        || distinct() >= N / 3,
    )
    .await;
    kafka.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.restart().await;
    eventually(
        "every record acknowledged",
        KafkaProcess::recovery(),
        || distinct() >= N,
    )
    .await;
    tb.until_committed(&group, &topic, KafkaProcess::recovery())
        .await;
    app.shutdown().await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_first_acks_in_key_order(acked.iter().map(|order| (order, "a")));
}
