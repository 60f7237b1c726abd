//! Topic administration and typed delivery failures on Kafka: missing
//! topics are created (subscribed, dead-letter and published-to), a missing
//! topic with creation off is a clear error, and a failed delivery says
//! whether a retry can help.

mod support;

use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::Error;
use support::*;

#[actix::test]
async fn missing_topics_are_created() {
    let tb = crate::or_skip!(TestBroker::kafka(3));
    let (topic, group, other) = (unique("fresh"), unique("g"), unique("elsewhere"));
    let log = Log::default();
    // Nothing is created up front: the application creates what it needs.
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(group.as_str()),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(30, 3)).await;
    eventually("handled", tb.patience(Duration::from_secs(10)), || {
        log.len() == 30
    })
    .await;
    // Publishing to a topic nobody created creates it.
    app.producer()
        .send(Publish::to(other.as_str()).payload("x"))
        .await
        .unwrap()
        .unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(tb.records(&other).await.len(), 1);
    let dlq_partitions = tb
        .broker
        .committed_offsets("nobody", &format!("{topic}.dlq"))
        .await
        .unwrap();
    assert_eq!(
        dlq_partitions.len(),
        3,
        "the dead-letter topic exists, with 3 partitions"
    );
}

#[actix::test]
async fn a_missing_topic_with_creation_off_is_a_clear_error() {
    let tb = crate::or_skip!(TestBroker::kafka(3));
    let topic = unique("absent");
    let err = Kafkactor::builder()
        .broker(tb.broker.clone().create_topics(false))
        .subscribe(
            Subscription::to(topic.as_str()).group("g"),
            probe(&Log::default(), "a", ack()),
        )
        .start()
        .await
        .unwrap_err();
    match err {
        Error::Config(message) => {
            assert!(
                message.contains(&topic) && message.contains("does not exist"),
                "{message}"
            )
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[actix::test]
async fn a_record_the_client_refuses_fails_for_good() {
    let tb = TestBroker::mock(3);
    let topic = unique("big");
    tb.topic(&topic).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone().set("message.max.bytes", "5000"))
        .max_record_bytes(1_000_000)
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    let result = app
        .producer()
        .send(Publish::to(topic.as_str()).payload(vec![7u8; 20_000]))
        .await
        .unwrap();
    match result {
        Err(Error::Produce {
            retriable: false,
            topic: t,
            reason,
            code,
        }) => {
            assert_eq!(t, topic);
            // The client's own code travels with the error.
            assert_eq!(
                code.as_ref().map(kafkactor::ErrorCode::name),
                Some("MessageSizeTooLarge"),
                "{reason}"
            );
            assert!(
                reason.to_lowercase().contains("size") || reason.to_lowercase().contains("large"),
                "{reason}"
            );
        }
        other => panic!("expected a non-retriable produce error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn an_unreachable_broker_fails_retriably_after_the_delivery_timeout() {
    let tb = TestBroker::mock(3);
    let topic = unique("orders");
    tb.topic(&topic).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone().set("message.timeout.ms", "1000"))
        .delivery_timeout(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    // The topic is known to the producer before the broker goes away.
    app.producer()
        .send(Publish::to(topic.as_str()).payload("first"))
        .await
        .unwrap()
        .unwrap();
    tb.mock_cluster().unwrap().broker_down(1).unwrap();
    let started = Instant::now();
    let result = app
        .producer()
        .send(Publish::to(topic.as_str()).payload("lost?"))
        .await
        .unwrap();
    let waited = started.elapsed();
    tb.mock_cluster().unwrap().broker_up(1).unwrap();
    match result {
        Err(
            ref e @ Error::Produce {
                retriable: true,
                ref code,
                ..
            },
        ) => {
            assert!(e.is_retriable());
            assert_eq!(
                code.as_ref().map(kafkactor::ErrorCode::name),
                Some("MessageTimedOut"),
                "{e}"
            );
        }
        other => panic!("expected a retriable produce error, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(2),
        "resent until the delivery timeout ({waited:?})"
    );
    // The last resend started before the deadline ends with librdkafka's own timeout.
    assert!(
        waited < Duration::from_secs(20),
        "gave up after the delivery timeout ({waited:?})"
    );
    app.shutdown().await.unwrap();
}

/// The names of this process's librdkafka threads (`rdk:main`, `rdk:broker..`).
fn librdkafka_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .filter(|name| name.starts_with("rdk:"))
                .collect()
        })
        .unwrap_or_default()
}

#[actix::test]
async fn every_client_is_closed_once_the_app_and_the_broker_handle_are_gone() {
    let tb = crate::or_skip!(TestBroker::kafka(3));
    let topic = unique("closing");
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(unique("g").as_str()),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(10, 2)).await;
    eventually("handled", tb.patience(Duration::from_secs(10)), || {
        log.len() == 10
    })
    .await;
    assert!(
        !librdkafka_threads().is_empty(),
        "clients run while the app does"
    );
    app.shutdown().await.unwrap();
    drop(tb);
    eventually("no librdkafka thread left", Duration::from_secs(10), || {
        librdkafka_threads().is_empty()
    })
    .await;
}

/// Topics kafkactor creates get the broker's default replication unless
/// told otherwise: on a broker whose `default.replication.factor` is 2 but
/// which is alone, creating one fails (Kafka cannot place two replicas),
/// where a hard-coded factor of 1 would silently make an unreplicated
/// topic; `topic_replication(1)` asks for one explicitly.
#[actix::test]
async fn created_topics_take_the_brokers_replication_unless_told() {
    let kafka = crate::or_skip!(
        support::kafka_process::KafkaProcess::start_with(&[("default.replication.factor", "2")])
            .await
    );
    let broker = Broker::kafka(kafka.addr());
    let err = broker.create_topic(&unique("replicated"), 3).await;
    let Err(e) = &err else {
        panic!("a topic was created with one replica on a broker that defaults to two");
    };
    // The broker's answer travels in the error, and it is not retriable.
    match e {
        Error::Broker {
            code, retriable, ..
        } => {
            assert_eq!(
                code.as_ref().map(kafkactor::ErrorCode::name),
                Some("InvalidReplicationFactor"),
                "{e}"
            );
            assert!(!retriable && !e.is_retriable(), "{e}");
        }
        other => panic!("expected Error::Broker, got {other:?}"),
    }
    let topic = unique("single");
    Broker::kafka(kafka.addr())
        .topic_replication(1)
        .create_topic(&topic, 3)
        .await
        .unwrap();
}
