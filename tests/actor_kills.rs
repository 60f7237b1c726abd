//! Killing each kind of actor in the middle of a 10,000-record stream on the
//! embedded broker: nothing is lost, every duplicate is accounted for by work
//! in flight at the moment of the kill, and killing a handler or the
//! dispatcher does not make the consumer leave its group.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{header, SupervisionEvent};
use support::*;

const N: u64 = 10_000;
const KEYS: u64 = 100;
const PARTITIONS: i32 = 3;

/// Which actor to kill, and when.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Handler,
    Dispatcher,
    ConsumerConnection,
    Producer,
    ProducerConnection,
    DeadLetter,
}

struct Run {
    log: Log,
    /// Successful publish calls per id (more than one if the publisher resent).
    published: BTreeMap<u64, u32>,
    /// Publish calls that failed and were resent.
    publish_errors: u32,
    dead_letters: Vec<kafkactor::Record>,
    /// Committed offsets per partition just before the kill.
    committed_before: HashMap<i32, i64>,
    /// Log length once the kill was observed.
    handled_at_kill: usize,
    generation_before: u64,
    generation_after: u64,
}

fn rejected(id: u64) -> bool {
    id % 97 == 0
}

async fn run(target: Target) -> Run {
    let broker = Broker::memory_with_partitions(PARTITIONS).unwrap();
    let topic = unique("orders");
    let group = unique("billing");
    let log = Log::default();
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| {
        if rejected(d.message().id) {
            Outcome::reject("rejected by the test")
        } else {
            Outcome::Ack
        }
    });
    let consumer_side = !matches!(target, Target::Producer | Target::ProducerConnection);
    let published = Rc::new(RefCell::new(BTreeMap::<u64, u32>::new()));
    if consumer_side {
        // A backlog, so the subscription has plenty in flight when the kill lands.
        let publisher = Kafkactor::builder()
            .broker(broker.clone())
            .start()
            .await
            .unwrap();
        publish_all(&publisher, &topic, &orders(N, KEYS)).await;
        publisher.shutdown().await.unwrap();
        published.borrow_mut().extend((0..N).map(|id| (id, 1)));
    }
    let app = Rc::new(
        Kafkactor::builder()
            .broker(broker.clone())
            .subscribe(
                Subscription::to(topic.as_str())
                    .group(group.as_str())
                    .concurrency(8)
                    .max_in_flight(500)
                    .commit_interval(Duration::from_millis(10)),
                probe(&log, "a", behaviour),
            )
            .start()
            .await
            .unwrap(),
    );
    let memory = broker.as_memory().unwrap();

    // Publish concurrently with consumption, resending what fails.
    let publish_errors = Rc::new(RefCell::new(0u32));
    let to_publish = if consumer_side {
        Vec::new()
    } else {
        orders(N, KEYS)
    };
    let publisher = {
        let (app, topic, published, publish_errors) = (
            app.clone(),
            topic.clone(),
            published.clone(),
            publish_errors.clone(),
        );
        actix::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            for o in to_publish {
                loop {
                    let publish = Publish::to(topic.as_str()).key(&o.key).message(&o).unwrap();
                    match app.producer().send(publish).await {
                        Ok(Ok(_)) => break,
                        other => {
                            assert!(other.map_or(true, |r| r.unwrap_err().is_retriable()));
                            *publish_errors.borrow_mut() += 1;
                            assert!(Instant::now() < deadline, "publisher gave up");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                *published.borrow_mut().entry(o.id).or_default() += 1;
            }
        })
    };

    // Mid-stream, kill the target.
    match target {
        Target::Producer | Target::ProducerConnection => {
            eventually("publishing is under way", Duration::from_secs(30), || {
                published.borrow().len() >= 3_000
            })
            .await
        }
        _ => {
            // Under way means handled and committed: a fast run handles
            // thousands of records before the first commit tick.
            eventually("handling is under way", Duration::from_secs(30), || {
                log.len() >= 3_000
                    && (0..PARTITIONS).any(|p| memory.committed(&group, &topic, p).unwrap_or(0) > 0)
            })
            .await
        }
    }
    let sub = format!("subscription:{group}:{topic}");
    let (path, child) = match target {
        Target::Handler => (format!("{sub}/handlers/handler-3"), "handler-3"),
        Target::Dispatcher => (format!("{sub}/dispatcher"), "dispatcher"),
        Target::ConsumerConnection => (format!("{sub}/consumer-connection"), "consumer-connection"),
        Target::Producer => ("producer".to_string(), "producer"),
        Target::ProducerConnection => ("producer-connection".to_string(), "producer-connection"),
        Target::DeadLetter => ("dead-letter".to_string(), "dead-letter"),
    };
    let mut events = app.events().subscribe();
    let committed_before: HashMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, memory.committed(&group, &topic, p).unwrap_or(0)))
        .collect();
    let generation_before = memory.generation(&group);
    app.fail_actor(&path, "killed by the test").await.unwrap();
    let restarted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.unwrap() {
                SupervisionEvent::Failed { child: c, exit, .. } if &*c == child => {
                    assert_eq!(exit.to_string(), "failed: killed by the test");
                }
                SupervisionEvent::Restarted { child: c, .. } if &*c == child => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(restarted.is_ok(), "{child} was restarted");
    let handled_at_kill = log.len();

    publisher.await.unwrap();
    let expected = N as usize;
    eventually("every record handled", Duration::from_secs(60), || {
        log.counts().len() >= expected
    })
    .await;
    eventually("all committed", Duration::from_secs(20), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    let generation_after = memory.generation(&group);
    let app = Rc::try_unwrap(app).unwrap();
    app.shutdown().await.unwrap();

    let published = published.borrow().clone();
    let publish_errors = *publish_errors.borrow();
    Run {
        log,
        published,
        publish_errors,
        dead_letters: memory.records(&format!("{topic}.dlq")),
        committed_before,
        handled_at_kill,
        generation_before,
        generation_after,
    }
}

impl Run {
    /// Every record handled; rejected ones dead-lettered; returns the ids
    /// handled more than once.
    fn assert_nothing_lost(&self) -> Vec<u64> {
        assert_eq!(self.published.len(), N as usize);
        let counts = self.log.counts();
        assert_eq!(counts.len(), N as usize, "every record was handled");
        let dead: BTreeMap<u64, usize> =
            self.dead_letters.iter().fold(BTreeMap::new(), |mut m, r| {
                let o: Order = rmp_serde::from_slice(&r.payload).unwrap();
                assert_eq!(r.headers.get_str(header::ERROR_KIND), Some("rejected"));
                *m.entry(o.id).or_default() += 1;
                m
            });
        let expected_dead: Vec<u64> = (0..N).filter(|&id| rejected(id)).collect();
        assert_eq!(
            dead.keys().copied().collect::<Vec<_>>(),
            expected_dead,
            "rejects dead-lettered"
        );
        assert_key_order(&first_handlings(&self.log.seen()));
        eprintln!(
            "handled at kill {}, handlings {}, publish errors {}, dead letters {}",
            self.handled_at_kill,
            self.log.len(),
            self.publish_errors,
            self.dead_letters.len()
        );
        counts
            .into_iter()
            .filter(|&(_, c)| c > 1)
            .map(|(id, _)| id)
            .collect()
    }

    /// Duplicates are records handled before the kill whose offsets were not
    /// yet committed when it happened.
    fn assert_duplicates_were_in_flight(&self, duplicates: &[u64]) {
        let seen = self.log.seen();
        for id in duplicates {
            let first = seen.iter().position(|s| s.id == *id).unwrap();
            let s = &seen[first];
            assert!(
                first < self.handled_at_kill,
                "duplicate {id} was first handled before the kill"
            );
            assert!(
                s.offset >= self.committed_before[&s.partition],
                "duplicate {id} (partition {} offset {}) was not committed before the kill",
                s.partition,
                s.offset
            );
        }
    }
}

#[actix::test]
async fn killing_a_handler_loses_nothing_and_duplicates_nothing() {
    let run = run(Target::Handler).await;
    let duplicates = run.assert_nothing_lost();
    assert!(
        duplicates.is_empty(),
        "the record in the killed handler is retried, not duplicated: {duplicates:?}"
    );
    assert_eq!(run.generation_before, run.generation_after, "no rebalance");
}

#[actix::test]
async fn killing_the_dispatcher_redelivers_only_in_flight_records() {
    let run = run(Target::Dispatcher).await;
    let duplicates = run.assert_nothing_lost();
    run.assert_duplicates_were_in_flight(&duplicates);
    assert!(
        duplicates.len() <= 500,
        "at most max_in_flight records redelivered: {}",
        duplicates.len()
    );
    assert_eq!(run.generation_before, run.generation_after, "no rebalance");
}

#[actix::test]
async fn killing_the_consumer_connection_resumes_from_committed_offsets() {
    let run = run(Target::ConsumerConnection).await;
    let duplicates = run.assert_nothing_lost();
    assert!(
        run.committed_before.values().sum::<i64>() > 0,
        "progress was committed before the kill"
    );
    run.assert_duplicates_were_in_flight(&duplicates);
    assert!(
        run.generation_after > run.generation_before,
        "the connection rejoined its group"
    );
}

#[actix::test]
async fn killing_the_producer_loses_no_publish() {
    let run = run(Target::Producer).await;
    let duplicates = run.assert_nothing_lost();
    // Only publishes that failed (and were resent) may appear twice.
    assert!(
        duplicates.len() as u32 <= run.publish_errors,
        "{duplicates:?}"
    );
    assert_eq!(run.generation_before, run.generation_after);
}

#[actix::test]
async fn killing_the_producer_connection_is_invisible_to_publishers() {
    let run = run(Target::ProducerConnection).await;
    let duplicates = run.assert_nothing_lost();
    assert!(duplicates.is_empty(), "{duplicates:?}");
    assert_eq!(
        run.publish_errors, 0,
        "the producer resent to the restarted connection"
    );
}

#[actix::test]
async fn killing_the_dead_letter_actor_loses_no_dead_letter() {
    let run = run(Target::DeadLetter).await;
    let duplicates = run.assert_nothing_lost();
    assert!(duplicates.is_empty(), "{duplicates:?}");
    assert_eq!(run.generation_before, run.generation_after);
}

#[actix::test]
async fn an_unknown_actor_path_is_its_own_error() {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .start()
        .await
        .unwrap();
    let err = app.fail_actor("no-such/actor", "test").await;
    assert!(
        matches!(err, Err(kafkactor::Error::UnknownActor(ref p)) if p == "no-such/actor"),
        "{err:?}"
    );
    app.shutdown().await.unwrap();
}

/// A member's consumer connection fails while records it read wait in its
/// lane, and its partition moves to another member: the records it had
/// queued are dropped at once (the other member reads them again from the
/// committed offset), not handled by both side by side. Before, the lane
/// went on with its stale queue until a new connection fed it again: the
/// two members handled the same records at once, first handlings out of
/// key order.
#[actix::test]
async fn a_failed_connection_leaves_its_queued_records_to_the_next_owner() {
    let tb = TestBroker::memory(1);
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    // Each record takes a few milliseconds, awaited: the member's thread
    // serves its other actors meanwhile.
    let member = |name: &'static str, pause: u64| {
        let log = log.clone();
        Kafkactor::builder().broker(tb.broker.clone()).handle(
            Subscription::to(topic.as_str()).group(group.as_str()),
            move |d: Delivery<Order>| {
                log.push(Seen::of(&d, name));
                async move {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    Outcome::Ack
                }
            },
        )
    };
    let a = member("a", 10).start().await.unwrap();
    until_owned("a owns the partition", Duration::from_secs(5), &a, |n| {
        n == 1
    })
    .await;
    // b joins and stands by (one partition); a's new connection will join
    // after it, so b takes the partition over.
    let b = member("b", 0).start().await.unwrap();
    publish_all(&a, &topic, &orders(300, 1)).await;
    eventually("a is under way", Duration::from_secs(10), || {
        log.len() >= 20
    })
    .await;
    let path = format!("subscription:{group}:{topic}/consumer-connection");
    a.fail_actor(&path, "killed by the test").await.unwrap();
    let handled_by_a = log.seen().iter().filter(|s| s.app == "a").count();
    eventually("every record handled", Duration::from_secs(30), || {
        log.counts().len() == 300
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    let seen = log.seen();
    let after = seen.iter().filter(|s| s.app == "a").count() - handled_by_a;
    assert!(
        after <= 1,
        "a handled {after} records of its stale queue after its connection failed"
    );
    assert_key_order(&first_handlings(&seen));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
