//! embedded_e2e: publish -> handler -> commit through kafkactor on the
//! embedded broker, against a hand-written tokio pipeline.

use super::*;

pub(crate) struct Noop {
    pub(crate) handled: Arc<AtomicU64>,
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

/// An application on `broker` whose `subscription` is handled by [`Noop`]
/// handlers counting into `handled`.
pub(crate) async fn noop_app(
    broker: Broker,
    subscription: Subscription,
    handled: &Arc<AtomicU64>,
) -> App {
    noop_app_metered(broker, subscription, handled, true).await
}

/// [`noop_app`] with kafkactor's metrics on or off.
pub(crate) async fn noop_app_metered(
    broker: Broker,
    subscription: Subscription,
    handled: &Arc<AtomicU64>,
    metrics: bool,
) -> App {
    let handled = handled.clone();
    Kafkactor::builder()
        .broker(broker)
        .metrics(metrics)
        .subscribe(subscription, move || Noop {
            handled: handled.clone(),
        })
        .start()
        .await
        .unwrap()
}

pub(crate) static RUN: AtomicU64 = AtomicU64::new(0);

/// Unique per process run too: topics and groups on a shared broker outlive runs.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// Publishes `n` records (at most `window` in flight) and returns when
/// every one is acknowledged.
pub(crate) async fn publish(app: &App, topic: &str, n: u64, keys: u64, window: usize) {
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

/// Records per second, from the first publish until the handler has every
/// record (then every record is checked committed).
pub(crate) async fn kafkactor_e2e(n: u64, keys: u64, concurrency: usize) -> f64 {
    kafkactor_e2e_metered(n, keys, concurrency, true).await
}

/// [`kafkactor_e2e`] with kafkactor's metrics on or off.
pub(crate) async fn kafkactor_e2e_metered(
    n: u64,
    keys: u64,
    concurrency: usize,
    metrics: bool,
) -> f64 {
    let broker = Broker::memory();
    let (topic, group) = (unique("e2e"), unique("g"));
    let handled = Arc::new(AtomicU64::new(0));
    let app = noop_app_metered(
        broker.clone(),
        Subscription::to(topic.as_str())
            .group(group.as_str())
            .concurrency(concurrency),
        &handled,
        metrics,
    )
    .await;
    let memory = broker.as_memory().unwrap();
    let started = Instant::now();
    publish(&app, &topic, n, keys, 1_000).await;
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    // Timed until the handler has every record, as the baseline's workers
    // are; commits are periodic (every 100 ms) and would round the time up
    // to the next one. That everything gets committed is checked after.
    while handled.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "embedded_e2e did not finish");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    while memory.lag(&group, &topic) > 0 {
        assert!(Instant::now() < deadline, "embedded_e2e did not commit");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(handled.load(Ordering::Relaxed), n);
    app.shutdown().await.unwrap();
    tracing::debug!(?published, ?elapsed, "embedded_e2e");
    n as f64 / elapsed.as_secs_f64()
}

/// The hand-written pipeline: the same records encoded the same way, sent
/// over bounded mpsc channels (one per worker, chosen by key hash so a key
/// stays in order) to `workers` tasks that decode them and call a no-op.
pub(crate) async fn baseline_e2e(n: u64, keys: u64, workers: usize) -> f64 {
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
        let lane = kafkactor::bench_internals::murmur2(key.as_bytes()) as usize % workers;
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
