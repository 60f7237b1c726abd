//! The Kafka scenarios: produce through the Producer actor against
//! `FutureProducer` and `BaseProducer`; consume -> no-op -> commit against
//! a `BaseConsumer` loop and a `StreamConsumer`; the raw rdkafka latency
//! floor for delay precision.

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

/// A plain consumer in a group of its own, from the beginning, with
/// librdkafka's defaults but for the one
/// kafkactor changes (`fetch.queue.backoff.ms`, 20 ms instead of 1 s, which
/// otherwise stalls any consumer faster than its fetches for up to a
/// second), so both sides fetch alike.
pub(super) fn consumer_settings(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-raw-g"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.queue.backoff.ms", "20");
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
    let app = noop_app(
        broker,
        Subscription::to(topic).group(unique("bench-g").as_str()),
        &handled,
    )
    .await;
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
        let (done, brokers, flood_topic) = (done.clone(), brokers.to_string(), flood_topic.clone());
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
