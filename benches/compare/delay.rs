//! delay_precision: how late delayed records reach their handler, on each
//! broker, beside the broker's own floor.

use super::*;

/// What `delay_precision` measured on one broker.
pub(crate) struct Precision {
    p50_ms: f64,
    pub(crate) p99_ms: f64,
    max_ms: f64,
    early: usize,
    idle_cpu_pct: f64,
}

/// The bucket topics of `Delays::default()`, by label.
pub(crate) const DEFAULT_BUCKET_LABELS: [&str; 10] = [
    "0s", "1s", "5s", "30s", "1m", "5m", "15m", "1h", "6h", "24h",
];

/// Publishes `n` records delayed 1-10 s, measures each one's lateness at the
/// handler against its `deliver_at`, then the process's CPU for 5 s while
/// 1,000 records wait an hour in their bucket (nothing due). With `kafka`
/// (its bootstrap servers and the bucket topics' partitions) the topics are
/// created up front, as the mock cluster cannot create them through the
/// admin API.
pub(crate) async fn delay_precision(
    broker: Broker,
    kafka: Option<(&str, i32)>,
    n: u64,
) -> Precision {
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
    while app.assigned_partitions().await.len() < 2 {
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
pub(crate) fn absolute(
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
pub(crate) fn floor_rows(prefix: &str, sorted: &[f64], notes: &str) -> Vec<Outcome2> {
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
pub(crate) fn with_settings(brokers: &str, settings: &[(&str, &str)]) -> Broker {
    settings
        .iter()
        .fold(Broker::kafka(brokers), |b, (k, v)| b.set(*k, *v))
}

/// The `q` quantile of sorted values (1.0: the largest).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n as f64 * q) as usize).min(n - 1)],
    }
}

/// Prints one broker's `delay_precision` figures and returns its rows
/// (absolute figures against their targets).
/// `p99_target`: the most p99 lateness asked, in ms (none on Kafka,
/// judged against its own floor instead).
pub(crate) fn precision_rows(
    on: &str,
    n: u64,
    p: &Precision,
    p99_target: Option<f64>,
) -> Vec<Outcome2> {
    eprintln!(
        "  delay_precision {on}: p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} early, idle CPU {:.2}%",
        p.p50_ms, p.p99_ms, p.max_ms, p.early, p.idle_cpu_pct
    );
    let notes = format!("{n} records delayed 1-10 s on {on}; lateness at the handler");
    [
        ("p50_ms", p.p50_ms, None, "ms late"),
        ("p99_ms", p.p99_ms, p99_target, "ms late"),
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
