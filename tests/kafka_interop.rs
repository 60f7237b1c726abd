//! kafkactor on Kafka interoperates with any client: records from a plain
//! rdkafka producer (no kafkactor headers, JSON) are consumed with a default
//! content type, kafkactor's records are plain Kafka records, and keys land
//! on exactly the partitions librdkafka's `murmur2_random` (Java's
//! partitioner) chooses. Runs on Apache Kafka and the mock cluster; and both
//! ways with kafka-python (its own protocol implementation) on Kafka.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::{header, partition_for_key, ContentType};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use support::python::{kafka_python, unhex};
use support::*;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Reading {
    sensor: String,
    celsius: f64,
}

fn bootstrap(tb: &TestBroker) -> &str {
    tb.bootstrap().expect("a Kafka broker")
}

fn plain_producer(tb: &TestBroker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap(tb))
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

async fn plain_records_are_consumed_with_the_default_content_type(tb: TestBroker) {
    let (topic, group) = (unique("readings"), unique("g"));
    tb.topics(&[&topic]).await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .default_content_type(ContentType::Json),
            {
                let got = got.clone();
                move |d: Delivery<Reading>| {
                    got.lock()
                        .unwrap()
                        .push((d.key_str().map(str::to_string), d.message().celsius));
                    async { Outcome::Ack }
                }
            },
        )
        .start()
        .await
        .unwrap();

    let producer = plain_producer(&tb);
    for i in 0..20 {
        let payload = format!(r#"{{"sensor":"s-{i}","celsius":{i}.5}}"#);
        let key = format!("s-{i}");
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    eventually(
        "all plain records handled",
        tb.patience(Duration::from_secs(10)),
        || got.lock().unwrap().len() == 20,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (i, (key, celsius)) in got.iter().enumerate() {
        assert_eq!(key.as_deref(), Some(format!("s-{i}").as_str()));
        assert_eq!(*celsius, i as f64 + 0.5);
    }
    assert!(tb.records(&format!("{topic}.dlq")).await.is_empty());
}

on_every_kafka_broker!(
    plain_json_records_are_consumed,
    super::plain_records_are_consumed_with_the_default_content_type,
    3
);

async fn kafkactor_records_are_plain_kafka_records(tb: TestBroker) {
    let topic = unique("readings");
    tb.topics(&[&topic]).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let reading = Reading {
        sensor: "s-1".into(),
        celsius: 21.5,
    };
    let outcome = app
        .producer()
        .send(
            Publish::to(topic.as_str())
                .key("s-1")
                .header("x-tenant", "acme")
                .message(&reading)
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let PublishOutcome::Direct { partition, offset } = outcome else {
        panic!("direct publish expected, got {outcome:?}");
    };
    app.shutdown().await.unwrap();
    assert_eq!(partition, partition_for_key(b"s-1", 3));

    // Read it back with a plain consumer.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(&tb))
        .set("group.id", unique("plain"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + tb.patience(Duration::from_secs(10));
    let message = loop {
        assert!(
            Instant::now() < deadline,
            "the record was not readable by a plain consumer"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            break m.unwrap().detach();
        }
    };
    assert_eq!(message.key(), Some(&b"s-1"[..]));
    let decoded: Reading = rmp_serde::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(
        decoded, reading,
        "the payload is the message itself, no second envelope"
    );
    let headers = message.headers().unwrap();
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(
        value(header::CONTENT_TYPE).as_deref(),
        Some("application/msgpack")
    );
    assert_eq!(value(header::TYPE_NAME).as_deref(), Some("Reading"));
    assert_eq!(value("x-tenant").as_deref(), Some("acme"));
    assert_eq!(
        value(header::MESSAGE_ID).map(|id| id.len()),
        Some(36),
        "a UUID"
    );
}

on_every_kafka_broker!(
    published_records_are_plain_kafka_records,
    super::kafkactor_records_are_plain_kafka_records,
    3
);

/// librdkafka with `partitioner=murmur2_random` and kafkactor's partitioner
/// (which the embedded broker uses) agree on 10,000 keys.
#[actix::test]
async fn the_embedded_partitioner_matches_librdkafka_on_10000_keys() {
    let tb = TestBroker::mock(12);
    let topic = unique("keys");
    tb.topic(&topic).await;
    let producer = plain_producer(&tb);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("customer-{i}-{}", i * 7919 % 10_007))
        .collect();
    let deliveries: Vec<_> = keys
        .iter()
        .map(|k| {
            producer
                .send_result(FutureRecord::to(&topic).key(k).payload(""))
                .unwrap()
        })
        .collect();
    let mut mismatches = Vec::new();
    for (key, delivery) in keys.iter().zip(deliveries) {
        let d = delivery.await.unwrap().unwrap();
        if d.partition != partition_for_key(key.as_bytes(), 12) {
            mismatches.push((key.clone(), d.partition));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of 10,000 keys differ: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

/// kafka-python produces keyed JSON records; kafkactor consumes them with a
/// default content type, and their keys landed where kafkactor's
/// partitioner puts them.
#[actix::test]
async fn records_from_kafka_python_are_consumed() {
    let tb = crate::or_skip!(TestBroker::kafka(3));
    let (topic, group) = (unique("readings"), unique("g"));
    tb.topics(&[&topic]).await;
    let n = 60;
    let written = kafka_python("produce", bootstrap(&tb), &topic, n).await;
    assert_eq!(written.len(), n);
    for w in &written {
        let key = w["key"].as_str().unwrap();
        assert_eq!(
            w["partition"].as_i64().unwrap() as i32,
            partition_for_key(key.as_bytes(), 3),
            "kafka-python put {key} elsewhere than kafkactor's partitioner"
        );
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .default_content_type(ContentType::Json),
            {
                let got = got.clone();
                move |d: Delivery<Reading>| {
                    got.lock().unwrap().push((
                        d.key_str().unwrap().to_string(),
                        d.partition(),
                        d.message().celsius,
                        d.headers().get_str("origin").map(str::to_string),
                    ));
                    async { Outcome::Ack }
                }
            },
        )
        .start()
        .await
        .unwrap();
    eventually(
        "every kafka-python record handled",
        tb.patience(Duration::from_secs(10)),
        || got.lock().unwrap().len() == n,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    for (key, partition, celsius, origin) in got.lock().unwrap().iter() {
        let i: usize = key.strip_prefix("py-").unwrap().parse().unwrap();
        assert_eq!(*partition, partition_for_key(key.as_bytes(), 3));
        assert_eq!(*celsius, i as f64 + 0.5);
        assert_eq!(origin.as_deref(), Some("kafka-python"));
    }
    assert!(tb.records(&format!("{topic}.dlq")).await.is_empty());
}

/// kafkactor publishes; kafka-python reads plain records with kafkactor's
/// headers, the JSON payload as it was serialized, on the key's partition.
#[actix::test]
async fn kafka_python_reads_what_kafkactor_publishes() {
    let tb = crate::or_skip!(TestBroker::kafka(3));
    let topic = unique("readings");
    tb.topics(&[&topic]).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let n = 60;
    for i in 0..n {
        let reading = Reading {
            sensor: format!("s-{i}"),
            celsius: i as f64,
        };
        app.producer()
            .send(
                Publish::to(topic.as_str())
                    .key(&reading.sensor)
                    .header("x-tenant", "acme")
                    .json()
                    .message(&reading)
                    .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
    }
    app.shutdown().await.unwrap();
    let read = kafka_python("consume", bootstrap(&tb), &topic, n).await;
    assert_eq!(read.len(), n);
    for r in &read {
        let key = r["key"].as_str().unwrap();
        assert_eq!(
            r["partition"].as_i64().unwrap() as i32,
            partition_for_key(key.as_bytes(), 3)
        );
        let reading: Reading =
            serde_json::from_slice(&unhex(r["payload"].as_str().unwrap())).unwrap();
        assert_eq!(reading.sensor, key);
        let header = |name: &str| {
            r["headers"][name]
                .as_str()
                .map(|h| String::from_utf8(unhex(h)).unwrap())
        };
        assert_eq!(
            header(header::CONTENT_TYPE).as_deref(),
            Some("application/json")
        );
        assert_eq!(header(header::TYPE_NAME).as_deref(), Some("Reading"));
        assert_eq!(header("x-tenant").as_deref(), Some("acme"));
        assert_eq!(header(header::MESSAGE_ID).map(|id| id.len()), Some(36));
    }
}
