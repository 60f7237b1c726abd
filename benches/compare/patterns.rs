//! The messaging patterns of issue 28.
//!
//! - `request_reply`: round trips through a `Requester` to a responder
//!   replying from its handler (a lane per request in flight, each
//!   awaiting its reply's write), 64 requests in flight;
//!   against the same requests sent one way, the handler answering the
//!   caller in-process instead of through the reply topic (what the broker
//!   return trip and the reply reader cost). Round trips per second, and
//!   the p99 of each one's latency.
//! - `batch`: consuming records already in a topic (concurrency 4) with a
//!   batch handler taking batches of 1 and of 100, against a single-record
//!   handler (records per second, start to the last handled).

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use kafkactor::{Batch, BatchOutcome, Failure, Replies};
use tokio::sync::oneshot;

use super::*;
use e2e::unique;

/// Requests a caller keeps in flight.
const IN_FLIGHT: usize = 64;

/// What a request-reply (or one-way) run measured: round trips per
/// second, and each one's latency in milliseconds.
type Trips = (f64, Vec<f64>);

/// `requests` round trips, [`IN_FLIGHT`] at once, each timed by `trip`
/// (which answers once its trip is done); `trip(0)` first, untimed, as a
/// warm-up (a Kafka group forms meanwhile).
async fn timed_trips<F, Fut>(requests: u64, trip: F) -> Trips
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    trip(u64::MAX).await;
    let started = Instant::now();
    let latencies: Vec<f64> = stream::iter(0..requests)
        .map(|id| {
            let trip = trip(id);
            async move {
                let t = Instant::now();
                trip.await;
                t.elapsed().as_secs_f64() * 1e3
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    (requests as f64 / started.elapsed().as_secs_f64(), latencies)
}

/// Round trips through a `Requester` and a responder replying from its
/// handler.
async fn request_reply_run(broker: Broker, requests: u64) -> Trips {
    let (topic, replies) = (unique("requests"), unique("replies"));
    let responder = Kafkactor::builder()
        .broker(broker.clone())
        .metrics(false)
        .handle(
            Subscription::to(topic.as_str())
                .group(unique("responder").as_str())
                .concurrency(IN_FLIGHT),
            |d: Delivery<Sample>| async move {
                d.reply(&d.message().id).await?;
                Ok::<_, Failure>(())
            },
        )
        .start()
        .await
        .expect("the responder starts");
    let caller = Kafkactor::builder()
        .broker(broker)
        .metrics(false)
        .replies(Replies::on(replies.as_str()))
        .start()
        .await
        .expect("the caller starts");
    let requester = caller.requester();
    let trips = timed_trips(requests, |id| {
        let (requester, topic) = (requester.clone(), topic.clone());
        async move {
            let request = Publish::to(&topic)
                .key(key_of(id, 1_000))
                .message(&sample(id))
                .unwrap();
            let reply: u64 = requester
                .request(request, Duration::from_secs(60))
                .await
                .expect("a reply");
            assert_eq!(reply, id);
        }
    })
    .await;
    caller.shutdown().await.expect("the caller stops");
    responder.shutdown().await.expect("the responder stops");
    trips
}

/// The same trips one way: the handler answers the caller in-process.
async fn one_way_run(broker: Broker, requests: u64) -> Trips {
    let topic = unique("one-way");
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let answered = waiting.clone();
    let app = Kafkactor::builder()
        .broker(broker)
        .metrics(false)
        .handle(
            Subscription::to(topic.as_str())
                .group(unique("responder").as_str())
                .concurrency(IN_FLIGHT),
            move |d: Delivery<Sample>| {
                if let Some(tx) = answered.lock().unwrap().remove(&d.message().id) {
                    let _ = tx.send(());
                }
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .expect("the application starts");
    let producer = app.producer();
    let trips = timed_trips(requests, |id| {
        let (producer, topic, waiting) = (producer.clone(), topic.clone(), waiting.clone());
        async move {
            let (tx, rx) = oneshot::channel();
            waiting.lock().unwrap().insert(id, tx);
            let publish = Publish::to(&topic)
                .key(key_of(id, 1_000))
                .message(&sample(id))
                .unwrap();
            producer.send(publish).await.unwrap().expect("published");
            rx.await.expect("handled");
        }
    })
    .await;
    app.shutdown().await.expect("the application stops");
    trips
}

/// The p99 of `latencies`.
fn p99(latencies: &mut [f64]) -> f64 {
    latencies.sort_by(f64::total_cmp);
    latencies[((latencies.len() as f64 - 1.0) * 0.99).round() as usize]
}

/// The rows of `request_reply` on `on` (embedded, kafka).
pub(crate) async fn request_reply_rows(
    on: &str,
    broker: impl Fn() -> Broker,
    requests: u64,
    rounds: usize,
) -> Vec<Outcome2> {
    let notes = format!(
        "{requests} requests, {IN_FLIGHT} in flight, to a responder ({IN_FLIGHT} lanes) replying \
         from its handler; baseline: the same records one way, the handler answering in-process"
    );
    let mut rate = throughput_outcome(&format!("request_reply_round_trips_{on}"), None, &notes);
    rate.unit = "round trips/s";
    let mut latency = latency_ms_outcome(
        format!("request_reply_p99_ms_{on}"),
        format!("99th percentile round trip; {notes}"),
    );
    for round in 0..rounds {
        let (mut trip_rate, mut trips) = (0.0, Vec::new());
        let (mut way_rate, mut ways) = (0.0, Vec::new());
        // The order rotates with the round.
        for side in [round % 2, (round + 1) % 2] {
            if side == 0 {
                (trip_rate, trips) = request_reply_run(broker(), requests).await;
            } else {
                (way_rate, ways) = one_way_run(broker(), requests).await;
            }
        }
        let (trip_p99, way_p99) = (p99(&mut trips), p99(&mut ways));
        eprintln!(
            "  request_reply {on} round {round}: {trip_rate:.0} round trips/s (p99 {trip_p99:.1} ms), \
             one way {way_rate:.0}/s (p99 {way_p99:.1} ms)"
        );
        rate.kafkactor.push(trip_rate);
        rate.baseline.push(way_rate);
        latency.kafkactor.push(trip_p99);
        latency.baseline.push(way_p99);
    }
    vec![rate, latency]
}

/// How a `batch` run's handler takes its records.
#[derive(Clone, Copy)]
enum Taking {
    Single,
    Batches(usize),
}

/// Records per second consuming the `records` in `topic` (already there)
/// from its start, taken as `taking` says.
async fn consume_run(broker: Broker, topic: &str, records: u64, taking: Taking) -> f64 {
    let handled = Arc::new(AtomicU64::new(0));
    let sub = Subscription::to(topic)
        .group(unique("consumer").as_str())
        .concurrency(4);
    let count = handled.clone();
    let builder = Kafkactor::builder().broker(broker).metrics(false);
    let started = Instant::now();
    let app = match taking {
        Taking::Single => builder.handle(sub, move |d: Delivery<Sample>| {
            std::hint::black_box(d.message());
            count.fetch_add(1, Ordering::Relaxed);
            async { Outcome::Ack }
        }),
        Taking::Batches(max) => {
            builder.handle_batch(sub.batch(max, Duration::ZERO), move |b: Batch<Sample>| {
                std::hint::black_box(b.messages().count());
                count.fetch_add(b.len() as u64, Ordering::Relaxed);
                async { BatchOutcome::Ack }
            })
        }
    }
    .start()
    .await
    .expect("the application starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    while handled.load(Ordering::Relaxed) < records {
        assert!(Instant::now() < deadline, "records not handled in 300 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = records as f64 / started.elapsed().as_secs_f64();
    app.shutdown().await.expect("the application stops");
    rate
}

/// The rows of `batch` on `on` (embedded, kafka): batch sizes 1 and 100
/// against a single-record handler.
pub(crate) async fn batch_rows(
    on: &str,
    broker: impl Fn() -> Broker,
    records: u64,
    keys: u64,
    rounds: usize,
) -> Vec<Outcome2> {
    let notes = |size| {
        format!(
            "{records} records over {keys} keys already in the topic, concurrency 4: a batch \
             handler taking batches of up to {size}; baseline: a single-record handler"
        )
    };
    let mut one = throughput_outcome(&format!("batch_1_{on}"), None, &notes(1));
    let mut hundred = throughput_outcome(&format!("batch_100_{on}"), None, &notes(100));
    for round in 0..rounds {
        let broker = broker();
        let topic = unique("batch");
        let filler = Kafkactor::builder()
            .broker(broker.clone())
            .metrics(false)
            .start()
            .await
            .expect("the publisher starts");
        e2e::publish(&filler, &topic, records, keys, 1_000).await;
        filler.shutdown().await.expect("the publisher stops");
        let mut rates = [0.0; 3];
        for i in 0..3 {
            let side = (i + round) % 3;
            let taking = [Taking::Single, Taking::Batches(1), Taking::Batches(100)][side];
            rates[side] = consume_run(broker.clone(), &topic, records, taking).await;
        }
        let [single, by_one, by_hundred] = rates;
        eprintln!(
            "  batch {on} round {round}: single {single:.0}/s, batches of 1 {by_one:.0}/s, \
             of 100 {by_hundred:.0}/s"
        );
        one.kafkactor.push(by_one);
        one.baseline.push(single);
        hundred.kafkactor.push(by_hundred);
        hundred.baseline.push(single);
    }
    vec![one, hundred]
}
