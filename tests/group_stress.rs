//! Consumer groups under churn: members join and leave at random while
//! 20,000 records flow through slow handlers with `max_in_flight(1)`. No
//! record is handled by two members at once, per-key order holds across the
//! whole group, duplicates stay within what was in flight (none, when every
//! member leaves by shutting down), and no partition is given up past its
//! drain timeout while handlers finish well within it. On the embedded
//! broker and Apache Kafka (the mock cluster refuses commits during a
//! rebalance, so it redelivers by design).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use support::*;

const RECORDS: u64 = 20_000;
const KEYS: u64 = 200;

/// Warnings that a partition was given up undrained, as logged.
static GIVEN_UP: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Collects the warnings saying a revoked partition was given up past its
/// drain timeout (the connection's and the Kafka client's).
struct GivenUp;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GivenUp {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("drain timeout passed")
            || message.0.contains("revoke deadline passed")
        {
            GIVEN_UP.lock().unwrap().push(message.0);
        }
    }
}

fn watch_warnings() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::from_default_env()),
        )
        .with(GivenUp)
        .try_init();
}

use tracing_subscriber::Layer as _;

/// One handling: which record, by which member, in global start order.
#[derive(Debug, Clone)]
struct Handling {
    id: u64,
    key: String,
    seq: u64,
    member: usize,
}

#[derive(Default)]
struct Ledger {
    handlings: Vec<Handling>,
    /// Records being handled now, and by whom.
    running: HashMap<u64, usize>,
    /// Records two members handled at the same time.
    overlaps: Vec<(u64, usize, usize)>,
}

type Shared = Arc<Mutex<Ledger>>;

async fn member(tb: &TestBroker, topic: &str, group: &str, n: usize, ledger: &Shared) -> App {
    let ledger = ledger.clone();
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic)
                .group(group)
                .concurrency(2)
                .max_in_flight(1),
            move |d: Delivery<Order>| {
                let ledger = ledger.clone();
                let o = d.message().clone();
                {
                    let mut l = ledger.lock().unwrap();
                    if let Some(&other) = l.running.get(&o.id) {
                        l.overlaps.push((o.id, other, n));
                    }
                    l.running.insert(o.id, n);
                    l.handlings.push(Handling {
                        id: o.id,
                        key: o.key.clone(),
                        seq: o.seq,
                        member: n,
                    });
                }
                async move {
                    // Slow, and well within the drain timeout.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let mut l = ledger.lock().unwrap();
                    if l.running.get(&o.id) == Some(&n) {
                        l.running.remove(&o.id);
                    }
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap()
}

async fn churn(tb: TestBroker) {
    watch_warnings();
    let (topic, group) = (unique("events"), unique("churn"));
    tb.topics(&[&topic]).await;
    let ledger = Shared::default();
    let publisher = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let all = orders(RECORDS, KEYS);

    let mut members: Vec<(usize, App)> = Vec::new();
    let mut next = 0;
    for _ in 0..2 {
        members.push((next, member(&tb, &topic, &group, next, &ledger).await));
        next += 1;
    }
    // Records flow in the background, a thousand at a time.
    let publishing = {
        let producer = publisher.producer();
        let (topic, all) = (topic.clone(), all.clone());
        actix::spawn(async move {
            for chunk in all.chunks(1_000) {
                let sent: Vec<_> = chunk
                    .iter()
                    .map(|o| {
                        producer.send(Publish::to(topic.as_str()).key(&o.key).message(o).unwrap())
                    })
                    .collect();
                for s in sent {
                    s.await.unwrap().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Members join and leave at random (seeded), one change every 0.5-1.5 s.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut changes = 0;
    let deadline = Instant::now() + tb.patience(Duration::from_secs(60));
    let handled = |ledger: &Shared| {
        let l = ledger.lock().unwrap();
        l.handlings
            .iter()
            .map(|h| h.id)
            .collect::<HashSet<_>>()
            .len() as u64
    };
    while changes < 10 && handled(&ledger) < RECORDS * 9 / 10 {
        assert!(Instant::now() < deadline, "the churn did not finish");
        tokio::time::sleep(Duration::from_millis(rng.u64(500..1_500))).await;
        let join = members.len() == 1 || (members.len() < 4 && rng.bool());
        if join {
            members.push((next, member(&tb, &topic, &group, next, &ledger).await));
            next += 1;
        } else {
            let (_, leaving) = members.remove(rng.usize(..members.len()));
            leaving.shutdown().await.unwrap();
        }
        changes += 1;
    }
    publishing.await.unwrap();
    eventually(
        "every record handled",
        tb.patience(Duration::from_secs(60)),
        || handled(&ledger) == RECORDS,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    for (_, m) in members {
        m.shutdown().await.unwrap();
    }
    publisher.shutdown().await.unwrap();

    let l = ledger.lock().unwrap();
    assert!(
        l.overlaps.is_empty(),
        "records handled by two members at once: {:?}",
        l.overlaps
    );
    let mut times: HashMap<u64, usize> = HashMap::new();
    for h in &l.handlings {
        *times.entry(h.id).or_default() += 1;
    }
    let duplicates = times.values().filter(|&&n| n > 1).count();
    // Every member left by shutting down: it drained and committed first,
    // so nothing was in flight to be handled again.
    assert_eq!(
        duplicates, 0,
        "records handled twice ({changes} membership changes)"
    );
    // Per key, across members, in handling order.
    let mut last: HashMap<&str, (u64, usize)> = HashMap::new();
    for h in &l.handlings {
        if let Some(&(seq, by)) = last.get(h.key.as_str()) {
            assert!(
                h.seq > seq,
                "key {} handled seq {} (member {}) after seq {seq} (member {by})",
                h.key,
                h.seq,
                h.member
            );
        }
        last.insert(&h.key, (h.seq, h.member));
    }
    let members_used: HashSet<usize> = l.handlings.iter().map(|h| h.member).collect();
    assert!(
        members_used.len() >= 3,
        "the churn moved partitions among {} members only",
        members_used.len()
    );
    let given_up = GIVEN_UP.lock().unwrap();
    assert!(
        given_up.is_empty(),
        "partitions given up past their drain timeout: {given_up:?}"
    );
    eprintln!(
        "{RECORDS} records, {changes} membership changes, {} members, {duplicates} duplicates",
        members_used.len()
    );
}

#[actix::test]
async fn members_join_and_leave_at_random_on_the_embedded_broker() {
    churn(TestBroker::memory(6)).await
}

#[actix::test]
async fn members_join_and_leave_at_random_on_kafka() {
    churn(crate::or_skip!(TestBroker::kafka(6))).await
}
