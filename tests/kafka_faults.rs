//! Faults on Kafka, injected with librdkafka's mock cluster: a broker outage
//! of several seconds mid-stream, and request errors on produce, fetch and
//! commit. Nothing is lost; retriable failures are retried, not surfaced.

mod support;

use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::*;

async fn app(tb: &TestBroker, topic: &str, group: &str, log: &Log) -> App {
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .delivery_timeout(Duration::from_secs(60))
        .subscribe(
            Subscription::to(topic).group(group).concurrency(4),
            probe(log, "a", ack()),
        )
        .start()
        .await
        .unwrap()
}

/// Ids handled at least once, and that every id below `n` was.
fn assert_all_handled(log: &Log, n: u64) {
    let counts = log.counts();
    let missing: Vec<u64> = (0..n).filter(|id| !counts.contains_key(id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_key_order(&first_handlings(&log.seen()));
}

#[actix::test]
async fn a_broker_outage_of_several_seconds_loses_nothing() {
    let tb = TestBroker::mock(3);
    let mock = tb.mock_cluster().unwrap();
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let app = app(&tb, &topic, &group, &log).await;
    let all = orders(3_000, 30);
    publish_all(&app, &topic, &all[..1_000]).await;
    eventually("consuming", tb.patience(Duration::from_secs(10)), || {
        log.len() >= 500
    })
    .await;

    // The only broker goes away for 4 s while records are being published.
    mock.broker_down(1).unwrap();
    let down = Instant::now();
    let publishing = {
        let producer = app.producer();
        let (topic, rest) = (topic.clone(), all[1_000..].to_vec());
        actix::spawn(async move {
            let sent: Vec<_> = rest
                .iter()
                .map(|o| producer.send(Publish::to(topic.as_str()).key(&o.key).message(o).unwrap()))
                .collect();
            for s in sent {
                s.await.unwrap().expect("publish survives the outage");
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    mock.broker_up(1).unwrap();
    let outage = down.elapsed();
    publishing.await.unwrap();

    eventually(
        "everything handled after the outage",
        Duration::from_secs(90),
        || log.counts().len() >= 3_000,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert!(outage >= Duration::from_secs(4));
    assert_all_handled(&log, 3_000);
}

#[actix::test]
async fn produce_fetch_and_commit_errors_are_retried() {
    let tb = TestBroker::mock(3);
    let mock = tb.mock_cluster().unwrap();
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let app = app(&tb, &topic, &group, &log).await;
    publish_all(&app, &topic, &orders(500, 10)).await;
    eventually("consuming", tb.patience(Duration::from_secs(10)), || {
        log.len() >= 100
    })
    .await;

    use RDKafkaRespErr::*;
    tb.refuse_writes_for_a_while();
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        ],
    );
    let more: Vec<Order> = orders(2_000, 10).split_off(500);
    publish_all(&app, &topic, &more).await;
    eventually("everything handled", Duration::from_secs(60), || {
        log.counts().len() >= 2_000
    })
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert_all_handled(&log, 2_000);
}

/// A handler that blocks the actors' thread longer than
/// `max.poll.interval.ms` makes the member leave its group: that is reported
/// as a supervised failure of the consumer connection, which is restarted,
/// rejoins and loses nothing.
#[actix::test]
async fn leaving_the_group_on_max_poll_interval_is_a_supervised_failure() {
    let mut tb = TestBroker::mock(3);
    // librdkafka's lowest practical interval against the mock cluster: its
    // JoinGroup request times out after max.poll.interval.ms + 3 s, and the
    // mock takes a few seconds to form a group.
    tb.broker = tb.broker.clone().set("max.poll.interval.ms", "6000");
    let (topic, group) = (unique("orders"), unique("g"));
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let behaviour: Behaviour = {
        let blocked = blocked.clone();
        std::sync::Arc::new(move |d: &kafkactor::Delivery<Order>| {
            if d.message().id == 50 && !blocked.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // Blocks the whole arbiter: nothing polls Kafka meanwhile.
                std::thread::sleep(Duration::from_millis(8_000));
            }
            Outcome::Ack
        })
    };
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(group.as_str()),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    let mut events = app.events().subscribe();
    publish_all(&app, &topic, &orders(200, 10)).await;
    let failure = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let kafkactor::SupervisionEvent::Failed { child, exit, .. } =
                events.recv().await.unwrap()
            {
                if &*child == "consumer-connection" {
                    return exit.to_string();
                }
            }
        }
    })
    .await
    .expect("the connection failed");
    assert!(failure.contains("max.poll.interval.ms"), "{failure}");
    eventually(
        "everything handled after rejoining",
        Duration::from_secs(60),
        || log.counts().len() >= 200,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();
    assert_all_handled(&log, 200);
}
