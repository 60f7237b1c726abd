//! Shared helpers for the behaviour tests: a probe handler that records what
//! it handled, and polling with deadlines (never bare sleeps).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

pub mod flaky_store;
pub mod forwarding;
pub mod http;
pub mod kafka_process;
pub mod proxy;
pub mod python;

/// The test message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: u64,
    pub key: String,
    /// Position among the orders of `key`, from 0.
    pub seq: u64,
}

/// One handling of a record, as the probe saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub key: String,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    pub attempt: u32,
    pub app: &'static str,
}

impl Seen {
    /// The handling of `d` by `app`.
    pub fn of(d: &Delivery<Order>, app: &'static str) -> Self {
        let m = d.message();
        Seen {
            id: m.id,
            key: m.key.clone(),
            seq: m.seq,
            partition: d.partition(),
            offset: d.offset(),
            attempt: d.attempt(),
            app,
        }
    }
}

/// Decides the outcome of a delivery.
pub type Behaviour = Arc<dyn Fn(&Delivery<Order>) -> Outcome + Send + Sync>;

/// Everything the probes handled, in handling order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Ids acknowledged, with how many times each was handled.
    pub fn counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for s in self.0.lock().unwrap().iter() {
            *counts.entry(s.id).or_default() += 1;
        }
        counts
    }

    pub fn push(&self, seen: Seen) {
        self.0.lock().unwrap().push(seen);
    }
}

/// A handler actor that logs every delivery and answers what `behaviour` says.
pub struct Probe {
    pub log: Log,
    pub behaviour: Behaviour,
    pub app: &'static str,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Probe {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
        let outcome = (self.behaviour)(&d);
        self.log.push(Seen::of(&d, self.app));
        outcome
    }
}

/// A factory of probes sharing `log`.
pub fn probe(log: &Log, app: &'static str, behaviour: Behaviour) -> impl Fn() -> Probe + 'static {
    let log = log.clone();
    move || Probe {
        log: log.clone(),
        behaviour: behaviour.clone(),
        app,
    }
}

/// Acknowledges everything.
pub fn ack() -> Behaviour {
    Arc::new(|_| Outcome::Ack)
}

/// `n` orders over `keys` keys (`k-0` ..), ids from 0, `seq` counting per key.
pub fn orders(n: u64, keys: u64) -> Vec<Order> {
    (0..n)
        .map(|id| Order {
            id,
            key: format!("k-{}", id % keys),
            seq: id / keys,
        })
        .collect()
}

/// Publishes `orders` keyed by their key, in order: up to 1,000 publishes
/// in flight at once (the producer keeps their order), each checked.
pub async fn publish_all(app: &App, topic: &str, orders: &[Order]) {
    let producer = app.producer();
    for chunk in orders.chunks(1_000) {
        let sent: Vec<_> = chunk
            .iter()
            .map(|o| producer.send(Publish::to(topic).key(&o.key).message(o).unwrap()))
            .collect();
        for s in sent {
            s.await.expect("producer mailbox").expect("publish");
        }
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout`
/// passes; panics with `what` on timeout.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`eventually`] for an async condition.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the number of partitions `app` owns satisfies `enough`.
pub async fn until_owned(what: &str, timeout: Duration, app: &App, enough: impl Fn(usize) -> bool) {
    let enough = &enough;
    eventually_async(what, timeout, || async move {
        enough(app.assigned_partitions().await.len())
    })
    .await
}

/// Asserts that, per key, `seq` strictly increases in handling order (for
/// acknowledged deliveries: each key's records were handled once, in order).
pub fn assert_key_order(seen: &[Seen]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for s in seen {
        if let Some(&prev) = last.get(s.key.as_str()) {
            assert!(
                s.seq > prev,
                "key {} handled seq {} after seq {} (offset {})",
                s.key,
                s.seq,
                prev,
                s.offset
            );
        }
        last.insert(&s.key, s.seq);
    }
}

/// The first handling of each record, in handling order.
pub fn first_handlings(seen: &[Seen]) -> Vec<Seen> {
    let mut ids = std::collections::HashSet::new();
    seen.iter().filter(|s| ids.insert(s.id)).cloned().collect()
}

/// The sum of the samples of counter `name` in `app`'s registry.
pub fn counter(app: &App, name: &str) -> f64 {
    app.metrics_registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// A unique name for topics and groups of one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A broker for the behaviour suite: the embedded one, Apache Kafka (address
/// from `KAFKACTOR_TEST_BROKERS`, started by `scripts/test.sh`), or
/// librdkafka's in-process mock cluster.
pub struct TestBroker {
    pub name: &'static str,
    pub broker: Broker,
    partitions: i32,
    bootstrap: Option<String>,
    mock: Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=kafkactor=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The value of `var`, naming a service a test needs (`what`). Unset: the
/// test is skipped, saying so, so that `cargo test` runs on a machine
/// with none of the services; except under `scripts/test.sh`, which starts
/// them all and sets `KAFKACTOR_TEST_REQUIRE_SERVICES`: there an unset
/// variable fails the test (nothing is skipped in CI).
pub fn service(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            assert!(
                std::env::var_os("KAFKACTOR_TEST_REQUIRE_SERVICES").is_none(),
                "{var} is not set, and scripts/test.sh requires it: it starts {what}"
            );
            eprintln!("skipped: {var} is not set (scripts/test.sh starts {what} and sets it)");
            None
        }
    }
}

/// Skips the rest of the test (it returns) when `$service` is None.
#[macro_export]
macro_rules! or_skip {
    ($service:expr) => {
        match $service {
            Some(value) => value,
            None => return,
        }
    };
}

/// The address of the Apache Kafka broker `scripts/test.sh` started; None
/// (the test skips) when `KAFKACTOR_TEST_BROKERS` is unset. Fails when it
/// is set and no broker answers there.
pub fn kafka_address() -> Option<String> {
    let addr = service("KAFKACTOR_TEST_BROKERS", "Apache Kafka")?;
    let first = addr.split(',').next().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(
            &first.parse().expect("host:port"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no Kafka broker reachable at {addr}"
    );
    Some(addr)
}

/// The URL of the Redis `scripts/test.sh` started; None (the test skips)
/// when `KAFKACTOR_TEST_REDIS` is unset.
#[allow(dead_code)]
pub fn redis_url() -> Option<String> {
    service("KAFKACTOR_TEST_REDIS", "Redis")
}

/// The URL of the PostgreSQL database `scripts/test.sh` started; None (the
/// test skips) when `KAFKACTOR_TEST_POSTGRES` is unset.
#[allow(dead_code)]
pub fn postgres_url() -> Option<String> {
    service("KAFKACTOR_TEST_POSTGRES", "PostgreSQL")
}

impl TestBroker {
    pub fn memory(partitions: i32) -> Self {
        init_tracing();
        TestBroker {
            name: "memory",
            broker: Broker::memory_with_partitions(partitions).unwrap(),
            partitions,
            bootstrap: None,
            mock: None,
        }
    }

    /// The Apache Kafka broker `scripts/test.sh` started, with the clients'
    /// normal batching.
    /// Apache Kafka, as `scripts/test.sh` started it; None (the test
    /// skips) when `KAFKACTOR_TEST_BROKERS` is unset.
    pub fn kafka(partitions: i32) -> Option<Self> {
        init_tracing();
        Some(Self::kafka_at(&kafka_address()?, partitions))
    }

    /// An Apache Kafka broker at `addr` (a test's own, e.g. one it kills).
    pub fn kafka_at(addr: &str, partitions: i32) -> Self {
        init_tracing();
        TestBroker {
            name: "kafka",
            broker: kafka_broker(addr, partitions),
            partitions,
            bootstrap: Some(addr.to_string()),
            mock: None,
        }
    }

    pub fn mock(partitions: i32) -> Self {
        init_tracing();
        let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        let broker = kafka_broker(&mock.bootstrap_servers(), partitions);
        TestBroker {
            name: "mock",
            broker,
            partitions,
            bootstrap: Some(mock.bootstrap_servers()),
            mock: Some(mock),
        }
    }

    /// Makes the mock cluster refuse its next writes with errors a
    /// producer retries (a leader moving, a timeout, a lost connection, too
    /// few replicas).
    pub fn refuse_writes_for_a_while(&self) {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr::*};
        let mock = self.mock.as_ref().expect("a mock cluster");
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR__TRANSPORT,
                RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        );
    }

    /// Whether offsets can be committed while a group rebalances, as Kafka
    /// allows until the rebalance completes. librdkafka's mock cluster
    /// refuses them (`REBALANCE_IN_PROGRESS`) from the moment one begins.
    pub fn commits_while_rebalancing(&self) -> bool {
        self.name != "mock"
    }

    pub fn is_kafka(&self) -> bool {
        self.name != "memory"
    }

    /// The bootstrap address of a Kafka broker (None for the embedded one).
    pub fn bootstrap(&self) -> Option<&str> {
        self.bootstrap.as_deref()
    }

    /// The mock cluster, when this is one.
    pub fn mock_cluster(
        &self,
    ) -> Option<&rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>
    {
        self.mock.as_ref()
    }

    /// Creates `topics` and their default dead-letter topics up front (the
    /// mock cluster cannot create topics through the admin API).
    pub async fn topics(&self, topics: &[&str]) {
        for topic in topics {
            self.topic(topic).await;
            self.topic(&format!("{topic}.dlq")).await;
        }
    }

    /// Creates one topic up front.
    pub async fn topic(&self, topic: &str) {
        match &self.mock {
            Some(mock) => mock.create_topic(topic, self.partitions, 1).unwrap(),
            None => self
                .broker
                .create_topic(topic, self.partitions)
                .await
                .unwrap(),
        }
    }

    /// A generous deadline: Kafka groups take seconds to form.
    pub fn patience(&self, memory: Duration) -> Duration {
        if self.is_kafka() {
            memory * 4 + Duration::from_secs(30)
        } else {
            memory
        }
    }

    /// Waits until `group` has committed everything in `topic`.
    pub async fn until_committed(&self, group: &str, topic: &str, timeout: Duration) {
        let broker = self.broker.clone();
        eventually_async(
            &format!("{group} committed all of {topic} on {}", self.name),
            self.patience(timeout),
            || {
                let broker = broker.clone();
                async move {
                    broker
                        .lag(group, topic)
                        .await
                        .map(|lag| lag == 0)
                        .unwrap_or(false)
                }
            },
        )
        .await;
    }

    /// Waits until `topic` holds at least `n` records.
    #[allow(dead_code)]
    pub async fn until_records(&self, topic: &str, n: usize) {
        let broker = self.broker.clone();
        eventually_async(
            &format!("{n} records in {topic} on {}", self.name),
            self.patience(Duration::from_secs(30)),
            || {
                let (broker, topic) = (broker.clone(), topic.to_string());
                async move {
                    broker
                        .read_topic(&topic)
                        .await
                        .map(|r| r.len() >= n)
                        .unwrap_or(false)
                }
            },
        )
        .await;
    }

    pub async fn records(&self, topic: &str) -> Vec<kafkactor::Record> {
        self.broker.read_topic(topic).await.unwrap()
    }
}

fn kafka_broker(addr: &str, partitions: i32) -> Broker {
    let broker = match std::env::var("RDKAFKA_DEBUG") {
        // librdkafka's own debug contexts, e.g. `RDKAFKA_DEBUG=cgrp,fetch`
        // (shown with `RUST_LOG=librdkafka=debug`).
        Ok(contexts) => Broker::kafka(addr).set("debug", contexts),
        Err(_) => Broker::kafka(addr),
    };
    broker
        .topic_partitions(partitions)
        // Fast group membership for tests.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
}

/// One test of a body on one broker: `memory`, `kafka` (skipped, saying
/// so, without `KAFKACTOR_TEST_BROKERS`) or `mock_cluster`.
#[macro_export]
macro_rules! on_broker {
    (memory, $body:path, $partitions:expr) => {
        #[actix::test]
        async fn memory() {
            $body($crate::support::TestBroker::memory($partitions)).await
        }
    };
    (kafka, $body:path, $partitions:expr) => {
        #[actix::test]
        async fn kafka() {
            let tb = $crate::or_skip!($crate::support::TestBroker::kafka($partitions));
            $body(tb).await
        }
    };
    (mock_cluster, $body:path, $partitions:expr) => {
        #[actix::test]
        async fn mock_cluster() {
            $body($crate::support::TestBroker::mock($partitions)).await
        }
    };
}

/// Runs a behaviour test body on each of `brokers`, as module `name`'s
/// tests: `on_brokers!(name, body, partitions, [memory, kafka])`.
#[macro_export]
macro_rules! on_brokers {
    ($name:ident, $body:path, $partitions:expr, [$($broker:ident),+]) => {
        mod $name {
            $( $crate::on_broker!($broker, $body, $partitions); )+
        }
    };
}

/// Runs a behaviour test body on the embedded broker, Apache Kafka and the
/// mock cluster: `on_every_broker!(test_name, body, partitions)` where `body` is
/// `async fn(TestBroker)`.
#[macro_export]
macro_rules! on_every_broker {
    ($name:ident, $body:path, $partitions:expr) => {
        $crate::on_brokers!($name, $body, $partitions, [memory, kafka, mock_cluster]);
    };
}

/// Runs a behaviour test body on the embedded broker and Apache Kafka (for
/// behaviour the mock cluster cannot show: it creates no topic through the
/// admin API): `on_memory_and_kafka!(test_name, body, partitions)`.
#[macro_export]
macro_rules! on_memory_and_kafka {
    ($name:ident, $body:path, $partitions:expr) => {
        $crate::on_brokers!($name, $body, $partitions, [memory, kafka]);
    };
}

/// Like [`on_every_broker!`] for behaviour only Kafka has: Apache Kafka and the mock cluster.
#[macro_export]
macro_rules! on_every_kafka_broker {
    ($name:ident, $body:path, $partitions:expr) => {
        $crate::on_brokers!($name, $body, $partitions, [kafka, mock_cluster]);
    };
}
