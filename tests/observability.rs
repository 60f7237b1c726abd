//! Observability: the Prometheus metrics count what happened (read from the
//! registry and over HTTP from `/metrics`), the health endpoints answer over
//! a real socket, readiness follows the broker (a Kafka process stopped and
//! started again), and restarts are counted from the supervision events.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::prometheus::proto::MetricFamily;
use support::http::http_get;
use support::kafka_process::KafkaProcess;
use support::*;

/// The value of `name` with exactly these `labels` (a subset of its labels
/// must match), summed over the series that match; counters, gauges and
/// histogram counts alike.
fn value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
    use kafkactor::prometheus::proto::MetricType;
    let mut sum = 0.0;
    for family in families.iter().filter(|f| f.name() == name) {
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if !matches {
                continue;
            }
            sum += match family.get_field_type() {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::GAUGE => m.get_gauge().get_value(),
                _ => m.get_histogram().get_sample_count() as f64,
            };
        }
    }
    sum
}

/// The value of `name` with `labels` in Prometheus' text format.
fn text_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

const N: u64 = 60;

/// Every 10th order (ids ending in 3) is rejected; ids ending in 5 are
/// retried once; the rest acknowledged.
fn verdicts() -> Behaviour {
    Arc::new(|d: &Delivery<Order>| {
        let id = d.message().id;
        if id % 10 == 3 {
            Outcome::reject("ends in 3")
        } else if id % 10 == 5 && d.attempt() == 1 {
            Outcome::retry("ends in 5")
        } else {
            Outcome::Ack
        }
    })
}

async fn metrics_count_what_happened(tb: TestBroker, partitions: usize) {
    let (topic, group) = (unique("obs"), unique("obs-g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let registry = kafkactor::prometheus::Registry::new();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .metrics_registry(registry.clone())
        .serve_http("127.0.0.1:0")
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(RetryPolicy::exponential(3, Duration::from_millis(10))),
            probe(&log, "a", verdicts()),
        )
        .start()
        .await
        .unwrap();
    until_owned(
        "partitions owned",
        tb.patience(Duration::from_secs(5)),
        &app,
        |n| n > 0,
    )
    .await;
    publish_all(&app, &topic, &orders(N, 6)).await;
    let (rejected, retried) = (N / 10, N / 10);
    eventually(
        "every attempt handled",
        tb.patience(Duration::from_secs(10)),
        || log.len() as u64 == N + retried,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    let t = topic.as_str();
    let g = group.as_str();
    // Counted once the fate is final: poll the registry until it is.
    eventually(
        "dead letters counted",
        tb.patience(Duration::from_secs(5)),
        || {
            value(
                &registry.gather(),
                "kafkactor_dead_lettered_total",
                &[("topic", t), ("group", g), ("kind", "rejected")],
            ) == rejected as f64
        },
    )
    .await;
    let families = registry.gather();
    let count = |name: &str, labels: &[(&str, &str)]| value(&families, name, labels);
    assert_eq!(
        count(
            "kafkactor_published_total",
            &[("topic", t), ("outcome", "ok")]
        ),
        N as f64
    );
    assert_eq!(
        count(
            "kafkactor_published_total",
            &[("topic", t), ("outcome", "error")]
        ),
        0.0
    );
    assert_eq!(
        count("kafkactor_publish_latency_seconds", &[("topic", t)]),
        N as f64
    );
    assert_eq!(
        count("kafkactor_consumed_total", &[("topic", t), ("group", g)]),
        N as f64
    );
    assert_eq!(
        count("kafkactor_acked_total", &[("topic", t), ("group", g)]),
        (N - rejected) as f64
    );
    assert_eq!(
        count("kafkactor_retried_total", &[("topic", t), ("group", g)]),
        retried as f64
    );
    assert_eq!(
        count(
            "kafkactor_handler_duration_seconds",
            &[("topic", t), ("group", g)]
        ),
        (N + retried) as f64
    );
    assert_eq!(count("kafkactor_in_flight", &[("group", g)]), 0.0);

    // The same over HTTP, with the lag read from the broker at the scrape.
    let addr = app.http_addr().expect("serving HTTP");
    let (status, text) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        text_value(
            &text,
            "kafkactor_acked_total",
            &[("topic", t), ("group", g)]
        ),
        Some((N - rejected) as f64)
    );
    assert_eq!(
        text_value(
            &text,
            "kafkactor_consumer_lag",
            &[("topic", t), ("group", g)]
        ),
        Some(0.0),
        "{text}"
    );
    let lag_series = text
        .lines()
        .filter(|l| l.starts_with("kafkactor_consumer_lag{") && l.contains(g))
        .count();
    assert_eq!(lag_series, partitions, "one lag series per partition");
    app.shutdown().await.unwrap();
}
async fn metrics_are_counted_on(tb: TestBroker) {
    metrics_count_what_happened(tb, 3).await
}
on_every_broker!(metrics_are_counted, super::metrics_are_counted_on, 3);

#[actix::test]
async fn lag_and_backlog_are_read_at_the_scrape() {
    let tb = TestBroker::memory(2);
    let (topic, group, prefix) = (unique("lag"), unique("lag-g"), unique("delay"));
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .delays(kafkactor::Delays::default().topic_prefix(&prefix))
        .start()
        .await
        .unwrap();
    // A group that committed nothing yet of 7 records.
    tb.topic(&topic).await;
    publish_all(&app, &topic, &orders(7, 7)).await;
    let later = Publish::to(topic.as_str())
        .message(&"in two hours")
        .unwrap()
        .delay(Duration::from_secs(7200));
    for _ in 0..4 {
        app.producer().send(later.clone()).await.unwrap().unwrap();
    }
    let text = app.metrics_text().await;
    // Nothing consumes `topic` in this application: no lag series for it.
    assert_eq!(
        text_value(
            &text,
            "kafkactor_consumer_lag",
            &[("group", group.as_str())]
        ),
        None
    );
    // The largest bucket that fits two hours.
    let bucket = format!("{prefix}.1h");
    eventually_async("the hour bucket's backlog", Duration::from_secs(5), || {
        let app = &app;
        let bucket = bucket.clone();
        async move {
            let text = app.metrics_text().await;
            text_value(
                &text,
                "kafkactor_delayed_backlog",
                &[("bucket", bucket.as_str())],
            ) == Some(4.0)
        }
    })
    .await;
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn republished_records_are_counted_by_target() {
    let tb = TestBroker::memory(2);
    let (topic, prefix) = (unique("rep"), unique("delay"));
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .delays(kafkactor::Delays::default().topic_prefix(&prefix))
        .subscribe(
            Subscription::to(topic.as_str()).group(unique("rep-g").as_str()),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    for order in orders(5, 5) {
        let p = Publish::to(topic.as_str())
            .key(&order.key)
            .message(&order)
            .unwrap()
            .delay(Duration::from_millis(300));
        app.producer().send(p).await.unwrap().unwrap();
    }
    eventually("delayed records handled", Duration::from_secs(10), || {
        log.len() == 5
    })
    .await;
    let registry = app.metrics_registry().clone();
    eventually("republished counted", Duration::from_secs(5), || {
        value(
            &registry.gather(),
            "kafkactor_republished_total",
            &[("target", "destination")],
        ) == 5.0
    })
    .await;
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn health_endpoints_answer_over_http() {
    let tb = TestBroker::memory(2);
    let topic = unique("health");
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .serve_http("127.0.0.1:0")
        .subscribe(
            Subscription::to(topic.as_str()).group(unique("health-g").as_str()),
            probe(&Log::default(), "a", ack()),
        )
        .start()
        .await
        .unwrap();
    let addr = app.http_addr().unwrap();
    let (status, body) = http_get(addr, "/health/live").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"live":true}"#));
    eventually_async("ready over HTTP", Duration::from_secs(5), || async {
        matches!(http_get(addr, "/health/ready").await, Ok((200, _)))
    })
    .await;
    let (_, body) = http_get(addr, "/health/ready").await.unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ready"], true);
    assert_eq!(health["checks"][0]["name"], "broker");
    assert!(health["checks"][1]["name"]
        .as_str()
        .unwrap()
        .starts_with("consumer:"));
    assert!(health["checks"][2]["name"]
        .as_str()
        .unwrap()
        .starts_with("handlers:"));
    assert_eq!(app.health().await.checks.len(), 3);
    let (status, _) = http_get(addr, "/nothing-here").await.unwrap();
    assert_eq!(status, 404);
    app.shutdown().await.unwrap();
    // The server stopped with the application.
    assert!(http_get(addr, "/health/live").await.is_err());
}

#[actix::test]
async fn a_taken_address_is_a_typed_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let result = Kafkactor::builder()
        .broker(Broker::memory())
        .serve_http(addr.as_str())
        .start()
        .await;
    match result {
        Err(Error::Config(reason)) => assert!(reason.contains(&addr), "{reason}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[actix::test]
async fn one_registry_takes_one_application() {
    let registry = kafkactor::prometheus::Registry::new();
    let first = Kafkactor::builder()
        .broker(Broker::memory())
        .metrics_registry(registry.clone())
        .start()
        .await
        .unwrap();
    let second = Kafkactor::builder()
        .broker(Broker::memory())
        .metrics_registry(registry.clone())
        .start()
        .await;
    assert!(matches!(second, Err(Error::Config(_))), "{second:?}");
    first.shutdown().await.unwrap();
}

#[actix::test]
async fn with_metrics_off_nothing_of_kafkactors_is_served() {
    let tb = TestBroker::memory(2);
    let (topic, group) = (unique("quiet"), unique("quiet-g"));
    // The service's own metric, on the registry /metrics serves.
    let registry = kafkactor::prometheus::Registry::new();
    let own = kafkactor::prometheus::IntCounter::new("service_orders_total", "orders").unwrap();
    registry.register(Box::new(own.clone())).unwrap();
    let log = Log::default();
    let start = |log: &Log| {
        Kafkactor::builder()
            .broker(tb.broker.clone())
            .metrics(false)
            .metrics_registry(registry.clone())
            .serve_http("127.0.0.1:0")
            .subscribe(
                Subscription::to(topic.as_str()).group(group.as_str()),
                probe(log, "a", ack()),
            )
            .start()
    };
    let app = start(&log).await.unwrap();
    // A second application on the same registry: nothing of kafkactor's is
    // registered there, so nothing clashes.
    let second = start(&Log::default()).await.unwrap();
    second.shutdown().await.unwrap();
    publish_all(&app, &topic, &orders(50, 5)).await;
    own.inc_by(50);
    eventually("every record handled", Duration::from_secs(10), || {
        log.len() == 50
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    let (status, body) = http_get(app.http_addr().unwrap(), "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("service_orders_total 50"), "{body}");
    assert!(!body.contains("kafkactor_"), "{body}");
    assert_eq!(app.metrics_text().await, body);
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn restarts_are_counted() {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .start()
        .await
        .unwrap();
    app.fail_actor("producer", "injected").await.unwrap();
    let registry = app.metrics_registry().clone();
    eventually("the restart counted", Duration::from_secs(5), || {
        value(
            &registry.gather(),
            "kafkactor_actor_restarts_total",
            &[("supervisor", "kafkactor"), ("child", "producer")],
        ) == 1.0
    })
    .await;
    app.shutdown().await.unwrap();
}

/// Readiness goes false when the Kafka process stops and true again when it
/// is back, on a broker of the test's own.
#[actix::test]
async fn readiness_follows_the_broker() {
    let mut kafka = crate::or_skip!(KafkaProcess::start().await);
    let tb = TestBroker::kafka_at(kafka.addr(), 2);
    let topic = unique("ready");
    tb.topics(&[&topic]).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .serve_http("127.0.0.1:0")
        .subscribe(
            Subscription::to(topic.as_str()).group(unique("ready-g").as_str()),
            probe(&Log::default(), "a", ack()),
        )
        .start()
        .await
        .unwrap();
    let addr = app.http_addr().unwrap();
    let status = move || async move { http_get(addr, "/health/ready").await.map(|(s, _)| s) };
    eventually_async("ready", Duration::from_secs(60), || async {
        status().await.ok() == Some(200)
    })
    .await;
    kafka.kill();
    eventually_async(
        "not ready once the broker is gone",
        Duration::from_secs(30),
        || async { status().await.ok() == Some(503) },
    )
    .await;
    let health = app.health().await;
    let broker = &health.checks[0];
    assert!(!broker.ok && !health.ready, "{health:?}");
    // Live all along: the application itself runs.
    assert_eq!(http_get(addr, "/health/live").await.unwrap().0, 200);
    kafka.restart().await;
    eventually_async("ready again", KafkaProcess::recovery(), || async {
        status().await.ok() == Some(200)
    })
    .await;
    let checks: HashMap<String, bool> = app
        .health()
        .await
        .checks
        .into_iter()
        .map(|c| (c.name, c.ok))
        .collect();
    assert!(checks.values().all(|ok| *ok), "{checks:?}");
    app.shutdown().await.unwrap();
}

/// The lineage publisher is a supervised child (`lineage`) like the others:
/// failed on purpose, it is restarted, and the events made after (and
/// while it restarts) still reach the lineage topic, every one of them.
#[actix::test]
async fn the_lineage_publisher_is_supervised() {
    let tb = TestBroker::memory(2);
    let (topic, lineage_topic, group) = (unique("lin"), unique("lineage"), unique("lin-g"));
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .lineage(kafkactor::Lineage::to(lineage_topic.as_str()))
        .subscribe(
            Subscription::to(topic.as_str()).group(group.as_str()),
            probe(&log, "a", ack()),
        )
        .start()
        .await
        .unwrap();
    until_owned("partitions owned", Duration::from_secs(5), &app, |n| n >= 2).await;
    app.fail_actor("lineage", "injected").await.unwrap();
    const COUNT: u64 = 10;
    publish_all(&app, &topic, &orders(COUNT, 2)).await;
    // One `published` and one `handled` event per record.
    let expected = COUNT as usize * 2;
    eventually_async("every lineage event", Duration::from_secs(10), || async {
        tb.records(&lineage_topic).await.len() >= expected
    })
    .await;
    assert_eq!(tb.records(&lineage_topic).await.len(), expected);
    app.shutdown().await.unwrap();
}

/// Lineage on: every record published makes a `published` event, every
/// record handled a `handled` one (acked or dead-lettered, with the kind);
/// a subscription with lineage off makes none; the lineage topic's own
/// records make none. Off by default.
#[actix::test]
async fn lineage_events_trace_each_record() {
    let tb = TestBroker::memory(2);
    let (topic, lineage_topic) = (unique("lin"), unique("lineage"));
    let (group, quiet) = (unique("lin-g"), unique("quiet-g"));
    let (log, quiet_log) = (Log::default(), Log::default());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .lineage(kafkactor::Lineage::to(lineage_topic.as_str()).service("billing"))
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(RetryPolicy::none()),
            probe(&log, "a", verdicts()),
        )
        .subscribe(
            Subscription::to(topic.as_str())
                .group(quiet.as_str())
                .lineage(false),
            probe(&quiet_log, "b", ack()),
        )
        .start()
        .await
        .unwrap();
    until_owned("partitions owned", Duration::from_secs(5), &app, |n| n >= 4).await;
    const COUNT: u64 = 20;
    publish_all(&app, &topic, &orders(COUNT, 4)).await;
    // Ids ending in 3 are rejected; those ending in 5 ask for a retry,
    // which the policy does not allow: dead-lettered as exhausted.
    let rejected = (0..COUNT).filter(|id| id % 10 == 3).count();
    let exhausted = (0..COUNT).filter(|id| id % 10 == 5).count();
    let events = || async {
        tb.records(&lineage_topic)
            .await
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect::<Vec<serde_json::Value>>()
    };
    let expected = COUNT as usize * 2;
    eventually_async("every lineage event", Duration::from_secs(10), || async {
        events().await.len() >= expected
    })
    .await;
    let events = events().await;
    assert_eq!(events.len(), expected, "nothing more: {events:#?}");
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    let published = of("published");
    assert_eq!(published.len(), COUNT as usize);
    assert!(published
        .iter()
        .all(|e| e["topic"] == topic.as_str() && e["service"] == "billing"));
    let handled = of("handled");
    assert_eq!(
        handled.len(),
        COUNT as usize,
        "only the group with lineage on"
    );
    assert!(handled.iter().all(|e| e["group"] == group.as_str()));
    let dead: Vec<_> = handled
        .iter()
        .filter(|e| e["outcome"] == "dead_lettered")
        .collect();
    assert_eq!(dead.len(), rejected + exhausted);
    let kind = |k: &str| dead.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(kind("rejected"), rejected);
    assert_eq!(kind("retries-exhausted"), exhausted);
    // Each handled record's message id was published.
    let ids: std::collections::HashSet<_> =
        published.iter().map(|e| e["message_id"].clone()).collect();
    assert!(handled.iter().all(|e| ids.contains(&e["message_id"])));
    app.shutdown().await.unwrap();

    // Off by default.
    let plain = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let before = tb.records(&lineage_topic).await.len();
    publish_all(&plain, &topic, &orders(3, 3)).await;
    assert_eq!(tb.records(&lineage_topic).await.len(), before);
    plain.shutdown().await.unwrap();
}
