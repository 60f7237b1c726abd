//! The chaos soak (`scripts/soak.sh`): records over many keys through an
//! application with a plain, an idempotent (Redis) and a transactional
//! subscription, with a delayed share, a dead-lettered share and a share
//! written through the PostgreSQL outbox, while faults are injected: 1 % of
//! handler calls panic, handler actors, dispatchers and connections are
//! failed on purpose, Apache Kafka is killed with SIGKILL and restarted,
//! members join and leave, Redis and PostgreSQL are restarted.
//!
//! At the end it checks, and prints: nothing lost (every record handled by
//! each subscription, every rejected one dead-lettered, every output of the
//! transactional one visible to a `read_committed` reader); duplicates of
//! the plain subscription within what was in flight at each fault; none of
//! the idempotent one's effects twice outside its documented window (a
//! dispatcher restart); none of the transactional one's outputs twice;
//! per-key order held (first handlings, and outputs); no delayed record
//! early; every group's lag 0; memory flat after the first minute. Exits
//! non-zero when a figure is off.
//!
//! Usage: `soak [--records N] [--keys K] [--rate R] [--fault-every SECONDS] [--faults 0,4,7 | none]`
//! (defaults 1,000,000 records, 10,000 keys, 1,500 records/s: what this
//! 2-core machine sustains with Kafka on it, a backlog growing the
//! clients' fetch queues; a fault every
//! 4 s). Needs `KAFKACTOR_TEST_POSTGRES` (a database), `redis-server` on
//! the path, and optionally `KAFKACTOR_SOAK_PG_RESTART` (a shell command
//! restarting PostgreSQL): `scripts/soak.sh` sets them. It starts its own
//! Apache Kafka and Redis (with an append-only file: a store that forgets
//! on restart is outside the idempotency guarantee).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kafkactor::idempotency::{Idempotency, RedisStore};
use kafkactor::outbox::{Outbox, OutboxRelay};
use kafkactor::prelude::*;
use kafkactor::{App, Delays, ProducerHandle, PublishBatch, RetryPolicy};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use support::kafka_process::KafkaProcess;
use support::TestBroker;

const DIRECT: u8 = 0;
const DELAYED: u8 = 1;
const OUTBOX: u8 = 2;
const REJECT: u8 = 3;

/// One input record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    id: u64,
    key: u32,
    /// Position among the direct (and rejected) records of its key.
    seq: u32,
    kind: u8,
    /// When a delayed record is due, ms since the Unix epoch.
    due_ms: i64,
}

struct Args {
    records: u64,
    keys: u32,
    rate: u64,
    fault_every: Duration,
    /// The kinds of fault injected: 0 a handler, 1 a dispatcher, 2 a
    /// consumer connection, 3 a producer or the Republisher failed; 4 Kafka
    /// killed and restarted; 5 a member joins, 6 one leaves; 7 Redis and 8
    /// PostgreSQL restarted.
    faults: Vec<u8>,
}

fn args() -> Args {
    let mut args = Args {
        records: 1_000_000,
        keys: 10_000,
        rate: 1_500,
        fault_every: Duration::from_secs(4),
        faults: (0..9).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.replace('_', "").parse::<u64>().ok())
        };
        match a.as_str() {
            "--records" => args.records = value().expect("--records N"),
            "--keys" => args.keys = value().expect("--keys K") as u32,
            "--rate" => args.rate = value().expect("--rate R"),
            "--fault-every" => {
                args.fault_every = Duration::from_secs(value().expect("--fault-every S"))
            }
            // Only these kinds of fault (see `Args::faults`), or none.
            "--faults" => {
                let list = it.next().expect("--faults 0,4,8 | none");
                args.faults = list.split(',').filter_map(|k| k.parse().ok()).collect();
            }
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

/// What every handler saw, in fixed-size tables allocated up front (the
/// soak's own bookkeeping must not grow with the run).
struct Ledger {
    plain: Vec<AtomicU8>,
    idem: Vec<AtomicU8>,
    outputs: Vec<AtomicU8>,
    /// Records the transactional subscription's handler saw (progress).
    tx: Vec<AtomicU8>,
    /// Copies of each record in the input topic (read at the end): the
    /// delayed and outbox shares are written at least once upstream (the
    /// Republisher, the relay), and a copy is a record of its own.
    inputs: Vec<AtomicU8>,
    /// Dead letters, by the group that wrote them (plain, idempotent,
    /// transactional).
    dead: [Vec<AtomicU8>; 3],
    /// The last seq first handled per key (plain), and of outputs read.
    plain_seq: Vec<AtomicU32>,
    output_seq: Vec<AtomicU32>,
    order_violations: AtomicU64,
    output_order_violations: AtomicU64,
    early: AtomicU64,
    panics: AtomicU64,
    /// Whether handlers may panic now (not while the soak drains).
    chaos: AtomicBool,
}

const NONE: u32 = u32::MAX;

impl Ledger {
    fn new(records: u64, keys: u32) -> Self {
        let table = |n: usize| (0..n).map(|_| AtomicU8::new(0)).collect();
        let seqs = |n: u32| (0..n).map(|_| AtomicU32::new(NONE)).collect();
        Ledger {
            plain: table(records as usize),
            idem: table(records as usize),
            outputs: table(records as usize),
            inputs: table(records as usize),
            tx: table(records as usize),
            dead: [0; 3].map(|_| table(records as usize)),
            plain_seq: seqs(keys),
            output_seq: seqs(keys),
            order_violations: AtomicU64::new(0),
            output_order_violations: AtomicU64::new(0),
            early: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            chaos: AtomicBool::new(true),
        }
    }

    /// Counts one more of `id` in `table`; whether it was the first.
    fn count(table: &[AtomicU8], id: u64) -> bool {
        let prev = table[id as usize].fetch_add(1, Ordering::SeqCst);
        if prev == u8::MAX {
            table[id as usize].store(u8::MAX, Ordering::SeqCst);
        }
        prev == 0
    }

    /// Notes the first handling of `input` in per-key order.
    fn in_order(seqs: &[AtomicU32], violations: &AtomicU64, input: &Input) {
        if input.kind != DIRECT && input.kind != REJECT {
            return;
        }
        let prev = seqs[input.key as usize].swap(input.seq, Ordering::SeqCst);
        if prev != NONE && input.seq < prev {
            violations.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// 1 % of handler calls panic while the chaos lasts.
    fn maybe_panic(&self, input: &Input) {
        if self.chaos.load(Ordering::SeqCst) && fastrand::u8(..100) == 0 {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("soak: handler panic on record {}", input.id);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// A Redis server of the soak's own, with an append-only file, restarted
/// with SIGKILL on the same data.
struct Redis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("kafkactor-soak-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            port,
            dir,
            child: None,
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/soak.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "Redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.run();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Names of one run: topics, groups, the delay buckets and the outbox.
#[derive(Clone)]
struct Names {
    input: String,
    output: String,
    plain: String,
    idem: String,
    tx: String,
    delays: Delays,
    outbox: Outbox,
}

impl Names {
    fn new() -> Self {
        let run = support::unique("soak").replace('-', "_");
        Names {
            input: format!("{run}.in"),
            output: format!("{run}.out"),
            plain: format!("{run}-plain"),
            idem: format!("{run}-idem"),
            tx: format!("{run}-tx"),
            delays: Delays::default()
                .topic_prefix(&format!("{run}.delay"))
                .group(&format!("{run}-republisher")),
            outbox: Outbox::table(&format!("{run}_outbox")).unwrap(),
        }
    }
}

/// Settings every member shares.
struct Setup {
    tb: TestBroker,
    names: Names,
    ledger: Arc<Ledger>,
    redis_url: String,
    pool: sqlx::PgPool,
}

/// The plain subscription's per-member bound on records in flight.
const MAX_IN_FLIGHT: usize = 512;
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// One member of the service: the three subscriptions, the Republisher and
/// the outbox relay.
async fn member(setup: &Setup) -> App {
    let (names, ledger) = (&setup.names, setup.ledger.clone());
    let store = RedisStore::connect(&setup.redis_url)
        .await
        .expect("Redis reachable");
    let producer: Rc<RefCell<Option<ProducerHandle>>> = Rc::default();
    let retry = RetryPolicy::exponential(8, Duration::from_millis(2));
    // 1 % of calls panic: far past the default crash-loop limit (10 in
    // 10 s), which would dead-letter records instead of retrying them.
    let limit = (100_000, Duration::from_secs(10));
    let sub = |group: &str| {
        Subscription::to(names.input.as_str())
            .group(group)
            .concurrency(4)
            .retry(retry)
            .restart_limit(limit.0, limit.1)
            .restart_backoff(kafkactor::Backoff::none())
    };
    let (plain, idem, tx) = (ledger.clone(), ledger.clone(), ledger.clone());
    let (out, slot) = (names.output.clone(), producer.clone());
    let app = Kafkactor::builder()
        .broker(setup.tb.broker.clone())
        .delivery_timeout(Duration::from_secs(300))
        .delays(names.delays.clone())
        .outbox_relay(OutboxRelay::new(setup.pool.clone(), names.outbox.clone()))
        .handle(
            sub(&names.plain)
                .max_in_flight(MAX_IN_FLIGHT)
                .commit_interval(COMMIT_INTERVAL),
            move |d: Delivery<Input>| {
                let input = d.message().clone();
                plain.maybe_panic(&input);
                if input.kind == REJECT {
                    return std::future::ready(Outcome::reject("soak: a record to dead-letter"));
                }
                if Ledger::count(&plain.plain, input.id) {
                    Ledger::in_order(&plain.plain_seq, &plain.order_violations, &input);
                    if input.kind == DELAYED && now_ms() < input.due_ms {
                        plain.early.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::future::ready(Outcome::Ack)
            },
        )
        .handle(
            sub(&names.idem).idempotent(Idempotency::new(store)),
            move |d: Delivery<Input>| {
                let input = d.message().clone();
                idem.maybe_panic(&input);
                // The effect: once per record, the guarantee says.
                Ledger::count(&idem.idem, input.id);
                std::future::ready(Outcome::Ack)
            },
        )
        .handle(sub(&names.tx).transactional(), move |d: Delivery<Input>| {
            let input = d.message().clone();
            Ledger::count(&tx.tx, input.id);
            let producer = slot.borrow().clone().expect("the producer");
            let sent = producer.send(
                Publish::to(out.as_str())
                    .key(input.key.to_string())
                    .message(&input)
                    .expect("encodes"),
            );
            // After publishing: the output must not become visible.
            tx.maybe_panic(&input);
            async move {
                match sent.await {
                    Ok(Ok(_)) => Outcome::Ack,
                    Ok(Err(e)) => Outcome::retry(e),
                    Err(e) => Outcome::retry(e),
                }
            }
        })
        .start()
        .await
        .expect("a member starts");
    *producer.borrow_mut() = Some(app.producer());
    app
}

/// The inputs, in publishing order: direct ones spread over the keys, with
/// a delayed, an outbox and a rejected share.
fn inputs(records: u64, keys: u32) -> Vec<Input> {
    let mut seqs = vec![0u32; keys as usize];
    let mut rng = fastrand::Rng::with_seed(0x50a4);
    (0..records)
        .map(|id| {
            let roll = rng.u8(..100);
            let kind = match roll {
                0..=4 => DELAYED,
                5..=9 => OUTBOX,
                10 => REJECT,
                _ => DIRECT,
            };
            let key = rng.u32(..keys);
            let seq = seqs[key as usize];
            if kind == DIRECT || kind == REJECT {
                seqs[key as usize] += 1;
            }
            Input {
                id,
                key,
                seq,
                kind,
                due_ms: 0,
            }
        })
        .collect()
}

/// Publishes `inputs` at `rate` records/s: directly, delayed (1-5 s), or
/// through the outbox (in transactions of 50 rows). A publish that fails is
/// published again (counted: each may be a duplicate).
async fn publish(
    setup: Rc<Setup>,
    producer: ProducerHandle,
    inputs: Vec<Input>,
    rate: u64,
    republished: Rc<AtomicU64>,
) {
    let names = &setup.names;
    let per_tick = (rate / 10).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for chunk in inputs.chunks(per_tick) {
        tick.tick().await;
        let mut direct = Vec::new();
        let mut outbox = Vec::new();
        for input in chunk {
            let mut input = input.clone();
            let mut publish = Publish::to(names.input.as_str()).key(input.key.to_string());
            if input.kind == DELAYED {
                let delay = Duration::from_millis(1_000 + fastrand::u64(..4_000));
                input.due_ms = now_ms() + delay.as_millis() as i64;
                publish = publish.delay(delay);
            }
            let publish = publish.message(&input).expect("encodes");
            if input.kind == OUTBOX {
                outbox.push(publish);
            } else {
                direct.push(publish);
            }
        }
        // Direct and delayed: all of the chunk's, again for those that fail.
        let mut pending = direct;
        while !pending.is_empty() {
            let answers = producer.send_batch(PublishBatch(pending.clone())).await;
            let failed: Vec<Publish> = match answers {
                Ok(outcomes) => pending
                    .into_iter()
                    .zip(outcomes)
                    .filter(|(_, o)| o.is_err())
                    .map(|(p, _)| p)
                    .collect(),
                Err(_) => pending,
            };
            if !failed.is_empty() {
                republished.fetch_add(failed.len() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            pending = failed;
        }
        for rows in outbox.chunks(50) {
            loop {
                let written = async {
                    let mut tx = setup.pool.begin().await.ok()?;
                    names
                        .outbox
                        .publish_all(&mut *tx, rows.to_vec())
                        .await
                        .ok()?;
                    tx.commit().await.ok()
                }
                .await;
                if written.is_some() {
                    break;
                }
                // PostgreSQL restarting: the transaction wrote nothing.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The faults, by kind.
#[derive(Default)]
struct Faults(BTreeMap<&'static str, u64>);

impl Faults {
    fn note(&mut self, kind: &'static str) {
        *self.0.entry(kind).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn of(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }
}

/// Fails the actor at `path` of `app` (ignoring one that is restarting).
async fn fail(app: &App, path: &str) {
    let _ = app.fail_actor(path, "soak: failed on purpose").await;
}

/// Waits until `group` has committed everything of `topic`, within `limit`.
async fn drained(tb: &TestBroker, group: &str, topic: &str, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let lag = tb.broker.lag(group, topic).await.unwrap_or(i64::MAX);
        if lag == 0 || Instant::now() > deadline {
            return lag;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Injected handler panics are counted, not printed (a percent of the
/// calls); any other panic is printed as usual.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("soak: handler panic"));
        if !injected {
            default(info);
        }
    }));
}

#[actix::main]
async fn main() {
    // Test runners (`cargo test --all-targets`, nextest's `--list`) run
    // bench binaries too: only `cargo bench` (which passes `--bench`) soaks.
    let given: Vec<String> = std::env::args().collect();
    if given.iter().any(|a| a == "--list") || !given.iter().any(|a| a == "--bench") {
        return;
    }
    quiet_injected_panics();
    let args = args();
    let started = Instant::now();
    let pg_url = std::env::var("KAFKACTOR_TEST_POSTGRES")
        .expect("KAFKACTOR_TEST_POSTGRES: a database (scripts/soak.sh starts PostgreSQL)");
    let pg_restart = std::env::var("KAFKACTOR_SOAK_PG_RESTART").ok();
    println!(
        "soak: {} records over {} keys at {} records/s, a fault every {:?}",
        args.records, args.keys, args.rate, args.fault_every
    );
    let mut kafka = KafkaProcess::launch(&[]).await;
    let mut redis = Redis::start();
    let tb = TestBroker::kafka_at(kafka.addr(), 6);
    let names = Names::new();
    tb.topic(&names.input).await;
    tb.topic(&names.output).await;
    tb.topic(&format!("{}.dlq", names.input)).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&pg_url)
        .await
        .expect("PostgreSQL reachable");
    names.outbox.migrate(&pool).await.expect("outbox table");
    let ledger = Arc::new(Ledger::new(args.records, args.keys));
    let setup = Rc::new(Setup {
        tb,
        names: names.clone(),
        ledger: ledger.clone(),
        redis_url: redis.url(),
        pool: pool.clone(),
    });
    let publisher = Kafkactor::builder()
        .broker(setup.tb.broker.clone())
        .delivery_timeout(Duration::from_secs(300))
        .delays(names.delays.clone().publish_only())
        .start()
        .await
        .expect("the publisher starts");
    let mut members = vec![member(&setup).await, member(&setup).await];
    let all = inputs(args.records, args.keys);
    let rejected: Vec<u64> = all
        .iter()
        .filter(|i| i.kind == REJECT)
        .map(|i| i.id)
        .collect();
    let kinds: Vec<u8> = all.iter().map(|i| i.kind).collect();
    let republished = Rc::new(AtomicU64::new(0));
    let publishing = actix::spawn(publish(
        setup.clone(),
        publisher.producer(),
        all,
        args.rate,
        republished.clone(),
    ));

    // Memory, sampled every second.
    let memory: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let sampling = {
        let memory = memory.clone();
        actix::spawn(async move {
            let t0 = Instant::now();
            loop {
                memory.lock().unwrap().push((t0.elapsed(), rss()));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Faults until everything is published, and one more round.
    let mut faults = Faults::default();
    let mut rng = fastrand::Rng::with_seed(0xc4a05);
    let mut max_members = members.len() as u64;
    let sub_paths =
        [&names.plain, &names.idem, &names.tx].map(|g| format!("subscription:{g}:{}", names.input));
    let mut last_round = false;
    let mut schedule: Vec<u8> = Vec::new();
    loop {
        tokio::time::sleep(args.fault_every).await;
        // Faults go on while the subscriptions catch up, until each has
        // seen every record (and one round more).
        let seen = |t: &[AtomicU8]| t.iter().filter(|c| c.load(Ordering::Relaxed) > 0).count();
        let caught_up = seen(&ledger.plain) + rejected.len() >= args.records as usize
            && seen(&ledger.idem) >= args.records as usize
            && seen(&ledger.tx) >= args.records as usize;
        if publishing.is_finished() && caught_up {
            if last_round {
                break;
            }
            last_round = true;
        }
        let target = rng.usize(..members.len());
        let sub = &sub_paths[rng.usize(..sub_paths.len())];
        // Every kind in turn, in a shuffled order each round.
        if schedule.is_empty() {
            schedule = args.faults.clone();
            rng.shuffle(&mut schedule);
        }
        let Some(kind) = schedule.pop() else {
            continue;
        };
        match kind {
            0 => {
                fail(
                    &members[target],
                    &format!("{sub}/handlers/handler-{}", rng.usize(..4)),
                )
                .await;
                faults.note("handler failed");
            }
            1 => {
                fail(&members[target], &format!("{sub}/dispatcher")).await;
                faults.note(if sub.contains(&names.idem) {
                    "dispatcher failed (idempotent)"
                } else {
                    "dispatcher failed"
                });
            }
            2 => {
                fail(&members[target], &format!("{sub}/consumer-connection")).await;
                faults.note("consumer connection failed");
            }
            3 => {
                let path = [
                    "producer",
                    "producer-connection",
                    "republisher/republisher",
                    "republisher/consumer-connection",
                ][rng.usize(..4)];
                fail(&members[target], path).await;
                faults.note("producer or republisher failed");
            }
            4 => {
                kafka.kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                kafka.restart().await;
                faults.note("Kafka killed (SIGKILL) and restarted");
            }
            5 | 6 if (kind == 5 && members.len() < 4) || members.len() == 1 => {
                members.push(member(&setup).await);
                max_members = max_members.max(members.len() as u64);
                faults.note("member joined");
            }
            5 | 6 => {
                let leaving = members.remove(target);
                leaving.shutdown().await.expect("a member stops");
                faults.note("member left");
            }
            7 => {
                redis.restart();
                faults.note("Redis killed and restarted");
            }
            _ => match &pg_restart {
                Some(cmd) => {
                    let ok = Command::new("bash")
                        .arg("-c")
                        .arg(cmd)
                        .status()
                        .is_ok_and(|s| s.success());
                    faults.note(if ok {
                        "PostgreSQL restarted"
                    } else {
                        "PostgreSQL restart failed"
                    });
                }
                None => faults.note("PostgreSQL restart skipped (no command)"),
            },
        }
        println!(
            "  {:>5.0} s: {} faults, {} members, plain {} / idempotent {} handled, RSS {:.0} MiB",
            started.elapsed().as_secs_f64(),
            faults.total(),
            members.len(),
            ledger
                .plain
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) > 0)
                .count(),
            ledger
                .idem
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) > 0)
                .count(),
            mib(rss())
        );
    }
    publishing.await.expect("publishing ends");
    ledger.chaos.store(false, Ordering::SeqCst);

    // Everything drains: every group committed to the end, the outbox empty.
    let limit = Duration::from_secs(600);
    let lags: Vec<(String, i64)> = {
        let mut lags = Vec::new();
        for group in [&names.plain, &names.idem, &names.tx] {
            lags.push((
                group.clone(),
                drained(&setup.tb, group, &names.input, limit).await,
            ));
        }
        lags
    };
    let pending_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        names.outbox.table_name()
    )))
    .fetch_one(&pool)
    .await
    .unwrap_or(-1);
    let ran_for = started.elapsed();
    for app in members {
        app.shutdown().await.expect("a member stops");
    }
    publisher.shutdown().await.expect("the publisher stops");
    sampling.abort();

    // What a read_committed reader sees of the outputs, and the dead letters.
    let reader = {
        let (outputs, dead, copies) = (ledger.clone(), ledger.clone(), ledger.clone());
        let groups = (names.plain.clone(), names.idem.clone(), names.tx.clone());
        Kafkactor::builder()
            .broker(setup.tb.broker.clone())
            .handle(
                Subscription::to(names.output.as_str()).group(support::unique("reader").as_str()),
                move |d: Delivery<Input>| {
                    let input = d.message();
                    if Ledger::count(&outputs.outputs, input.id) {
                        Ledger::in_order(
                            &outputs.output_seq,
                            &outputs.output_order_violations,
                            input,
                        );
                    }
                    std::future::ready(Outcome::Ack)
                },
            )
            .handle(
                Subscription::to(names.input.as_str()).group(support::unique("inputs").as_str()),
                move |d: Delivery<Input>| {
                    Ledger::count(&copies.inputs, d.message().id);
                    std::future::ready(Outcome::Ack)
                },
            )
            .handle(
                Subscription::to(format!("{}.dlq", names.input).as_str())
                    .group(support::unique("dead").as_str()),
                move |d: Delivery<Input>| {
                    let group = d.headers().get_str(kafkactor::header::GROUP).unwrap_or("");
                    let by = [&groups.0, &groups.1, &groups.2]
                        .iter()
                        .position(|g| g.as_str() == group);
                    if let Some(by) = by {
                        Ledger::count(&dead.dead[by], d.message().id);
                    }
                    std::future::ready(Outcome::Ack)
                },
            )
            .start()
            .await
            .expect("the reader starts")
    };
    let expected_outputs = args.records;
    let deadline = Instant::now() + Duration::from_secs(300);
    let seen = |t: &[AtomicU8]| t.iter().filter(|c| c.load(Ordering::Relaxed) > 0).count() as u64;
    while (seen(&ledger.outputs) < expected_outputs
        || seen(&ledger.inputs) < args.records
        || seen(&ledger.dead[0]) < rejected.len() as u64)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Anything more (a duplicate) would come within a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    reader.shutdown().await.expect("the reader stops");

    // The figures.
    let n = args.records as usize;
    let is_rejected = {
        let mut r = vec![false; n];
        for id in &rejected {
            r[*id as usize] = true;
        }
        r
    };
    let count = |t: &[AtomicU8], i: usize| t[i].load(Ordering::SeqCst) as u64;
    let [dead_plain, dead_idem, dead_tx] = &ledger.dead;
    // Lost: neither handled nor dead-lettered by the subscription.
    let lost = |handled: &[AtomicU8], dead: &[AtomicU8]| {
        (0..n)
            .filter(|&i| count(handled, i) == 0 && count(dead, i) == 0)
            .count()
    };
    // Handled more often than the record has copies in the input topic
    // (the idempotent subscription: more than once, whatever the copies).
    let copies = |i: usize| count(&ledger.inputs, i).max(1);
    let twice = |handled: &[AtomicU8]| -> u64 {
        (0..n)
            .map(|i| count(handled, i).saturating_sub(copies(i)))
            .sum()
    };
    let (plain_lost, plain_duplicates) = (lost(&ledger.plain, dead_plain), twice(&ledger.plain));
    let idem_duplicates: u64 = (0..n)
        .map(|i| count(&ledger.idem, i).saturating_sub(1))
        .sum();
    let idem_lost = lost(&ledger.idem, dead_idem);
    let (tx_lost, tx_duplicates) = (lost(&ledger.outputs, dead_tx), twice(&ledger.outputs));
    // Exactly once per input record: as many outputs as copies.
    let tx_short: u64 = (0..n)
        .filter(|&i| count(dead_tx, i) == 0)
        .map(|i| count(&ledger.inputs, i).saturating_sub(count(&ledger.outputs, i)))
        .sum();
    let mut copied = [0u64; 4];
    for (i, kind) in kinds.iter().enumerate() {
        copied[*kind as usize] += count(&ledger.inputs, i).saturating_sub(1);
    }
    let dead_lost = rejected
        .iter()
        .filter(|&&i| count(dead_plain, i as usize) == 0)
        .count();
    // Dead-lettered without being rejected (every attempt failed): a fate,
    // not a loss, but not what this soak expects.
    let dead_other = [dead_plain, dead_idem, dead_tx].map(|t| {
        (0..n)
            .filter(|&i| !is_rejected[i] && count(t, i) > 0)
            .count()
    });
    let redeliveries = faults.of("dispatcher failed")
        + faults.of("dispatcher failed (idempotent)")
        + faults.of("consumer connection failed")
        + faults.of("Kafka killed (SIGKILL) and restarted")
        + faults.of("member left")
        + faults.of("member joined");
    // Per fault, at most what each member had read and not committed: its
    // records in flight and a commit interval's worth (a poll's batch).
    let plain_bound = redeliveries * max_members * (MAX_IN_FLIGHT as u64 + 4_096);
    let idem_bound = faults.of("dispatcher failed (idempotent)") * max_members * 4_096;
    let samples = memory.lock().unwrap().clone();
    let peak = samples.iter().map(|(_, b)| *b).max().unwrap_or(0);
    let at_minute = samples
        .iter()
        .find(|(t, _)| *t >= Duration::from_secs(60))
        .map(|(_, b)| *b);
    let end = samples.last().map_or(0, |(_, b)| *b);
    let memory_flat = at_minute.is_none_or(|m| end <= m + m / 2 + (64 << 20));

    println!("\nsoak figures");
    println!(
        "  records            {} over {} keys ({} rejected, ~5 % delayed, ~5 % through the outbox)",
        args.records,
        args.keys,
        rejected.len()
    );
    println!(
        "  time               {:.0} s of flow and faults, {:.0} s in all",
        ran_for.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  faults             {} in all; handler panics injected: {}",
        faults.total(),
        ledger.panics.load(Ordering::SeqCst)
    );
    for (kind, n) in &faults.0 {
        println!("    {n:>5}  {kind}");
    }
    println!(
        "  input copies       direct {}, delayed {} (the Republisher's at-least-once), outbox {} (the relay's), rejected {}",
        copied[DIRECT as usize],
        copied[DELAYED as usize],
        copied[OUTBOX as usize],
        copied[REJECT as usize]
    );
    println!(
        "  publishes repeated {} (each a possible duplicate input)",
        republished.load(Ordering::SeqCst)
    );
    println!("  lost               plain {plain_lost}, idempotent {idem_lost}, transactional outputs {tx_lost} (outputs short of their input copies {tx_short}), dead letters {dead_lost}");
    println!(
        "  dead-lettered      {} rejected; otherwise (every attempt failed): plain {}, idempotent {}, transactional {}",
        rejected.len(),
        dead_other[0],
        dead_other[1],
        dead_other[2]
    );
    println!("  duplicates         plain {plain_duplicates} redeliveries (bound {plain_bound}), idempotent effects {idem_duplicates} (window bound {idem_bound}), transactional outputs {tx_duplicates} (beyond one per input record)");
    println!(
        "  order violations   plain {}, transactional outputs {}",
        ledger.order_violations.load(Ordering::SeqCst),
        ledger.output_order_violations.load(Ordering::SeqCst)
    );
    println!(
        "  delayed early      {}",
        ledger.early.load(Ordering::SeqCst)
    );
    println!("  lag at the end     {lags:?}; outbox rows left {pending_rows}");
    println!(
        "  memory (RSS)       peak {:.0} MiB, at 1 min {}, at the end {:.0} MiB",
        mib(peak),
        at_minute.map_or("-".to_string(), |m| format!("{:.0} MiB", mib(m))),
        mib(end)
    );

    let mut off = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            off.push(what.to_string());
        }
    };
    check(
        plain_lost == 0 && idem_lost == 0 && tx_lost == 0 && tx_short == 0 && dead_lost == 0,
        "records lost",
    );
    check(
        plain_duplicates <= plain_bound,
        "plain duplicates past the in-flight bound",
    );
    check(
        idem_duplicates <= idem_bound,
        "idempotent effects twice outside the window",
    );
    check(tx_duplicates == 0, "transactional outputs twice");
    check(
        ledger.order_violations.load(Ordering::SeqCst) == 0
            && ledger.output_order_violations.load(Ordering::SeqCst) == 0,
        "per-key order broken",
    );
    check(
        ledger.early.load(Ordering::SeqCst) == 0,
        "delayed records early",
    );
    check(
        lags.iter().all(|(_, l)| *l == 0) && pending_rows == 0,
        "lag left",
    );
    check(memory_flat, "memory grew after the first minute");
    drop(kafka);
    drop(redis);
    if off.is_empty() {
        println!("\nsoak passed");
    } else {
        println!("\nsoak FAILED: {}", off.join("; "));
        std::process::exit(1);
    }
}
