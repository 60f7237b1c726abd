//! A handler that does not answer within the subscription's handler timeout
//! fails that attempt (kind `timeout`), is restarted, and the record goes
//! to the dead-letter topic once its retries are spent; the records behind
//! it keep flowing. On the embedded broker, Apache Kafka and the mock cluster.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor::prelude::*;
use kafkactor::{header, SupervisionEvent};
use support::*;

/// Never answers record 3; acknowledges the others.
struct Stuck {
    log: Log,
}

impl Actor for Stuck {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Stuck {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        self.log.push(Seen::of(&d, "a"));
        let stuck = d.message().id == 3;
        Box::pin(async move {
            if stuck {
                std::future::pending::<()>().await;
            }
            Outcome::Ack
        })
    }
}

async fn a_handler_past_its_timeout_is_restarted_and_the_record_dead_lettered(tb: TestBroker) {
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let events = kafkactor::Events::new();
    events.record();
    let factories = Arc::new(AtomicUsize::new(0));
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .events(events.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .handler_timeout(Duration::from_millis(300))
                .retry(RetryPolicy::exponential(2, Duration::from_millis(10))),
            {
                let (log, factories) = (log.clone(), factories.clone());
                move || {
                    factories.fetch_add(1, Ordering::SeqCst);
                    Stuck { log: log.clone() }
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(20, 1)).await;
    tb.until_committed(&group, &topic, Duration::from_secs(20))
        .await;
    app.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 20, "every record reached the handler");
    assert_eq!(counts[&3], 2, "record 3 was tried twice");
    let dlq = tb.records(&format!("{topic}.dlq")).await;
    assert_eq!(dlq.len(), 1);
    let order: Order = rmp_serde::from_slice(&dlq[0].payload).unwrap();
    assert_eq!(order.id, 3);
    assert_eq!(dlq[0].headers.get_str(header::ERROR_KIND), Some("timeout"));
    assert!(dlq[0]
        .headers
        .get_str(header::ERROR_REASON)
        .is_some_and(|r| r.contains("300ms")));
    // Each timeout re-created the stuck handler.
    let restarts = events
        .recorded()
        .iter()
        .filter(
            |e| matches!(e, SupervisionEvent::Restarted { child, .. } if &**child == "handler-0"),
        )
        .count();
    assert_eq!(restarts, 2, "the handler was restarted after each timeout");
    assert_eq!(factories.load(Ordering::SeqCst), 3);
    // One key, one lane: what came after record 3 was handled after it.
    assert_key_order(&first_handlings(&log.seen()));
}

on_every_broker!(
    a_handler_that_does_not_answer_times_out,
    super::a_handler_past_its_timeout_is_restarted_and_the_record_dead_lettered,
    3
);

/// Never answers records 3 and 6 (one lane each, or one after the other);
/// notes when each of their attempts began.
struct TwoStuck {
    log: Log,
    began: Arc<std::sync::Mutex<Vec<(u64, std::time::Instant)>>>,
}

impl Actor for TwoStuck {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for TwoStuck {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        self.log.push(Seen::of(&d, "a"));
        let id = d.message().id;
        let stuck = id == 3 || id == 6;
        if stuck {
            self.began
                .lock()
                .unwrap()
                .push((id, std::time::Instant::now()));
        }
        Box::pin(async move {
            if stuck {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            Outcome::Ack
        })
    }
}

/// With several lanes busy, each call times out on its own deadline (one
/// timer serves them all): never before the timeout, and soon after it,
/// while the other lanes go on.
async fn stuck_calls_time_out_on_their_own_deadlines(tb: TestBroker) {
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let began: Arc<std::sync::Mutex<Vec<(u64, std::time::Instant)>>> = Arc::default();
    let timeout = Duration::from_millis(400);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(4)
                .handler_timeout(timeout)
                .retry(RetryPolicy::exponential(2, Duration::from_millis(10))),
            {
                let (log, began) = (log.clone(), began.clone());
                move || TwoStuck {
                    log: log.clone(),
                    began: began.clone(),
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(80, 8)).await;
    tb.until_committed(&group, &topic, Duration::from_secs(20))
        .await;
    app.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 80, "every record reached a handler");
    let dlq = tb.records(&format!("{topic}.dlq")).await;
    let mut dead: Vec<u64> = dlq
        .iter()
        .map(|r| rmp_serde::from_slice::<Order>(&r.payload).unwrap().id)
        .collect();
    dead.sort_unstable();
    assert_eq!(dead, [3, 6], "the two stuck records, and only they");
    assert!(dlq
        .iter()
        .all(|r| r.headers.get_str(header::ERROR_KIND) == Some("timeout")));
    let began = began.lock().unwrap().clone();
    for id in [3, 6] {
        let attempts: Vec<std::time::Instant> = began
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, at)| *at)
            .collect();
        assert_eq!(attempts.len(), 2, "record {id} was tried twice");
        let between = attempts[1] - attempts[0];
        assert!(
            between >= timeout,
            "record {id}'s first attempt ended {between:?} after it began, before the {timeout:?} timeout"
        );
        assert!(
            between < timeout + Duration::from_secs(2),
            "record {id}'s first attempt timed out only after {between:?}"
        );
    }
}

on_every_broker!(
    stuck_lanes_time_out_on_their_own_deadlines,
    super::stuck_calls_time_out_on_their_own_deadlines,
    3
);

/// A handler call hangs, and the Dispatcher is restarted while it does:
/// the new incarnation watches that call too, restarts the stuck handler
/// past the timeout, and the record (handed to it again) is handled; the
/// lane goes on. Before, only the current incarnation's calls were
/// watched: the lane stayed blocked for good, nothing more was handled
/// and nothing committed.
#[actix::test]
async fn a_call_hanging_across_a_dispatcher_restart_is_timed_out() {
    let tb = TestBroker::memory(1);
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let acked = Log::default();
    let (counted, log) = (calls.clone(), acked.clone());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(1)
                .handler_timeout(Duration::from_millis(500)),
            move |d: Delivery<Order>| {
                // The very first call never answers.
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                let log = log.clone();
                async move {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    log.push(Seen::of(&d, "a"));
                    Outcome::Ack
                }
            },
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(1, 1)).await;
    eventually("the first call under way", Duration::from_secs(5), || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    let path = format!("subscription:{group}:{topic}/dispatcher");
    app.fail_actor(&path, "test: restart the dispatcher")
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(5, 1)[1..]).await;
    eventually("every record handled", Duration::from_secs(10), || {
        acked.counts().len() == 5
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
}
