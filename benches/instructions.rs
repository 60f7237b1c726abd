//! The per-record cost of the hot path, counted: CPU instructions under
//! callgrind and heap allocations by a counting allocator.
//!
//! `scripts/bench.sh --instructions` runs this binary under
//! `valgrind --tool=callgrind --toggle-collect=kafkactor_measured_phase` for
//! N and for 2N records of each scenario, and reports
//! `(I(2N) - I(N)) / N`: start-up, shutdown and the set-up outside the
//! measured phase cancel. Usage: `instructions <scenario> <records>`; it
//! prints `allocations=<count>` for the measured phase.
//!
//! Scenarios, both on the embedded broker, one actor thread:
//! - `consume`: N records already in a one-partition topic; the measured
//!   phase starts an application whose subscription (concurrency 1) decodes
//!   each record's MessagePack into a small struct, hands it to a no-op
//!   handler actor that acknowledges it, and commits; it ends once the
//!   handler has every record and the application has stopped (stopping
//!   commits what was handled; the group's lag is then checked zero).
//! - `publish`: N records published through the Producer actor (256 in
//!   flight), each answered once the embedded broker has it.
//! - `publish_batch`: the same records as `PublishBatch`es of 256, each
//!   answered once with every outcome.
//!
//! Each with kafkactor's metrics on (the default) or, with
//! `KAFKACTOR_METRICS=off`, off (`AppBuilder::metrics(false)`): the script
//! measures both and reports what metrics cost a record. No tracing
//! subscriber is attached, so kafkactor's INFO spans are not made.

use std::alloc::{GlobalAlloc, Layout, System as Heap};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts every allocation (and growing reallocation) of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { Heap.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { Heap.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { Heap.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The record: a small struct, 4 fields, no heap data once decoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    account: u32,
    amount_cents: i64,
    placed_ms: u64,
}

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const IN_FLIGHT: usize = 256;

/// Acknowledges every record; says when the last one came.
struct Noop {
    left: u64,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Actor for Noop {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Noop {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
        std::hint::black_box(d.message());
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
        Outcome::Ack
    }
}

fn order(id: u64) -> Publish {
    Publish::to(TOPIC)
        .key([(id % 64) as u8])
        .message(&Order {
            id,
            account: (id % 1_000) as u32,
            amount_cents: id as i64 % 10_000,
            placed_ms: 1_764_633_600_000 + id,
        })
        .expect("an Order encodes")
}

/// Publishes `n` records with at most [`IN_FLIGHT`] unanswered.
async fn publish(producer: &kafkactor::ProducerHandle, n: u64) {
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    for id in 0..n {
        pending.push_back(producer.send(order(id)));
        if pending.len() >= IN_FLIGHT {
            let outcome = pending.pop_front().expect("pending").await;
            outcome.expect("the Producer answers").expect("published");
        }
    }
    for outcome in pending {
        outcome
            .await
            .expect("the Producer answers")
            .expect("published");
    }
}

/// An application on `broker`, with metrics on unless `KAFKACTOR_METRICS=off`.
fn builder(broker: &Broker) -> kafkactor::AppBuilder {
    let on = std::env::var("KAFKACTOR_METRICS").map_or(true, |v| v != "off");
    Kafkactor::builder().broker(broker.clone()).metrics(on)
}

/// The measured phase: everything it runs (on this thread) is counted.
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn kafkactor_measured_phase(run: &mut dyn FnMut()) {
    run()
}

fn consume(n: u64) -> u64 {
    let system = actix::System::new();
    let broker = Broker::memory_with_partitions(1).expect("a broker");
    system.block_on(async {
        let app = Kafkactor::builder()
            .broker(broker.clone())
            .start()
            .await
            .expect("the producing app starts");
        publish(&app.producer(), n).await;
        app.shutdown().await.expect("the producing app stops");
    });
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    kafkactor_measured_phase(&mut || {
        system.block_on(async {
            let (done, handled) = tokio::sync::oneshot::channel();
            let done = Arc::new(std::sync::Mutex::new(Some(done)));
            let app = builder(&broker)
                .subscribe(Subscription::to(TOPIC).group(GROUP).concurrency(1), {
                    move || Noop {
                        left: n,
                        done: done.lock().unwrap().take(),
                    }
                })
                .start()
                .await
                .expect("the consuming app starts");
            handled.await.expect("every record handled");
            // Stopping commits what was handled: no waiting for the next
            // commit tick (a poll loop whose length, and cost, would vary
            // from run to run).
            app.shutdown().await.expect("the consuming app stops");
            let memory = broker.as_memory().expect("the embedded broker");
            assert_eq!(memory.lag(GROUP, TOPIC), 0, "not all committed");
        })
    });
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Publishes `n` records in batches of [`IN_FLIGHT`].
async fn publish_batches(producer: &kafkactor::ProducerHandle, n: u64) {
    let mut id = 0;
    while id < n {
        let end = (id + IN_FLIGHT as u64).min(n);
        let outcomes = producer
            .send_batch(PublishBatch((id..end).map(order).collect()))
            .await
            .expect("the Producer answers");
        assert!(outcomes.iter().all(Result::is_ok), "published");
        id = end;
    }
}

fn publish_only(n: u64, batched: bool) -> u64 {
    let system = actix::System::new();
    let broker = Broker::memory_with_partitions(1).expect("a broker");
    let app = system.block_on(async {
        let app = builder(&broker).start().await.expect("the app starts");
        // The topic exists and every actor on the path has run once.
        publish(&app.producer(), 1).await;
        app
    });
    let producer = app.producer();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    kafkactor_measured_phase(&mut || {
        if batched {
            system.block_on(publish_batches(&producer, n))
        } else {
            system.block_on(publish(&producer, n))
        }
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let memory = broker.as_memory().expect("the embedded broker");
    assert_eq!(
        memory.end_offset(TOPIC, 0),
        Some(n as i64 + 1),
        "every record written"
    );
    system.block_on(async { app.shutdown().await.expect("the app stops") });
    allocations
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        // scripts/instructions.sh, under callgrind.
        [scenario, n] if matches!(scenario.as_str(), "consume" | "publish" | "publish_batch") => {
            let n = n.parse::<u64>().expect("a record count");
            println!("allocations={}", run(scenario, n));
        }
        // `cargo bench`: a quick smoke run of both.
        [bench] if bench == "--bench" => {
            for scenario in ["consume", "publish", "publish_batch"] {
                let allocations = run(scenario, 1_000);
                println!("{scenario} 1000: allocations={allocations}");
            }
        }
        // Test runners (`cargo test --all-targets`, nextest's `--list`) run
        // bench binaries too: nothing to do for them.
        _ => {}
    }
}

fn run(scenario: &str, n: u64) -> u64 {
    match scenario {
        "consume" => consume(n),
        "publish" => publish_only(n, false),
        "publish_batch" => publish_only(n, true),
        other => panic!("unknown scenario {other}: consume, publish or publish_batch"),
    }
}
