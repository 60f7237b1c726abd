//! Tombstones: a record with no payload at all is published and delivered
//! as such (`Delivery::is_tombstone`; a `Delivery<Option<T>>` gets `None`),
//! told apart from an empty payload; a handler that cannot take one
//! dead-letters it still a tombstone; null header values survive into dead
//! letters unchanged. On the embedded broker, Apache Kafka and the mock cluster.

mod support;

use std::time::Duration;

use kafkactor::header;
use kafkactor::prelude::*;
use kafkactor::testing::TestApp;
use kafkactor::FailureKind;
use support::*;

async fn tombstones_are_delivered_as_such(tb: TestBroker) {
    let t = TestApp::on(tb.broker.clone());
    let (topic, typed) = (t.topic("customers"), t.topic("strict"));
    tb.topics(&[&topic, &typed]).await;
    let t = t
        .handle(
            Subscription::to(topic.as_str()).group("readers"),
            |_: Delivery<Option<Order>>| async { Outcome::Ack },
        )
        // A handler of plain `Order`s cannot take a tombstone.
        .handle(
            Subscription::to(typed.as_str()).group("strict-readers"),
            |_: Delivery<Order>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let order = Order {
        id: 7,
        key: "c-1".into(),
        seq: 0,
    };
    t.publish_all([
        Publish::to(topic.as_str())
            .key("c-1")
            .message(&Some(order.clone()))
            .unwrap(),
        Publish::to(topic.as_str()).key("c-1").tombstone(),
        // An empty payload is not a tombstone: it does not decode.
        Publish::to(topic.as_str())
            .key("c-2")
            .payload(Vec::<u8>::new()),
        Publish::to(typed.as_str()).key("c-3").tombstone(),
    ])
    .await
    .unwrap();
    t.quiet().await.unwrap();

    let calls: Vec<_> = t
        .calls(&topic)
        .iter()
        .map(|c| {
            let message = c.message::<Option<Order>>().unwrap();
            (
                c.key().unwrap().to_string(),
                c.record().is_tombstone(),
                message.map(|o| o.id),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("c-1".to_string(), false, Some(7)),
            ("c-1".to_string(), true, None)
        ]
    );
    assert!(t.calls(&typed).is_empty(), "{:?}", t.calls(&typed));
    let empty = &t.dead_letters(&topic).await.unwrap()[..];
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert!(!empty[0].record.is_tombstone() && empty[0].record.payload.is_empty());
    assert_eq!(empty[0].why.kind, Some(FailureKind::Decode));
    let tombstone = &t.dead_letters(&typed).await.unwrap()[..];
    assert_eq!(tombstone.len(), 1, "{tombstone:?}");
    assert!(
        tombstone[0].record.is_tombstone(),
        "dead-lettered as the tombstone it is"
    );
    assert!(
        tombstone[0].why.reason.contains("tombstone"),
        "{:?}",
        tombstone[0].why
    );
    // Read back as the broker has them.
    let log = t.records(&topic).await.unwrap();
    assert_eq!(
        log.iter().map(|r| r.is_tombstone()).collect::<Vec<_>>(),
        [false, true, false]
    );
    t.shutdown().await.unwrap();
}

on_every_broker!(
    tombstones_are_published_and_delivered,
    super::tombstones_are_delivered_as_such,
    1
);

/// A record from another producer with a null header value that cannot be
/// decoded is dead-lettered with that header still null.
async fn null_headers_survive_into_dead_letters(tb: TestBroker) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (topic, group) = (unique("plain"), unique("g"));
    tb.topics(&[&topic]).await;
    let brokers = tb.bootstrap().unwrap().to_string();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "x-trace",
            value: None::<&[u8]>,
        })
        .insert(Header {
            key: "x-tenant",
            value: Some("acme"),
        });
    producer
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload("not msgpack")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(group.as_str()),
            probe(&Log::default(), "a", ack()),
        )
        .start()
        .await
        .unwrap();
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    // A plain consumer sees the dead letter's header null, as it came.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&format!("{topic}.dlq")]).unwrap();
    let deadline = std::time::Instant::now() + tb.patience(Duration::from_secs(10));
    let message = loop {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            break m.unwrap().detach();
        }
    };
    let headers = message.headers().unwrap();
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.map(<[u8]>::to_vec))
    };
    assert_eq!(value("x-trace"), Some(None), "the null header stayed null");
    assert_eq!(value("x-tenant"), Some(Some(b"acme".to_vec())));
    assert_eq!(value(header::ERROR_KIND), Some(Some(b"decode".to_vec())));
}

on_every_kafka_broker!(
    null_header_values_survive_into_dead_letters,
    super::null_headers_survive_into_dead_letters,
    1
);
