//! A handler publishes and replies through its `Delivery`, without a
//! global producer: what it publishes inherits the record's tenant and
//! correlation id, and a reply goes to the topic and partition its request
//! names, with the request's correlation id. An async handler's `?` retries
//! or rejects by the error's kind, in a closure (`async fn`) and in an actor
//! (`Handled`). A publish made once the handler answered is written on its
//! own with the record's context, or refused in a transactional
//! subscription (its transaction is over). On the embedded broker, Apache
//! Kafka and the mock cluster for the first; the rest does not depend on
//! the broker.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use kafkactor::prelude::*;
use kafkactor::testing::TestApp;
use kafkactor::{header, Failure, Handled};
use support::*;

const N: u64 = 200;
const PARTITIONS: i32 = 3;

/// What the handler of the requests does: forwards the order and replies
/// with its id doubled. Written once, `?` failing the attempt.
async fn forward_and_reply(d: Delivery<Order>, out: String) -> Result<(), Failure> {
    let order = d.message();
    d.publish(Publish::to(&out).key(&order.key).message(order)?)
        .await?;
    d.reply(&(order.id * 2)).await?;
    Ok(())
}

/// Reads the forwarded orders: an actor with an async body (`Handled`).
struct Forwarded(Arc<Mutex<HashMap<u64, (String, String)>>>);
impl Actor for Forwarded {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for Forwarded {
    type Result = Handled;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Handled {
        let seen = self.0.clone();
        Handled::later(async move {
            let context = (
                d.correlation_id().unwrap_or("none").to_string(),
                d.tenant().unwrap_or("none").to_string(),
            );
            seen.lock().unwrap().insert(d.message().id, context);
            Ok(())
        })
    }
}

async fn handlers_publish_and_reply(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let (requests, out, replies) = (t.topic("requests"), t.topic("out"), t.topic("replies"));
    tb.topics(&[&requests, &out, &replies]).await;
    let forwarded: Arc<Mutex<HashMap<u64, (String, String)>>> = Arc::default();
    let (target, seen_forwarded) = (out.clone(), forwarded.clone());
    let t = t
        .handle(
            Subscription::to(requests.as_str()).group("responder"),
            move |d: Delivery<Order>| forward_and_reply(d, target.clone()),
        )
        .subscribe(Subscription::to(out.as_str()).group("reader"), move || {
            Forwarded(seen_forwarded.clone())
        })
        .handle(
            Subscription::to(replies.as_str()).group("caller"),
            |_: Delivery<u64>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    t.publish_all(orders(N, 10).iter().map(|order| {
        Publish::to(&requests)
            .key(&order.key)
            .tenant("acme")
            .correlation_id(&format!("c-{}", order.id))
            .header(header::REPLY_TO, &replies)
            .header(
                header::REPLY_PARTITION,
                (order.id as i32 % PARTITIONS).to_string(),
            )
            .message(order)
            .unwrap()
    }))
    .await
    .unwrap();
    t.quiet().await.unwrap();

    let handled = t.calls(&requests);
    assert_eq!(handled.len(), N as usize, "each request handled once");
    assert!(handled.iter().all(|c| c.outcome() == &Outcome::Ack));
    let forwarded = forwarded.lock().unwrap().clone();
    for id in 0..N {
        assert_eq!(
            forwarded[&id],
            (format!("c-{id}"), "acme".to_string()),
            "order {id}'s forward inherits its context"
        );
    }
    let answers = t.calls(&replies);
    assert_eq!(answers.len(), N as usize, "one reply each");
    for reply in &answers {
        let value: u64 = reply.message().unwrap();
        let id = value / 2;
        let correlation = reply.record().headers.get_str(header::CORRELATION_ID);
        assert_eq!(
            correlation,
            Some(format!("c-{id}").as_str()),
            "reply {value}"
        );
        assert_eq!(
            reply.record().partition,
            id as i32 % PARTITIONS,
            "reply {value}'s partition"
        );
    }
    t.shutdown().await.unwrap();
}

on_every_broker!(
    handlers_publish_and_reply_from_their_delivery,
    super::handlers_publish_and_reply,
    super::PARTITIONS
);

/// Fails on purpose by order id: 1 rejected before the async body, 2 by a
/// data error's `?`, 3 retried once by an unavailable service's `?`.
struct ByKind(Log);
impl Actor for ByKind {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for ByKind {
    type Result = Handled;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Handled {
        self.0.push(Seen::of(&d, "by-kind"));
        if d.message().id == 1 {
            return Outcome::reject("order one is refused up front").into();
        }
        Handled::later(async move {
            match (d.message().id, d.attempt()) {
                (2, _) => {
                    let _: u32 = serde_json::from_str("\"two\"")?;
                }
                (3, 1) => Err(kafkactor::Error::Unavailable("the ledger is down".into()))?,
                _ => {}
            }
            Ok(())
        })
    }
}

async fn a_question_mark_retries_or_rejects_by_the_errors_kind(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let seen = log.clone();
    let t = t
        .subscribe(
            Subscription::to(topic.as_str())
                .group("g")
                .retry(RetryPolicy::exponential(3, Duration::from_millis(5))),
            move || ByKind(seen.clone()),
        )
        .start()
        .await
        .unwrap();
    publish_all(t.app(), &topic, &orders(10, 10)).await;
    t.quiet().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 10);
    assert_eq!(counts[&3], 2, "order 3 retried once");
    assert_eq!(
        counts[&2], 1,
        "order 2 not retried: its error is in the data"
    );
    let mut dead: Vec<(String, String)> = Vec::new();
    for letter in t.dead_letters(&topic).await.unwrap() {
        let (failure, order) = (letter.why.clone(), letter.message::<Order>().unwrap());
        assert_eq!(failure.kind, Some(kafkactor::FailureKind::Rejected));
        assert_eq!(failure.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(
            failure.original_offset,
            Some(order.id as i64),
            "one partition's offsets"
        );
        assert_eq!(failure.group, Some(t.group("g")));
        dead.push((failure.kind_name, failure.reason));
    }
    dead.sort();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].0, "rejected");
    assert!(
        dead.iter()
            .any(|(_, r)| r == "order one is refused up front"),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|(_, r)| r.contains("invalid type")),
        "{dead:?}"
    );
    t.shutdown().await.unwrap();
}

on_memory_and_kafka!(
    a_question_mark_retries_or_rejects,
    super::a_question_mark_retries_or_rejects_by_the_errors_kind,
    1
);

/// A delivery kept past its handler's answer.
async fn kept_delivery(tb: &TestBroker, transactional: bool) -> (App, Delivery<Order>) {
    let topic = unique("orders");
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let mut sub = Subscription::to(topic.as_str()).group(unique("g").as_str());
    if transactional {
        sub = sub.transactional();
    }
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(sub, move |d: Delivery<Order>| {
            tx.lock().unwrap().send(d).unwrap();
            async { Outcome::Ack }
        })
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    producer
        .send(
            Publish::to(&topic)
                .correlation_id("c-kept")
                .message(&orders(1, 1)[0])
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let mut kept = None;
    eventually(
        "the delivery is handed out",
        Duration::from_secs(10),
        || {
            kept = rx.try_recv().ok();
            kept.is_some()
        },
    )
    .await;
    (app, kept.unwrap())
}

#[actix::test]
async fn a_publish_after_the_answer_keeps_the_records_context() {
    let tb = TestBroker::memory(2);
    let (app, kept) = kept_delivery(&tb, false).await;
    let later = unique("later");
    let outcome = kept
        .publish(Publish::to(&later).message(&"afterwards").unwrap())
        .await
        .unwrap();
    assert!(
        matches!(outcome, PublishOutcome::Direct { .. }),
        "{outcome:?}"
    );
    let written = tb.records(&later).await;
    assert_eq!(written.len(), 1);
    assert_eq!(
        written[0].headers.get_str(header::CORRELATION_ID),
        Some("c-kept")
    );
    // Not a request: nothing to reply to, a typed error.
    assert_eq!(kept.reply(&1u8).await, Err(kafkactor::Error::NoReplyTo));
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn a_transactional_publish_after_the_answer_is_refused() {
    let tb = TestBroker::memory(2);
    let (app, kept) = kept_delivery(&tb, true).await;
    let later = unique("later");
    let refused = kept
        .publish(Publish::to(&later).message(&"afterwards").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kafkactor::Error::Unavailable(_)),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("transaction is over"),
        "{refused}"
    );
    assert!(tb.records(&later).await.is_empty());
    app.shutdown().await.unwrap();
}
