//! latency: publish -> handler at 10 % of the maximum rate, p50 and p99,
//! against the hand-written pipeline.

use super::*;

/// Per-record latency from publish to handler, at `rate` records/s for
/// `seconds`: (p50, p99) in microseconds.
pub(crate) async fn kafkactor_latency(rate: u64, seconds: u64) -> (f64, f64) {
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

pub(crate) async fn baseline_latency(rate: u64, seconds: u64) -> (f64, f64) {
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
pub(crate) async fn paced(rate: u64, total: u64, mut send: impl FnMut(u64)) {
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
pub(crate) fn percentiles(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let ms: Vec<f64> = v.into_iter().map(|us| us as f64 / 1_000.0).collect();
    (quantile(&ms, 0.50), quantile(&ms, 0.99))
}
