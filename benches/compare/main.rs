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
                kafka_records: 300_000,
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
                kafka_records: 300_000,
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

    /// A new handle on the run's Apache Kafka (4 partitions a topic), when
    /// it names one (not the mock cluster).
    fn kafka(&self) -> Option<impl Fn() -> Broker + '_> {
        let brokers = self.brokers.as_deref().filter(|b| *b != "mock")?;
        Some(move || Broker::kafka(brokers).topic_partitions(4))
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

mod delay;
mod e2e;
#[cfg(feature = "redis")]
mod idempotency;
mod kafka;
mod latency;
#[cfg(feature = "postgres")]
mod outbox;
mod patterns;
mod retries;
mod scale;

use delay::*;
use e2e::*;
use latency::*;
use scale::*;

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

/// A throughput scenario (records/s, higher is better): embedded_e2e's,
/// Kafka's (kafkactor against one raw client) and the outbox relay's.
/// A latency row in milliseconds (lower is better), with no target.
fn latency_ms_outcome(scenario: String, notes: String) -> Outcome2 {
    Outcome2 {
        scenario,
        unit: "milliseconds",
        higher_is_better: false,
        kafkactor: Vec::new(),
        baseline: Vec::new(),
        target: None,
        notes,
    }
}

fn throughput_outcome(scenario: &str, target: Option<f64>, notes: &str) -> Outcome2 {
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

/// `rounds` rounds of [`pair`], each side's result added to `o`, and a
/// line per round naming the sides as `names` does.
async fn paired_rounds<K, B>(
    o: &mut Outcome2,
    rounds: usize,
    names: (&str, &str),
    mut kafkactor: impl FnMut() -> K,
    mut baseline: impl FnMut() -> B,
) where
    K: Future<Output = f64>,
    B: Future<Output = f64>,
{
    for round in 0..rounds {
        let (k, b) = pair(round, kafkactor(), baseline()).await;
        eprintln!(
            "  {} round {round}: {} {k:.1} {}, {} {b:.1}",
            o.scenario, names.0, o.unit, names.1
        );
        o.kafkactor.push(k);
        o.baseline.push(b);
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
        let notes = format!(
            "{} records, {} keys, 128-byte msgpack, no-op handler",
            sizes.records, sizes.keys
        );
        let mut o = throughput_outcome(&name, Some(0.6), &notes);
        paired_rounds(
            &mut o,
            sizes.rounds,
            ("kafkactor", "baseline"),
            || kafkactor_e2e(sizes.records, sizes.keys, concurrency),
            || baseline_e2e(sizes.records, sizes.keys, concurrency),
        )
        .await;
        if concurrency == 1 {
            max_rate = Some(median(&o.kafkactor));
        }
        out.push(o);
    }

    // What metrics cost: the same pipeline with them on ("kafkactor") and
    // off ("baseline"), alternating.
    if sizes.wants("embedded_e2e_metrics") {
        let notes = format!(
            "concurrency 1, {} records; baseline: the same with AppBuilder::metrics(false)",
            sizes.records
        );
        let mut o = throughput_outcome("embedded_e2e_metrics", Some(0.95), &notes);
        paired_rounds(
            &mut o,
            sizes.rounds,
            ("metrics on", "off"),
            || kafkactor_e2e_metered(sizes.records, sizes.keys, 1, true),
            || kafkactor_e2e_metered(sizes.records, sizes.keys, 1, false),
        )
        .await;
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
            target: Some((1.5, "<=")),
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
            let mut future = throughput_outcome("kafka_produce_future", Some(0.95), &notes);
            let mut base = throughput_outcome("kafka_produce_base", None, &notes);
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
            let mut base = throughput_outcome("kafka_consume_base", Some(0.90), &notes);
            let mut stream = throughput_outcome("kafka_consume_stream", None, &notes);
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
            out.extend(precision_rows("kafka", n, &p, None));
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
            // Judged against the floor under the same burst, measured in
            // this run: it moves severalfold between runs here.
            out.push(Outcome2 {
                scenario: "delay_precision_kafka_p99_over_burst_floor".into(),
                unit: "ms late",
                higher_is_better: false,
                kafkactor: vec![p.p99_ms],
                baseline: vec![delay::quantile(&floor, 0.99)],
                target: Some((1.2, "<=")),
                notes: "lateness p99 of delayed records against Kafka's produce -> consume p99 under the same burst".into(),
            });
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
        out.extend(precision_rows("mock", n, &p, Some(20.0)));
        let p = delay_precision(Broker::memory(), None, n).await;
        out.extend(precision_rows("embedded", n, &p, Some(5.0)));
    }

    #[cfg(feature = "redis")]
    if let Some(url) = std::env::var("KAFKACTOR_BENCH_REDIS")
        .ok()
        .filter(|u| !u.is_empty() && sizes.wants("idempotency_redis"))
    {
        for (size, batches) in [(1usize, 2_000usize), (100, 100)] {
            let mut o = Outcome2 {
                scenario: format!("idempotency_redis_batch{size}_us"),
                unit: "us/record",
                higher_is_better: false,
                kafkactor: Vec::new(),
                baseline: Vec::new(),
                target: None,
                notes: String::new(),
            };
            paired_rounds(
                &mut o,
                sizes.rounds,
                ("with Redis", "without"),
                || idempotency::idempotency_us_per_record(Some(&url), size, batches),
                || idempotency::idempotency_us_per_record(None, size, batches),
            )
            .await;
            o.notes = format!(
                "publish -> handled per record in batches of {size}, with the Redis check \
                 (kafkactor) and without (baseline): the check costs {:.1} us per record",
                median(&o.kafkactor) - median(&o.baseline)
            );
            out.push(o);
        }
    }

    #[cfg(feature = "postgres")]
    if let Some(url) = std::env::var("KAFKACTOR_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty() && sizes.wants("outbox_relay"))
    {
        let n = (sizes.records / 10).max(1_000);
        let mut o = throughput_outcome("outbox_relay_rows_per_s", None, "");
        paired_rounds(
            &mut o,
            sizes.rounds,
            ("relay", "producer"),
            || outbox::relay_rows_per_s(&url, n),
            || outbox::producer_rows_per_s(n),
        )
        .await;
        o.notes = format!(
            "{n} records to the embedded broker in batches of 500: moved from a PostgreSQL \
             outbox table by the relay (kafkactor) and published by a plain Producer (baseline)"
        );
        out.push(o);
    }

    if sizes.wants("retry_topic") {
        let records = sizes.records.min(100_000);
        out.extend(
            retries::retry_topic_rows(
                "embedded",
                Broker::memory,
                records,
                sizes.keys,
                sizes.rounds,
            )
            .await,
        );
        if let Some(kafka) = sizes.kafka() {
            out.extend(
                retries::retry_topic_rows("kafka", kafka, records, sizes.keys, sizes.rounds).await,
            );
        }
    }

    if sizes.wants("request_reply") {
        let requests = (sizes.records / 20).clamp(1_000, 20_000);
        out.extend(
            patterns::request_reply_rows("embedded", Broker::memory, requests, sizes.rounds).await,
        );
        if let Some(kafka) = sizes.kafka() {
            out.extend(patterns::request_reply_rows("kafka", kafka, requests, sizes.rounds).await);
        }
    }

    if sizes.wants("batch") {
        let records = sizes.records.min(200_000);
        out.extend(
            patterns::batch_rows(
                "embedded",
                Broker::memory,
                records,
                sizes.keys,
                sizes.rounds,
            )
            .await,
        );
        if let Some(kafka) = sizes.kafka() {
            let records = records.min(sizes.kafka_records);
            out.extend(
                patterns::batch_rows("kafka", kafka, records, sizes.keys, sizes.rounds).await,
            );
        }
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
