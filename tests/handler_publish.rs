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

/// A reply as its reader saw it: (value, correlation id, partition).
type Replies = Arc<Mutex<Vec<(u64, String, i32)>>>;

async fn handlers_publish_and_reply(tb: TestBroker) {
    let (requests, out, replies) = (unique("requests"), unique("out"), unique("replies"));
    tb.topics(&[&requests, &out, &replies]).await;
    let forwarded: Arc<Mutex<HashMap<u64, (String, String)>>> = Arc::default();
    let answers: Replies = Arc::default();
    let (target, seen_forwarded, seen_replies) = (out.clone(), forwarded.clone(), answers.clone());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(requests.as_str()).group(unique("responder").as_str()),
            move |d: Delivery<Order>| forward_and_reply(d, target.clone()),
        )
        .subscribe(
            Subscription::to(out.as_str()).group(unique("reader").as_str()),
            move || Forwarded(seen_forwarded.clone()),
        )
        .handle(
            Subscription::to(replies.as_str()).group(unique("caller").as_str()),
            move |d: Delivery<u64>| {
                seen_replies.lock().unwrap().push((
                    *d.message(),
                    d.correlation_id().unwrap_or("none").to_string(),
                    d.partition(),
                ));
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    for order in orders(N, 10) {
        let request = Publish::to(&requests)
            .key(&order.key)
            .tenant("acme")
            .correlation_id(&format!("c-{}", order.id))
            .header(header::REPLY_TO, &replies)
            .header(
                header::REPLY_PARTITION,
                (order.id as i32 % PARTITIONS).to_string(),
            )
            .message(&order)
            .unwrap();
        producer.send(request).await.unwrap().unwrap();
    }
    eventually(
        "every request forwarded and answered",
        tb.patience(Duration::from_secs(20)),
        || {
            forwarded.lock().unwrap().len() == N as usize
                && answers.lock().unwrap().len() >= N as usize
        },
    )
    .await;
    app.shutdown().await.unwrap();

    let forwarded = forwarded.lock().unwrap();
    for id in 0..N {
        assert_eq!(
            forwarded[&id],
            (format!("c-{id}"), "acme".to_string()),
            "order {id}'s forward inherits its context"
        );
    }
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), N as usize, "one reply each: {answers:?}");
    for (value, correlation, partition) in answers.iter() {
        let id = value / 2;
        assert_eq!(correlation, &format!("c-{id}"), "reply {value}");
        assert_eq!(
            *partition,
            id as i32 % PARTITIONS,
            "reply {value}'s partition"
        );
    }
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

#[actix::test]
async fn a_question_mark_retries_or_rejects_by_the_errors_kind() {
    let tb = TestBroker::memory(1);
    let topic = unique("orders");
    let group = unique("g");
    let log = Log::default();
    let seen = log.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(RetryPolicy::exponential(3, Duration::from_millis(5))),
            move || ByKind(seen.clone()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(10, 10)).await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 10);
    assert_eq!(counts[&3], 2, "order 3 retried once");
    assert_eq!(
        counts[&2], 1,
        "order 2 not retried: its error is in the data"
    );
    let letters = tb.records(&format!("{topic}.dlq")).await;
    let mut dead: Vec<(String, String)> = Vec::new();
    for r in &letters {
        let failure = r.dead_lettered().expect("a dead letter");
        let order: Order = r.decode().unwrap();
        assert_eq!(failure.kind, Some(kafkactor::FailureKind::Rejected));
        assert_eq!(failure.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(
            failure.original_offset,
            Some(order.id as i64),
            "one partition's offsets"
        );
        assert_eq!(failure.group.as_deref(), Some(group.as_str()));
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
}

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
