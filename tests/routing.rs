//! Dispatch by message type: several types on one topic are routed by the
//! type-name header to the matching `Handler<Delivery<T>>`; JSON and
//! MessagePack records mix; records from other producers (no kafkactor
//! headers) are decoded with the subscription's default content type.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use kafkactor::prelude::*;
use kafkactor::testing::TestApp;
use kafkactor::{header, ContentType, FailureKind};
use serde::{Deserialize, Serialize};
use support::*;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct OrderPlaced {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct OrderCancelled {
    id: u64,
    reason: String,
}

#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn note(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

struct Orders(Journal);

impl Actor for Orders {
    type Context = Context<Self>;
}

impl Handler<Delivery<OrderPlaced>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<OrderPlaced>, _: &mut Context<Self>) -> Outcome {
        self.0.note(format!("placed {}", d.message().id));
        Outcome::Ack
    }
}

impl Handler<Delivery<OrderCancelled>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<OrderCancelled>, _: &mut Context<Self>) -> Outcome {
        let m = d.message();
        self.0.note(format!("cancelled {} ({})", m.id, m.reason));
        Outcome::Ack
    }
}

async fn several_types_on_one_topic_are_routed_by_type_name(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let topic = t.topic("orders");
    tb.topics(&[&topic]).await;
    let journal = Journal::default();
    let t = t
        .subscribe_routes(
            Subscription::to(topic.as_str()).group("g").concurrency(2),
            Routes::new()
                .route::<OrderPlaced>()
                .route::<OrderCancelled>(),
            {
                let journal = journal.clone();
                move || Orders(journal.clone())
            },
        )
        .start()
        .await
        .unwrap();
    let to = topic.as_str();
    t.publish_all([
        Publish::to(to)
            .key("o1")
            .message(&OrderPlaced { id: 1 })
            .unwrap(),
        Publish::to(to)
            .key("o1")
            .json()
            .message(&OrderCancelled {
                id: 1,
                reason: "late".into(),
            })
            .unwrap(),
        Publish::to(to)
            .key("o1")
            .message(&OrderPlaced { id: 2 })
            .unwrap(),
        // No type-name header and two types accepted: dead-lettered, never guessed.
        Publish::to(to).key("o1").payload("?"),
    ])
    .await
    .unwrap();
    t.quiet().await.unwrap();
    assert_eq!(
        *journal.0.lock().unwrap(),
        vec!["placed 1", "cancelled 1 (late)", "placed 2"],
        "same key, handled in order, each by its own handler"
    );
    let dead = t.dead_letters(&topic).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].why.kind, Some(FailureKind::Unroutable));
    assert_eq!(t.lag("g", &topic).await.unwrap(), 0, "all committed");
    t.shutdown().await.unwrap();
}

on_every_broker!(
    several_types_on_one_topic,
    super::several_types_on_one_topic_are_routed_by_type_name,
    2
);

#[actix::test]
async fn records_without_kafkactor_headers_use_the_default_content_type() {
    let broker = Broker::memory();
    let topic = unique("legacy");
    let group = unique("g");
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .default_content_type(ContentType::Json),
            {
                let got = got.clone();
                move |d: Delivery<OrderPlaced>| {
                    got.lock()
                        .unwrap()
                        .push((d.message().id, d.message_id().map(str::to_string)));
                    async { Ok::<(), std::io::Error>(()) }
                }
            },
        )
        .start()
        .await
        .unwrap();
    // A plain record as another client would write it: JSON, no headers.
    broker.create_topic(&topic, 3).await.unwrap();
    app.producer()
        .send(Publish::to(topic.as_str()).payload(r#"{"id":41}"#))
        .await
        .unwrap()
        .unwrap();
    app.producer()
        .send(Publish::to(topic.as_str()).payload(r#"{"id":42}"#))
        .await
        .unwrap()
        .unwrap();
    let memory = broker.as_memory().unwrap();
    eventually("both handled", Duration::from_secs(10), || {
        got.lock().unwrap().len() == 2
    })
    .await;
    app.shutdown().await.unwrap();
    let mut ids: Vec<u64> = got.lock().unwrap().iter().map(|(id, _)| *id).collect();
    ids.sort();
    assert_eq!(ids, vec![41, 42]);
    assert!(memory.records(&format!("{topic}.dlq")).is_empty());
}

#[actix::test]
async fn one_subscription_to_several_topics() {
    let broker = Broker::memory();
    let (a, b) = (unique("eu-orders"), unique("us-orders"));
    let group = unique("g");
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to([a.as_str(), b.as_str()])
                .group(group.as_str())
                .concurrency(3),
            {
                let got = got.clone();
                move |d: Delivery<OrderPlaced>| {
                    got.lock()
                        .unwrap()
                        .push((d.topic().to_string(), d.message().id));
                    async { Outcome::Ack }
                }
            },
        )
        .start()
        .await
        .unwrap();
    for id in 0..10 {
        let topic = if id % 2 == 0 { a.as_str() } else { b.as_str() };
        app.producer()
            .send(
                Publish::to(topic)
                    .key(id.to_string())
                    .message(&OrderPlaced { id })
                    .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
    }
    eventually("all handled", Duration::from_secs(10), || {
        got.lock().unwrap().len() == 10
    })
    .await;
    app.shutdown().await.unwrap();
    for (topic, id) in got.lock().unwrap().iter() {
        assert_eq!(topic, if id % 2 == 0 { &a } else { &b });
    }
}

mod billing {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Event {
        pub amount: u64,
    }
}

mod shipping {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub struct Event {
        pub parcel: String,
    }
}

/// Handles both `Event`s.
struct Events2(Journal);

impl Actor for Events2 {
    type Context = Context<Self>;
}

impl Handler<Delivery<billing::Event>> for Events2 {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<billing::Event>, _: &mut Context<Self>) -> Outcome {
        self.0.note(format!("billed {}", d.message().amount));
        Outcome::Ack
    }
}

impl Handler<Delivery<shipping::Event>> for Events2 {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<shipping::Event>, _: &mut Context<Self>) -> Outcome {
        self.0.note(format!("shipped {}", d.message().parcel));
        Outcome::Ack
    }
}

/// Two routed types with one type name (`billing::Event`, `shipping::Event`)
/// are refused at start, naming both; `route_named` tells them apart.
#[actix::test]
async fn colliding_type_names_are_refused_and_route_named_resolves_them() {
    let journal = Journal::default();
    let colliding = Routes::<Events2>::new()
        .route::<billing::Event>()
        .route::<shipping::Event>();
    let started = Kafkactor::builder()
        .broker(Broker::memory())
        .subscribe_routes(Subscription::to("events").group("g"), colliding, {
            let j = journal.clone();
            move || Events2(j.clone())
        })
        .start()
        .await;
    let Err(Error::Config(reason)) = started else {
        panic!("expected Error::Config, got {started:?}");
    };
    assert!(
        reason.contains("billing::Event") && reason.contains("shipping::Event"),
        "{reason}"
    );
    assert!(reason.contains("route_named"), "{reason}");

    let named = Routes::<Events2>::new()
        .route_named::<billing::Event>("billing.Event")
        .route_named::<shipping::Event>("shipping.Event");
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .subscribe_routes(Subscription::to("events").group("g"), named, {
            let j = journal.clone();
            move || Events2(j.clone())
        })
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    // The type name is set after the message (which stamps its own).
    let bill = Publish::to("events")
        .message(&billing::Event { amount: 5 })
        .unwrap()
        .type_name("billing.Event");
    let ship = Publish::to("events")
        .message(&shipping::Event {
            parcel: "p-1".into(),
        })
        .unwrap()
        .type_name("shipping.Event");
    producer.send(bill).await.unwrap().unwrap();
    producer.send(ship).await.unwrap().unwrap();
    eventually("both handled", Duration::from_secs(5), || {
        journal.0.lock().unwrap().len() == 2
    })
    .await;
    app.shutdown().await.unwrap();
    let mut seen = journal.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["billed 5", "shipped p-1"]);
}

impl Handler<Delivery<Raw>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<Raw>, _: &mut Context<Self>) -> Outcome {
        let kind = d.headers().get_str(header::TYPE_NAME).unwrap_or("none");
        self.0
            .note(format!("raw {kind} {} bytes", d.message().len()));
        Outcome::Ack
    }
}

/// `Delivery<Raw>` takes every record undecoded, whatever its type name;
/// beside typed routes, every record none of them takes.
#[actix::test]
async fn a_raw_route_takes_what_no_typed_route_takes() {
    let broker = Broker::memory();
    let (alone, beside) = (unique("raw-alone"), unique("raw-beside"));
    let journal = Journal::default();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe::<_, Raw, _>(
            Subscription::to(alone.as_str()).group(unique("g").as_str()),
            {
                let journal = journal.clone();
                move || Orders(journal.clone())
            },
        )
        .subscribe_routes(
            Subscription::to(beside.as_str()).group(unique("g").as_str()),
            Routes::new().route::<OrderPlaced>().route::<Raw>(),
            {
                let journal = journal.clone();
                move || Orders(journal.clone())
            },
        )
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    for topic in [alone.as_str(), beside.as_str()] {
        for publish in [
            Publish::to(topic).message(&OrderPlaced { id: 7 }).unwrap(),
            Publish::to(topic)
                .json()
                .message(&OrderCancelled {
                    id: 7,
                    reason: "x".into(),
                })
                .unwrap(),
            Publish::to(topic).payload(&b"not kafkactor's"[..]),
        ] {
            producer.send(publish).await.unwrap().unwrap();
        }
    }
    eventually("every record handled", Duration::from_secs(10), || {
        journal.0.lock().unwrap().len() == 6
    })
    .await;
    let mut seen = journal.0.lock().unwrap().clone();
    seen.sort();
    let placed = ContentType::MsgPack.encode(&OrderPlaced { id: 7 }).unwrap();
    let cancelled = r#"{"id":7,"reason":"x"}"#;
    let mut expected = vec![
        format!("raw OrderPlaced {} bytes", placed.len()),
        format!("raw OrderCancelled {} bytes", cancelled.len()),
        "raw none 15 bytes".to_string(),
        "placed 7".to_string(),
        format!("raw OrderCancelled {} bytes", cancelled.len()),
        "raw none 15 bytes".to_string(),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    app.shutdown().await.unwrap();
}

#[test]
fn two_raw_routes_are_refused() {
    let routes = Routes::<Orders>::new().route::<Raw>().route::<Raw>();
    let started = actix::System::new().block_on(async {
        Kafkactor::builder()
            .broker(Broker::memory())
            .subscribe_routes(Subscription::to("t").group("g"), routes, || {
                Orders(Journal::default())
            })
            .start()
            .await
    });
    let Err(err) = started else {
        panic!("two Raw routes were accepted");
    };
    assert!(err.to_string().contains("take every record"), "{err}");
}
