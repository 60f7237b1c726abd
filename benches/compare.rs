//! Side-by-side benchmarks: each scenario runs for kafkactor and for a
//! hand-written baseline in the same process, alternating, for several
//! rounds; the table reports medians and the median of the per-round ratios
//! (kafkactor / baseline), and `target/bench/compare.json` gets one JSON
//! object per scenario.
//!
//! `cargo bench --bench compare` (or `scripts/bench.sh`, which starts Apache
//! Kafka for the Kafka scenarios). Sizes: `--quick` (about a minute) or `--full`
//! (about ten), or the `KAFKACTOR_BENCH_*` variables below. Kafka scenarios
//! run when `KAFKACTOR_BENCH_BROKERS` names a broker.
//!
//! Both sides of the embedded scenarios run on one thread (an actix System,
//! a current-thread tokio runtime), so the ratio is the framework's cost,
//! not a difference in parallelism.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

/// The benchmark record: 128 bytes as named-field MessagePack.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sample {
    id: u64,
    account: String,
    amount_cents: i64,
    currency: String,
    sent_nanos: u64,
    note: String,
}

fn sample(id: u64) -> Sample {
    Sample {
        id,
        account: format!("acct-{:010}", id % 1_000),
        amount_cents: (id as i64 % 100_000) - 50_000,
        currency: "EUR".into(),
        sent_nanos: 0,
        note: "x".repeat(36),
    }
}

fn key_of(id: u64, keys: u64) -> String {
    format!("key-{}", id % keys)
}

#[derive(Debug, Clone)]
struct Sizes {
    records: u64,
    keys: u64,
    rounds: usize,
    kafka_records: u64,
    latency_seconds: u64,
    scale_subscriptions: usize,
    delay_records: u64,
    brokers: Option<String>,
    only: Option<String>,
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Sizes {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--full");
        let mut s = if full {
            Sizes {
                records: 1_000_000,
                keys: 1_000,
                rounds: 5,
                kafka_records: 200_000,
                latency_seconds: 5,
                scale_subscriptions: 10_000,
                delay_records: 100_000,
                brokers: None,
                only: None,
            }
        } else {
            Sizes {
                records: 200_000,
                keys: 1_000,
                rounds: 3,
                kafka_records: 50_000,
                latency_seconds: 2,
                scale_subscriptions: 10_000,
                delay_records: 100_000,
                brokers: None,
                only: None,
            }
        };
        s.records = env("KAFKACTOR_BENCH_RECORDS").unwrap_or(s.records);
        s.rounds = env("KAFKACTOR_BENCH_ROUNDS").unwrap_or(s.rounds);
        s.kafka_records = env("KAFKACTOR_BENCH_KAFKA_RECORDS").unwrap_or(s.kafka_records);
        s.latency_seconds = env("KAFKACTOR_BENCH_LATENCY_SECONDS").unwrap_or(s.latency_seconds);
        s.scale_subscriptions = env("KAFKACTOR_BENCH_SCALE").unwrap_or(s.scale_subscriptions);
        s.delay_records = env("KAFKACTOR_BENCH_DELAY_RECORDS").unwrap_or(s.delay_records);
        s.brokers = std::env::var("KAFKACTOR_BENCH_BROKERS")
            .ok()
            .filter(|b| !b.is_empty());
        s.only = std::env::var("KAFKACTOR_BENCH_ONLY")
            .ok()
            .filter(|o| !o.is_empty());
        s
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|s| scenario.starts_with(s.trim())))
    }
}

/// One scenario's measurements.
struct Outcome2 {
    scenario: String,
    unit: &'static str,
    higher_is_better: bool,
    kafkactor: Vec<f64>,
    baseline: Vec<f64>,
    target: Option<(f64, &'static str)>,
    notes: String,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Outcome2 {
    fn ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .kafkactor
            .iter()
            .zip(&self.baseline)
            .map(|(k, b)| k / b)
            .collect();
        median(&ratios)
    }

    fn met(&self) -> Option<bool> {
        let (target, _) = self.target?;
        let r = self.ratio();
        Some(if self.higher_is_better {
            r >= target
        } else {
            r <= target
        })
    }

    fn json(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            r#"{{"scenario":"{}","unit":"{}","kafkactor":[{}],"baseline":[{}],"kafkactor_median":{:.1},"baseline_median":{:.1},"ratio_median":{:.3},"target":{},"met":{},"notes":"{}"}}"#,
            self.scenario,
            self.unit,
            list(&self.kafkactor),
            list(&self.baseline),
            median(&self.kafkactor),
            median(&self.baseline),
            self.ratio(),
            self.target
                .map_or("null".to_string(), |(t, _)| format!("{t}")),
            self.met().map_or("null".to_string(), |m| m.to_string()),
            self.notes.replace('"', "'"),
        )
    }
}

// ---------------------------------------------------------------- embedded e2e

struct Noop {
    handled: Arc<AtomicU64>,
}

impl Actor for Noop {
    type Context = Context<Self>;
}

impl Handler<Delivery<Sample>> for Noop {
    type Result = kafkactor::Outcome;

    fn handle(&mut self, d: Delivery<Sample>, _: &mut Context<Self>) -> kafkactor::Outcome {
        std::hint::black_box(d.message());
        self.handled.fetch_add(1, Ordering::Relaxed);
        kafkactor::Outcome::Ack
    }
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// Unique per process run too: topics and groups on a shared broker outlive runs.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes `n` records (at most `window` in flight) and returns when
/// every one is acknowledged.
async fn publish(app: &App, topic: &str, n: u64, keys: u64, window: usize) {
    let producer = app.producer();
    let mut pending = std::collections::VecDeque::with_capacity(window);
    for id in 0..n {
        let publish = Publish::to(topic)
            .key(key_of(id, keys))
            .message(&sample(id))
            .unwrap();
        pending.push_back(producer.send(publish));
        if pending.len() >= window {
            pending.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

/// Records per second, from the first publish until every record is committed.
async fn kafkactor_e2e(n: u64, keys: u64, concurrency: usize) -> f64 {
    let broker = Broker::memory();
    let (topic, group) = (unique("e2e"), unique("g"));
    let handled = Arc::new(AtomicU64::new(0));
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(concurrency),
            {
                let handled = handled.clone();
                move || Noop {
                    handled: handled.clone(),
                }
            },
        )
        .start()
        .await
        .unwrap();
    let memory = broker.as_memory().unwrap();
    let started = Instant::now();
    publish(&app, &topic, n, keys, 1_000).await;
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while memory.lag(&group, &topic) > 0 {
        assert!(Instant::now() < deadline, "embedded_e2e did not finish");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(handled.load(Ordering::Relaxed), n);
    app.shutdown().await.unwrap();
    tracing::debug!(?published, ?elapsed, "embedded_e2e");
    n as f64 / elapsed.as_secs_f64()
}

/// The hand-written pipeline: the same records encoded the same way, sent
/// over bounded mpsc channels (one per worker, chosen by key hash so a key
/// stays in order) to `workers` tasks that decode them and call a no-op.
async fn baseline_e2e(n: u64, keys: u64, workers: usize) -> f64 {
    let handled = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1_000);
        senders.push(tx);
        let handled = handled.clone();
        tasks.push(actix::spawn(async move {
            while let Some((_key, bytes)) = rx.recv().await {
                let s: Sample = rmp_serde::from_slice(&bytes).unwrap();
                std::hint::black_box(&s);
                handled.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for id in 0..n {
        let key = key_of(id, keys);
        let bytes = rmp_serde::to_vec_named(&sample(id)).unwrap();
        let lane = kafkactor::murmur2(key.as_bytes()) as usize % workers;
        senders[lane].send((key, bytes)).await.unwrap();
    }
    drop(senders);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(handled.load(Ordering::Relaxed), n);
    n as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------- latency

/// Per-record latency from publish to handler, at `rate` records/s for
/// `seconds`: (p50, p99) in microseconds.
async fn kafkactor_latency(rate: u64, seconds: u64) -> (f64, f64) {
    let broker = Broker::memory();
    let (topic, group) = (unique("lat"), unique("g"));
    let epoch = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .handle(Subscription::to(topic.as_str()).group(group.as_str()), {
            let samples = samples.clone();
            move |d: Delivery<Sample>| {
                let now = epoch.elapsed().as_nanos() as u64;
                samples.lock().unwrap().push(now - d.message().sent_nanos);
                async { kafkactor::Outcome::Ack }
            }
        })
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let total = rate * seconds;
    paced(rate, total, |id| {
        let mut s = sample(id);
        s.sent_nanos = epoch.elapsed().as_nanos() as u64;
        producer.do_send(
            Publish::to(topic.as_str())
                .key(key_of(id, 1_000))
                .message(&s)
                .unwrap(),
        );
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (samples.lock().unwrap().len() as u64) < total {
        assert!(Instant::now() < deadline, "latency run did not finish");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    app.shutdown().await.unwrap();
    let v = std::mem::take(&mut *samples.lock().unwrap());
    percentiles(v)
}

async fn baseline_latency(rate: u64, seconds: u64) -> (f64, f64) {
    let epoch = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(1_000);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let samples = samples.clone();
        actix::spawn(async move {
            while let Some((_key, bytes)) = rx.recv().await {
                let s: Sample = rmp_serde::from_slice(&bytes).unwrap();
                let now = epoch.elapsed().as_nanos() as u64;
                samples.lock().unwrap().push(now - s.sent_nanos);
            }
        })
    };
    let total = rate * seconds;
    paced(rate, total, |id| {
        let mut s = sample(id);
        s.sent_nanos = epoch.elapsed().as_nanos() as u64;
        let _ = tx.try_send((key_of(id, 1_000), rmp_serde::to_vec_named(&s).unwrap()));
    })
    .await;
    drop(tx);
    worker.await.unwrap();
    let v = std::mem::take(&mut *samples.lock().unwrap());
    percentiles(v)
}

/// Calls `send(id)` for ids 0..total at `rate` per second, in 1 ms ticks.
async fn paced(rate: u64, total: u64, mut send: impl FnMut(u64)) {
    let started = Instant::now();
    let mut id = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while id < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while id < due {
            send(id);
            id += 1;
        }
    }
}

/// p50 and p99 in ms of latencies in µs.
fn percentiles(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let ms: Vec<f64> = v.into_iter().map(|us| us as f64 / 1_000.0).collect();
    (quantile(&ms, 0.50), quantile(&ms, 0.99))
}

// ---------------------------------------------------------------- Kafka

mod kafka {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
    use rdkafka::ClientConfig;

    /// The headers kafkactor gives a `Sample` (content type and type name),
    /// with room for `capacity` in all.
    fn sample_headers(capacity: usize) -> rdkafka::message::OwnedHeaders {
        rdkafka::message::OwnedHeaders::new_with_capacity(capacity)
            .insert(rdkafka::message::Header {
                key: "content-type",
                value: Some("application/msgpack"),
            })
            .insert(rdkafka::message::Header {
                key: "x-type",
                value: Some("Sample"),
            })
    }

    /// A plain consumer in a group of its own, from the beginning.
    pub(super) fn consumer_settings(brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("group.id", unique("bench-raw-g"))
            .set("auto.offset.reset", "earliest");
        c
    }

    pub(super) fn producer_settings(brokers: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random");
        c
    }

    thread_local! {
        /// The in-process mock cluster, when the run uses one.
        pub(super) static MOCK: std::cell::RefCell<Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// The bootstrap servers of the run's mock cluster, started on first use.
    pub(super) fn mock_cluster() -> String {
        MOCK.with(|m| {
            m.borrow_mut()
                .get_or_insert_with(|| rdkafka::mocking::MockCluster::new(1).unwrap())
                .bootstrap_servers()
        })
    }

    pub(super) async fn create(brokers: &str, topic: &str) {
        create_partitions(brokers, topic, 3).await
    }

    pub(super) async fn create_partitions(brokers: &str, topic: &str, partitions: i32) {
        let mocked = MOCK.with(|m| {
            m.borrow()
                .as_ref()
                .map(|m| m.create_topic(topic, partitions, 1).unwrap())
                .is_some()
        });
        if !mocked {
            Broker::kafka(brokers)
                .create_topic(topic, partitions)
                .await
                .unwrap();
        }
    }

    pub(super) async fn kafkactor_produce(brokers: &str, n: u64) -> f64 {
        let topic = unique("bench-produce");
        create(brokers, &topic).await;
        let app = Kafkactor::builder()
            .broker(Broker::kafka(brokers))
            .start()
            .await
            .unwrap();
        let started = Instant::now();
        publish(&app, &topic, n, 1_000, 10_000).await;
        let elapsed = started.elapsed();
        app.shutdown().await.unwrap();
        n as f64 / elapsed.as_secs_f64()
    }

    /// Key, payload and headers of record `id` as kafkactor writes it: the
    /// msgpack sample and its four headers.
    fn sample_record(id: u64) -> (String, Vec<u8>, rdkafka::message::OwnedHeaders) {
        let key = key_of(id, 1_000);
        let payload = rmp_serde::to_vec_named(&sample(id)).unwrap();
        let id_text = uuid::Uuid::now_v7().to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string();
        let headers = sample_headers(4)
            .insert(rdkafka::message::Header {
                key: "x-message-id",
                value: Some(&id_text),
            })
            .insert(rdkafka::message::Header {
                key: "x-timestamp",
                value: Some(&now),
            });
        (key, payload, headers)
    }

    /// A `FutureProducer` with 10,000 deliveries awaited in flight.
    pub(super) async fn raw_produce(brokers: &str, n: u64) -> f64 {
        let topic = unique("bench-raw-produce");
        create(brokers, &topic).await;
        let producer: FutureProducer = producer_settings(brokers).create().unwrap();
        let started = Instant::now();
        let mut pending = std::collections::VecDeque::with_capacity(10_000);
        for id in 0..n {
            let (key, payload, headers) = sample_record(id);
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            pending.push_back(producer.send_result(record).map_err(|(e, _)| e).unwrap());
            if pending.len() >= 10_000 {
                pending.pop_front().unwrap().await.unwrap().unwrap();
            }
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
        n as f64 / started.elapsed().as_secs_f64()
    }

    /// Counts delivery reports on the polling thread, failing on an error.
    struct Counting(Arc<AtomicU64>);
    impl rdkafka::ClientContext for Counting {}
    impl rdkafka::producer::ProducerContext for Counting {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
            result.as_ref().map_err(|(e, _)| e).unwrap();
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A `BaseProducer` polled in the sending loop: the client's own limit
    /// (no future per record, delivery reports counted in a callback).
    pub(super) async fn raw_produce_base(brokers: &str, n: u64) -> f64 {
        let topic = unique("bench-raw-base-produce");
        create(brokers, &topic).await;
        let delivered = Arc::new(AtomicU64::new(0));
        let producer: BaseProducer<Counting> = producer_settings(brokers)
            .create_with_context(Counting(delivered.clone()))
            .unwrap();
        let started = Instant::now();
        for id in 0..n {
            let (key, payload, headers) = sample_record(id);
            let mut record = BaseRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "{e}"
                        );
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        assert_eq!(delivered.load(Ordering::Relaxed), n);
        n as f64 / started.elapsed().as_secs_f64()
    }

    /// A topic with `n` records, produced by a plain producer.
    pub(super) async fn prepared_topic(brokers: &str, n: u64) -> String {
        let topic = unique("bench-consume");
        create(brokers, &topic).await;
        create(brokers, &format!("{topic}.dlq")).await;
        let producer: FutureProducer = producer_settings(brokers).create().unwrap();
        // At most 50,000 unacknowledged: librdkafka's queue holds 100,000.
        let mut pending = std::collections::VecDeque::with_capacity(50_000);
        for id in 0..n {
            let key = key_of(id, 1_000);
            let payload = rmp_serde::to_vec_named(&sample(id)).unwrap();
            let headers = sample_headers(2);
            if pending.len() >= 50_000 {
                let p: rdkafka::producer::DeliveryFuture = pending.pop_front().unwrap();
                p.await.unwrap().unwrap();
            }
            pending.push_back(
                producer
                    .send_result(
                        FutureRecord::to(&topic)
                            .key(&key)
                            .payload(&payload)
                            .headers(headers),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
        topic
    }

    pub(super) async fn kafkactor_consume(brokers: &str, topic: &str, n: u64) -> f64 {
        let handled = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut broker = Broker::kafka(brokers);
        if let Ok(debug) = std::env::var("BENCH_RDKAFKA_DEBUG") {
            broker = broker.set("debug", debug);
        }
        let app = Kafkactor::builder()
            .broker(broker)
            .subscribe(Subscription::to(topic).group(unique("bench-g").as_str()), {
                let handled = handled.clone();
                move || Noop {
                    handled: handled.clone(),
                }
            })
            .start()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while handled.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "kafka_consume did not finish");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        app.shutdown().await.unwrap();
        n as f64 / elapsed.as_secs_f64()
    }

    /// A plain rdkafka pipeline on the same broker with the same client
    /// settings: `n` records produced at `rate` per second and consumed,
    /// each one's time from the produce call to its arrival in ms, sorted.
    /// Any delivery through this broker at this rate, delayed or not, pays
    /// at least this.
    pub(super) async fn raw_latency(
        brokers: &str,
        n: u64,
        rate: f64,
        settings: &[(&str, &str)],
    ) -> Vec<f64> {
        use futures_util::StreamExt;
        use rdkafka::message::Message;
        let topic = unique("bench-raw-latency");
        create(brokers, &topic).await;
        let mut producer = producer_settings(brokers);
        let mut consumer = consumer_settings(brokers);
        for (k, v) in settings {
            // librdkafka warns about producer settings given to a consumer
            // and the reverse; each takes its own.
            if k.starts_with("fetch.") {
                consumer.set(*k, *v);
            } else {
                producer.set(*k, *v);
            }
        }
        let producer: FutureProducer = producer.create().unwrap();
        let consumer: StreamConsumer = consumer.create().unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let warm_up = 200;
        let sent: std::rc::Rc<std::cell::RefCell<Vec<Option<Instant>>>> =
            std::rc::Rc::new(std::cell::RefCell::new(vec![None; (warm_up + n) as usize]));
        let send = |id: u64| {
            sent.borrow_mut()[id as usize] = Some(Instant::now());
            let key = id.to_string();
            let payload = rmp_serde::to_vec_named(&sample(id)).unwrap();
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer.send_result(record).map_err(|(e, _)| e).unwrap()
        };
        let receive = async {
            let mut latencies = Vec::with_capacity(n as usize);
            let mut stream = consumer.stream();
            let mut seen = 0;
            while seen < warm_up + n {
                let m = stream.next().await.unwrap().unwrap();
                let id: u64 = std::str::from_utf8(m.key().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                let at = sent.borrow()[id as usize].unwrap();
                if id >= warm_up {
                    latencies.push(at.elapsed().as_secs_f64() * 1e3);
                }
                seen += 1;
            }
            latencies
        };
        let produce = async {
            // Warm-up: the consumer joins its group and fetches.
            for id in 0..warm_up {
                send(id).await.unwrap().unwrap();
            }
            let started = Instant::now();
            let mut pending = std::collections::VecDeque::new();
            for i in 0..n {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                pending.push_back(send(warm_up + i));
                if pending.len() >= 10_000 {
                    pending.pop_front().unwrap().await.unwrap().unwrap();
                }
            }
            for p in pending {
                p.await.unwrap().unwrap();
            }
        };
        let (mut latencies, ()) = futures_util::future::join(receive, produce).await;
        latencies.sort_by(f64::total_cmp);
        latencies
    }

    /// Latency of a trickle (one record per ms, plain producer -> plain
    /// consumer) while a `BaseProducer` on a thread of its own writes `n`
    /// records as fast as the broker takes them: the broker's floor during a
    /// publish burst like delay_precision's.
    pub(super) async fn raw_latency_under_flood(brokers: &str, n: u64) -> Vec<f64> {
        use futures_util::StreamExt;
        use rdkafka::message::Message;
        let (flood_topic, topic) = (unique("bench-flood"), unique("bench-trickle"));
        create(brokers, &flood_topic).await;
        create(brokers, &topic).await;
        let producer: FutureProducer = producer_settings(brokers).create().unwrap();
        let consumer: StreamConsumer = consumer_settings(brokers).create().unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        // Warm up the trickle path.
        let start_ns = Instant::now();
        let stamp = || start_ns.elapsed().as_nanos().to_string();
        let mut stream = consumer.stream();
        for _ in 0..100 {
            producer
                .send(
                    FutureRecord::to(&topic).key("k").payload(&stamp()),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        for _ in 0..100 {
            stream.next().await.unwrap().unwrap();
        }
        // The flood on a thread of its own: a BaseProducer as fast as the
        // broker takes it.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooder = {
            let (done, brokers, flood_topic) =
                (done.clone(), brokers.to_string(), flood_topic.clone());
            std::thread::spawn(move || {
                let delivered = Arc::new(AtomicU64::new(0));
                let p: BaseProducer<Counting> = producer_settings(&brokers)
                    .create_with_context(Counting(delivered))
                    .unwrap();
                for id in 0..n {
                    let (key, payload, headers) = sample_record(id);
                    let mut record = BaseRecord::to(&flood_topic)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers);
                    loop {
                        match p.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                p.poll(Duration::from_millis(1));
                            }
                        }
                    }
                    p.poll(Duration::ZERO);
                }
                p.flush(Duration::from_secs(120)).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        let trickle = async {
            let mut sent = 0u64;
            let mut latencies = Vec::new();
            let tick = tokio::time::interval(Duration::from_millis(1));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    _ = tick.tick(), if !done.load(Ordering::SeqCst) => {
                        producer.send_result(FutureRecord::to(&topic).key("k").payload(&stamp())).map_err(|(e, _)| e).unwrap();
                        sent += 1;
                    }
                    m = stream.next() => {
                        let m = m.unwrap().unwrap();
                        let at: u128 = std::str::from_utf8(m.payload().unwrap()).unwrap().parse().unwrap();
                        latencies.push((start_ns.elapsed().as_nanos() - at) as f64 / 1e6);
                        if done.load(Ordering::SeqCst) && latencies.len() as u64 >= sent { break; }
                    }
                }
            }
            latencies
        };
        let mut latencies = trickle.await;
        flooder.join().unwrap();
        latencies.sort_by(f64::total_cmp);
        latencies
    }

    /// A `StreamConsumer`: decode, store the offset, commit automatically.
    pub(super) async fn raw_consume(brokers: &str, topic: &str, n: u64) -> f64 {
        use futures_util::StreamExt;
        use rdkafka::message::Message;
        let started = Instant::now();
        let consumer: StreamConsumer = consumer_settings(brokers)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut stream = consumer.stream();
        let mut count = 0;
        while count < n {
            let m = stream.next().await.unwrap().unwrap();
            let s: Sample = rmp_serde::from_slice(m.payload().unwrap()).unwrap();
            std::hint::black_box(&s);
            consumer.store_offset_from_message(&m).unwrap();
            count += 1;
        }
        drop(stream);
        let elapsed = started.elapsed();
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        n as f64 / elapsed.as_secs_f64()
    }

    /// A `BaseConsumer` polled in a loop: decode, store the offset, commit
    /// automatically (the client's own limit).
    pub(super) async fn raw_consume_base(brokers: &str, topic: &str, n: u64) -> f64 {
        use rdkafka::message::Message;
        let started = Instant::now();
        let consumer: BaseConsumer = consumer_settings(brokers)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut count = 0;
        while count < n {
            assert!(Instant::now() < deadline, "raw BaseConsumer did not finish");
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            let s: Sample = rmp_serde::from_slice(m.payload().unwrap()).unwrap();
            std::hint::black_box(&s);
            consumer.store_offset_from_message(&m).unwrap();
            count += 1;
        }
        let elapsed = started.elapsed();
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        n as f64 / elapsed.as_secs_f64()
    }
}

// ---------------------------------------------------------------- scale

/// Starts `n` subscriptions in one application: (start seconds, resident
/// MiB, CPU % while idle for 5 s).
async fn scale(n: usize) -> (f64, f64, f64) {
    let broker = Broker::memory_with_partitions(1).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let rss_before = rss_mib();
    let started = Instant::now();
    let mut builder = Kafkactor::builder().broker(broker.clone());
    for i in 0..n {
        let handled = handled.clone();
        builder = builder.subscribe(
            Subscription::to(format!("scale-{i}")).group(format!("g-{i}")),
            move || Noop {
                handled: handled.clone(),
            },
        );
    }
    let app = builder.start().await.unwrap();
    // Started means every subscription has joined its group.
    let memory = broker.as_memory().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in (0..n).rev() {
        while memory.assignment(&format!("g-{i}")).is_empty() {
            assert!(Instant::now() < deadline, "subscriptions did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let start_secs = started.elapsed().as_secs_f64();
    let rss = rss_mib() - rss_before;
    let cpu_before = cpu_seconds();
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = (cpu_seconds() - cpu_before) / idle_from.elapsed().as_secs_f64() * 100.0;
    app.shutdown().await.unwrap();
    (start_secs, rss, cpu)
}

fn proc_status(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_mib() -> f64 {
    proc_status("VmRSS:").unwrap_or(0.0) / 1024.0
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: utime is field 14, stime 15 (1-based), here 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

// ---------------------------------------------------------------- delay precision

/// What `delay_precision` measured on one broker.
struct Precision {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    early: usize,
    idle_cpu_pct: f64,
}

/// The bucket topics of `Delays::default()`, by label.
const DEFAULT_BUCKET_LABELS: [&str; 10] = [
    "0s", "1s", "5s", "30s", "1m", "5m", "15m", "1h", "6h", "24h",
];

/// Publishes `n` records delayed 1-10 s, measures each one's lateness at the
/// handler against its `deliver_at`, then the process's CPU for 5 s while
/// 1,000 records wait an hour in their bucket (nothing due). With `kafka`
/// (its bootstrap servers and the bucket topics' partitions) the topics are
/// created up front, as the mock cluster cannot create them through the
/// admin API.
async fn delay_precision(broker: Broker, kafka: Option<(&str, i32)>, n: u64) -> Precision {
    let topic = unique("delayed");
    let prefix = unique("delay");
    if let Some((brokers, partitions)) = kafka {
        kafka::create(brokers, &topic).await;
        kafka::create(brokers, &format!("{topic}.dlq")).await;
        for label in DEFAULT_BUCKET_LABELS {
            let bucket = format!("{prefix}.{label}");
            kafka::create_partitions(brokers, &bucket, partitions).await;
            kafka::create(brokers, &format!("{bucket}.dlq")).await;
        }
    }
    let arrivals: Arc<Mutex<Vec<(u64, std::time::SystemTime, i64)>>> = Arc::default();
    let app = Kafkactor::builder()
        .broker(broker)
        .delays(
            kafkactor::Delays::default()
                .topic_prefix(&prefix)
                .group(&unique("republisher")),
        )
        .handle(
            Subscription::to(topic.as_str()).group(unique("g").as_str()),
            {
                let arrivals = arrivals.clone();
                move |d: Delivery<Sample>| {
                    let arrivals = arrivals.clone();
                    async move {
                        let now = std::time::SystemTime::now();
                        arrivals
                            .lock()
                            .unwrap()
                            .push((d.message().id, now, d.timestamp_ms()));
                        kafkactor::Outcome::Ack
                    }
                }
            },
        )
        .start()
        .await
        .unwrap();
    // Kafka groups take seconds to form: start once the consumers own their partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.assigned_partitions().len() < 2 {
        assert!(Instant::now() < deadline, "consumers did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = app.producer();
    // Warm-up: every consumer on the path fetching (a Kafka consumer's
    // first fetches after joining are slow).
    for id in 0..200 {
        let warm = Publish::to(topic.as_str())
            .key(key_of(id, 1_000))
            .message(&sample(id))
            .unwrap()
            .delay(Duration::from_millis(id % 2 * 300));
        producer.send(warm).await.unwrap().unwrap();
    }
    while arrivals.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "warm-up records did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    arrivals.lock().unwrap().clear();
    let mut due = vec![std::time::UNIX_EPOCH; n as usize];
    let mut pending = std::collections::VecDeque::new();
    let record = |id: u64, delay: Duration| {
        Publish::to(topic.as_str())
            .key(key_of(id, 1_000))
            .message(&sample(id))
            .unwrap()
            .delay(delay)
    };
    let due_of = |outcome: kafkactor::PublishOutcome| match outcome {
        kafkactor::PublishOutcome::Delayed { deliver_at, .. } => deliver_at,
        other => panic!("not delayed: {other:?}"),
    };
    for id in 0..n {
        let delay = Duration::from_millis(1_000 + (id * 7_919) % 9_000);
        pending.push_back((id, producer.send(record(id, delay))));
        if pending.len() >= 10_000 {
            let (id, p) = pending.pop_front().unwrap();
            due[id as usize] = due_of(p.await.unwrap().unwrap());
        }
    }
    for (id, p) in pending {
        due[id as usize] = due_of(p.await.unwrap().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (arrivals.lock().unwrap().len() as u64) < n {
        if Instant::now() > deadline {
            let arrived: std::collections::HashSet<u64> = arrivals
                .lock()
                .unwrap()
                .iter()
                .map(|(id, ..)| *id)
                .collect();
            let missing: Vec<u64> = (0..n).filter(|id| !arrived.contains(id)).collect();
            panic!(
                "{} of {n} delayed records did not arrive within 120 s, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut late_ms: Vec<f64> = Vec::with_capacity(n as usize);
    let mut early = 0;
    for (id, at, _) in arrivals.lock().unwrap().iter() {
        match at.duration_since(due[*id as usize]) {
            Ok(late) => late_ms.push(late.as_secs_f64() * 1e3),
            Err(_) => early += 1,
        }
    }
    if std::env::var_os("KAFKACTOR_BENCH_DELAY_PROFILE").is_some() {
        // Lateness by the second (from the first due time) records were due in.
        let first = due.iter().min().copied().unwrap_or(std::time::UNIX_EPOCH);
        // (arrival - due, written by the Republisher - due), ms.
        let mut by_second: BTreeMap<u64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for (id, at, written_ms) in arrivals.lock().unwrap().iter() {
            let d = due[*id as usize];
            let second = d.duration_since(first).unwrap_or_default().as_secs();
            let late = at.duration_since(d).map_or(0.0, |l| l.as_secs_f64() * 1e3);
            let due_ms = d.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
            let entry = by_second.entry(second).or_default();
            entry.0.push(late);
            entry.1.push(*written_ms as f64 - due_ms);
        }
        for (second, (mut late, mut written)) in by_second {
            late.sort_by(f64::total_cmp);
            written.sort_by(f64::total_cmp);
            eprintln!(
                "  due +{second}s: {} records, late p50 {:.1} ms p99 {:.1} ms max {:.1} ms; written p50 {:.0} p99 {:.0} ms after due",
                late.len(),
                quantile(&late, 0.5),
                quantile(&late, 0.99),
                quantile(&late, 1.0),
                quantile(&written, 0.5),
                quantile(&written, 0.99),
            );
        }
    }
    late_ms.sort_by(f64::total_cmp);

    for id in 0..1_000 {
        producer
            .send(record(n + id, Duration::from_secs(3_600)))
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds();
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu_pct = (cpu_seconds() - cpu_before) / idle_from.elapsed().as_secs_f64() * 100.0;
    app.shutdown().await.unwrap();
    Precision {
        p50_ms: quantile(&late_ms, 0.50),
        p99_ms: quantile(&late_ms, 0.99),
        max_ms: quantile(&late_ms, 1.0),
        early,
        idle_cpu_pct,
    }
}

/// A row of an absolute figure: its "baseline" is its target (at most),
/// or the figure itself when it has none.
fn absolute(
    scenario: String,
    unit: &'static str,
    value: f64,
    target: Option<f64>,
    notes: String,
) -> Outcome2 {
    Outcome2 {
        scenario,
        unit,
        higher_is_better: false,
        kafkactor: vec![value],
        baseline: vec![target.unwrap_or(value)],
        target: target.map(|_| (1.0, "<=")),
        notes,
    }
}

/// The rows of the Kafka broker's own produce -> consume latency.
fn floor_rows(prefix: &str, sorted: &[f64], notes: &str) -> Vec<Outcome2> {
    let (p50, p99, max) = (
        quantile(sorted, 0.5),
        quantile(sorted, 0.99),
        quantile(sorted, 1.0),
    );
    eprintln!("  {prefix} ({notes}): p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms");
    [("p50_ms", p50), ("p99_ms", p99), ("max_ms", max)]
        .into_iter()
        .map(|(name, value)| {
            absolute(
                format!("{prefix}_{name}"),
                "ms",
                value,
                None,
                notes.to_string(),
            )
        })
        .collect()
}

/// A Kafka broker handle with librdkafka settings.
fn with_settings(brokers: &str, settings: &[(&str, &str)]) -> Broker {
    settings
        .iter()
        .fold(Broker::kafka(brokers), |b, (k, v)| b.set(*k, *v))
}

/// The `q` quantile of sorted values (1.0: the largest).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n as f64 * q) as usize).min(n - 1)],
    }
}

/// Prints one broker's `delay_precision` figures and returns its rows
/// (absolute figures against their targets).
fn precision_rows(on: &str, n: u64, p: &Precision) -> Vec<Outcome2> {
    eprintln!(
        "  delay_precision {on}: p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} early, idle CPU {:.2}%",
        p.p50_ms, p.p99_ms, p.max_ms, p.early, p.idle_cpu_pct
    );
    let notes = format!("{n} records delayed 1-10 s on {on}; lateness at the handler");
    [
        ("p50_ms", p.p50_ms, None, "ms late"),
        ("p99_ms", p.p99_ms, Some(20.0), "ms late"),
        ("max_ms", p.max_ms, None, "ms late"),
        ("early", p.early as f64, None, "records"),
        ("idle_cpu_pct", p.idle_cpu_pct, Some(1.0), "percent"),
    ]
    .into_iter()
    .map(|(name, value, target, unit)| {
        let scenario = format!("delay_precision_{on}_{name}");
        absolute(scenario, unit, value, target, notes.clone())
    })
    .collect()
}

// ---------------------------------------------------------------- main

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Test runners (`cargo test --all-targets`, nextest's `--list`) run bench
    // binaries too: only `cargo bench` (which passes `--bench`) measures.
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    // RUST_LOG=kafkactor=debug shows what the framework does during a run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let sizes = Sizes::from_args();
    eprintln!("sizes: {sizes:?}");
    let system = actix::System::new();
    let outcomes = system.block_on(run(sizes.clone()));
    report(&sizes, &outcomes);
}

/// A Kafka throughput scenario (records/s, kafkactor against one raw client).
fn kafka_outcome(scenario: &str, target: Option<f64>, notes: &str) -> Outcome2 {
    Outcome2 {
        scenario: scenario.into(),
        unit: "records/s",
        higher_is_better: true,
        kafkactor: Vec::new(),
        baseline: Vec::new(),
        target: target.map(|t| (t, ">=")),
        notes: notes.to_string(),
    }
}

/// One round of three sides, started in an order that rotates with the
/// round number; the results in the order given.
async fn rotated<const N: usize>(
    round: usize,
    sides: [std::pin::Pin<Box<dyn Future<Output = f64> + '_>>; N],
) -> [f64; N] {
    let mut sides: Vec<_> = sides.into_iter().map(Some).collect();
    let mut results = [0.0; N];
    for i in 0..N {
        let at = (i + round) % N;
        results[at] = sides[at].take().unwrap().await;
    }
    results
}

/// One round: both sides, the order alternating with the round number so
/// neither always runs on a warm (or cold) process.
async fn pair<T, K, B>(round: usize, kafkactor: K, baseline: B) -> (T, T)
where
    K: Future<Output = T>,
    B: Future<Output = T>,
{
    if round % 2 == 0 {
        let k = kafkactor.await;
        (k, baseline.await)
    } else {
        let b = baseline.await;
        (kafkactor.await, b)
    }
}

async fn run(sizes: Sizes) -> Vec<Outcome2> {
    let mut out = Vec::new();
    let mut max_rate = None;
    for concurrency in [1usize, 4] {
        let name = format!("embedded_e2e_c{concurrency}");
        if !sizes.wants(&name) {
            continue;
        }
        let mut o = Outcome2 {
            scenario: name,
            unit: "records/s",
            higher_is_better: true,
            kafkactor: Vec::new(),
            baseline: Vec::new(),
            target: Some((0.5, ">=")),
            notes: format!(
                "{} records, {} keys, 128-byte msgpack, no-op handler",
                sizes.records, sizes.keys
            ),
        };
        for round in 0..sizes.rounds {
            let (k, b) = pair(
                round,
                kafkactor_e2e(sizes.records, sizes.keys, concurrency),
                baseline_e2e(sizes.records, sizes.keys, concurrency),
            )
            .await;
            eprintln!(
                "  {} round {round}: kafkactor {k:.0}/s baseline {b:.0}/s",
                o.scenario
            );
            o.kafkactor.push(k);
            o.baseline.push(b);
        }
        if concurrency == 1 {
            max_rate = Some(median(&o.kafkactor));
        }
        out.push(o);
    }

    if sizes.wants("latency") {
        let max = match max_rate {
            Some(m) => m,
            None => kafkactor_e2e(sizes.records.min(100_000), sizes.keys, 1).await,
        };
        let rate = ((max * 0.10) as u64).max(100);
        let mut p50 = Outcome2 {
            scenario: "latency_p50_us".into(),
            unit: "microseconds",
            higher_is_better: false,
            kafkactor: Vec::new(),
            baseline: Vec::new(),
            target: None,
            notes: format!("publish to handler at {rate} records/s (10% of kafkactor's maximum)"),
        };
        let mut p99 = Outcome2 {
            scenario: "latency_p99_us".into(),
            unit: "microseconds",
            higher_is_better: false,
            kafkactor: Vec::new(),
            baseline: Vec::new(),
            target: Some((2.0, "<=")),
            notes: p50.notes.clone(),
        };
        for round in 0..sizes.rounds {
            let (k, b) = pair(
                round,
                kafkactor_latency(rate, sizes.latency_seconds),
                baseline_latency(rate, sizes.latency_seconds),
            )
            .await;
            eprintln!("  latency round {round}: kafkactor p50 {:.0}us p99 {:.0}us, baseline p50 {:.0}us p99 {:.0}us", k.0, k.1, b.0, b.1);
            p50.kafkactor.push(k.0);
            p50.baseline.push(b.0);
            p99.kafkactor.push(k.1);
            p99.baseline.push(b.1);
        }
        out.push(p50);
        out.push(p99);
    }

    // `KAFKACTOR_BENCH_BROKERS=mock` runs the Kafka scenarios against
    // librdkafka's in-process mock cluster instead of a broker.
    let brokers = match sizes.brokers.as_deref() {
        Some("mock") => Some(kafka::mock_cluster()),
        other => other.map(str::to_string),
    };
    if let Some(brokers) = brokers {
        // The first group on a fresh broker creates its offsets topic, which
        // takes seconds: not part of any scenario.
        let topic = kafka::prepared_topic(&brokers, 1_000).await;
        kafka::raw_consume(&brokers, &topic, 1_000).await;
        if sizes.wants("kafka_produce") {
            let notes = format!(
                "{} records to {brokers}, idempotent, acks=all, 10,000 in flight",
                sizes.kafka_records
            );
            let mut future = kafka_outcome("kafka_produce_future", Some(0.95), &notes);
            let mut base = kafka_outcome("kafka_produce_base", None, &notes);
            for round in 0..sizes.rounds {
                let n = sizes.kafka_records;
                let [k, f, b] = rotated(
                    round,
                    [
                        Box::pin(kafka::kafkactor_produce(&brokers, n)),
                        Box::pin(kafka::raw_produce(&brokers, n)),
                        Box::pin(kafka::raw_produce_base(&brokers, n)),
                    ],
                )
                .await;
                eprintln!("  kafka_produce round {round}: kafkactor {k:.0}/s FutureProducer {f:.0}/s BaseProducer {b:.0}/s");
                future.kafkactor.push(k);
                future.baseline.push(f);
                base.kafkactor.push(k);
                base.baseline.push(b);
            }
            out.extend([future, base]);
        }
        if sizes.wants("kafka_consume") {
            let notes = format!(
                "{} pre-produced records from {brokers}: decode, no-op, commit, including the group join",
                sizes.kafka_records
            );
            let mut base = kafka_outcome("kafka_consume_base", Some(0.90), &notes);
            let mut stream = kafka_outcome("kafka_consume_stream", None, &notes);
            for round in 0..sizes.rounds {
                let (n, t) = (
                    sizes.kafka_records,
                    kafka::prepared_topic(&brokers, sizes.kafka_records).await,
                );
                let [k, b, st] = rotated(
                    round,
                    [
                        Box::pin(kafka::kafkactor_consume(&brokers, &t, n)),
                        Box::pin(kafka::raw_consume_base(&brokers, &t, n)),
                        Box::pin(kafka::raw_consume(&brokers, &t, n)),
                    ],
                )
                .await;
                eprintln!("  kafka_consume round {round}: kafkactor {k:.0}/s BaseConsumer {b:.0}/s StreamConsumer {st:.0}/s");
                base.kafkactor.push(k);
                base.baseline.push(b);
                stream.kafkactor.push(k);
                stream.baseline.push(st);
            }
            out.extend([base, stream]);
        }
        // With KAFKACTOR_BENCH_BROKERS=mock the mock cluster's run below is the Kafka one.
        if sizes.wants("delay_precision") && sizes.brokers.as_deref() != Some("mock") {
            // Kafka with its clients' defaults: normal batching, and a long
            // poll that Kafka answers as soon as data arrives.
            let n = sizes.delay_records;
            let p = delay_precision(Broker::kafka(&brokers), Some((&brokers, 3)), n).await;
            out.extend(precision_rows("kafka", n, &p));
            // The broker's own floor: plain produce -> consume at the rate
            // the delayed records fall due (over 9 s), same settings.
            let floor = kafka::raw_latency(&brokers, n, n as f64 / 9.0, &[]).await;
            out.extend(floor_rows(
                "kafka_floor_latency",
                &floor,
                &format!(
                "plain rdkafka produce -> consume of {n} records at {:.0}/s (the broker's floor)",
                n as f64 / 9.0
            ),
            ));
            // And during a burst of n publishes from another thread, as the
            // delayed records' first seconds see.
            let floor = kafka::raw_latency_under_flood(&brokers, n).await;
            out.extend(floor_rows("kafka_floor_burst_latency", &floor, &format!(
                "plain rdkafka, one record per ms produce -> consume while {n} records are published at once from another thread"
            )));
        }
    } else {
        eprintln!("kafka scenarios skipped: KAFKACTOR_BENCH_BROKERS is not set (scripts/bench.sh sets it)");
    }
    if sizes.wants("delay_precision") {
        // librdkafka's mock cluster, in process, with batches as librdkafka
        // makes them (lingering 1 ms). It answers a long poll only when it
        // times out (Kafka answers when data arrives): fetches wait at most
        // 10 ms. It keeps at most 5 MB per partition, deleting the oldest
        // records past that as retention would: 12 partitions per bucket
        // keep the 5 s bucket's waiting records under it.
        let mock = kafka::mock_cluster();
        let settings = [("linger.ms", "1"), ("fetch.wait.max.ms", "10")];
        let n = sizes.delay_records;
        let p = delay_precision(with_settings(&mock, &settings), Some((&mock, 12)), n).await;
        out.extend(precision_rows("mock", n, &p));
        let p = delay_precision(Broker::memory(), None, n).await;
        out.extend(precision_rows("embedded", n, &p));
    }

    if sizes.wants("scale") {
        let (start, rss, cpu) = scale(sizes.scale_subscriptions).await;
        eprintln!(
            "  scale: {} subscriptions started in {start:.2}s, {rss:.0} MiB, idle CPU {cpu:.2}%",
            sizes.scale_subscriptions
        );
        let notes = format!(
            "{} subscriptions in one process (absolute; ratio is value / target)",
            sizes.scale_subscriptions
        );
        for (name, value, target, unit) in [
            ("scale_start_s", start, Some(2.0), "seconds"),
            ("scale_rss_mib", rss, None, "MiB"),
            ("scale_idle_cpu_pct", cpu, Some(1.0), "percent"),
        ] {
            out.push(absolute(name.into(), unit, value, target, notes.clone()));
        }
    }
    out
}

fn report(sizes: &Sizes, outcomes: &[Outcome2]) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| scenario | kafkactor | baseline | ratio | target | met |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for o in outcomes {
        let _ = writeln!(
            table,
            "| {} | {:.1} {} | {:.1} | {:.3} | {} | {} |",
            o.scenario,
            median(&o.kafkactor),
            o.unit,
            median(&o.baseline),
            o.ratio(),
            o.target
                .map_or("-".to_string(), |(t, op)| format!("{op} {t}")),
            o.met().map_or("-", |m| if m { "yes" } else { "no" }),
        );
    }
    println!("\n{table}");
    println!(
        "(medians of {} rounds; ratio = median of per-round kafkactor/baseline)",
        sizes.rounds
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let json: Vec<String> = outcomes.iter().map(Outcome2::json).collect();
    let path = dir.join("compare.json");
    std::fs::write(&path, json.join("\n") + "\n").unwrap();
    let mut md = BTreeMap::new();
    md.insert("table", table);
    std::fs::write(dir.join("compare.md"), md["table"].as_bytes()).unwrap();
    println!("wrote {}", path.display());
}
