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
//! Scenarios, on the embedded broker, one actor thread (the same as
//! RustStream's in `benches/peers`, `scripts/instructions.sh --peers`):
//! - `consume_json`: N JSON `Order {id, quantity}` records (kafkactor's
//!   headers: content type, type name, message id, time) already in a
//!   one-partition topic; the measured phase starts an application whose
//!   subscription (concurrency 1) decodes each into an `Order` and hands it
//!   to a no-op handler actor that acknowledges it; it ends once the
//!   handler has every record and the application has stopped (stopping
//!   commits what was handled; the group's lag is then checked zero).
//! - `consume_raw`: the same records, handled as `Delivery<Raw>` (no
//!   payload decoding).
//! - `publish`: N records, each with a key and a header, published through
//!   the `ProducerHandle` one at a time, each awaited until the embedded
//!   broker has it.
//! - `publish_inflight`: the same with 256 in flight.
//! - `publish_batch`: the same as `PublishBatch`es of 256, each answered
//!   once with every outcome.
//! - `consume_batch`: as `consume_json`, handled by a batch handler
//!   (`Handler<Batch<Order>>`, batches of up to 100) that acknowledges each
//!   batch whole: the batch path's cost per record, against
//!   `consume_json`'s.
//! - `consume_fn` and `consume_macro`: as `consume_json`, handled by one
//!   async function, subscribed by hand (`.handle(sub, f)`) and declared
//!   with `#[kafkactor::handler]` (`.handler(f)`): the macro's cost, which
//!   must be none.
//! - `consume_publish`: as `consume_json`, the handler publishing one JSON
//!   `Confirmation {id}` per record and acknowledging once it is written.
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
/// The record: two integers, so decoding it allocates nothing (RustStream's
/// benchmark payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    quantity: u32,
}

/// What `consume_publish`'s handler publishes for each order.
#[derive(Debug, Serialize)]
struct Confirmation {
    id: u64,
}

const TOPIC: &str = "orders";
const CONFIRMATIONS: &str = "confirmations";
const GROUP: &str = "billing";
const IN_FLIGHT: usize = 256;
/// The same order in every record: a run's second half costs what its first does.
const ORDER: Order = Order {
    id: 1_000_000,
    quantity: 37,
};

/// Counts handled records down; says when the last one came.
struct Countdown {
    left: u64,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Countdown {
    fn arrived(&mut self) {
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
}

/// Acknowledges every record.
struct Noop(Countdown);

impl Actor for Noop {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Noop {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
        std::hint::black_box((d.message().id, d.message().quantity));
        self.0.arrived();
        Outcome::Ack
    }
}

impl Handler<Delivery<Raw>> for Noop {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Raw>, _: &mut Context<Self>) -> Outcome {
        std::hint::black_box(d.message().len());
        self.0.arrived();
        Outcome::Ack
    }
}

impl Handler<Batch<Order>> for Noop {
    type Result = BatchOutcome;

    fn handle(&mut self, b: Batch<Order>, _: &mut Context<Self>) -> BatchOutcome {
        for d in &b {
            std::hint::black_box((d.message().id, d.message().quantity));
            self.0.arrived();
        }
        BatchOutcome::Ack
    }
}

/// Publishes a confirmation of every order, acknowledging the order once
/// the confirmation is written.
struct Confirm {
    countdown: Countdown,
    producer: kafkactor::ProducerHandle,
}

impl Actor for Confirm {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Confirm {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        let sent = self.producer.send(
            Publish::to(CONFIRMATIONS)
                .json()
                .message(&Confirmation { id: d.message().id })
                .expect("a Confirmation encodes"),
        );
        self.countdown.arrived();
        Box::pin(async move {
            match sent.await {
                Ok(Ok(_)) => Outcome::Ack,
                Ok(Err(e)) => Outcome::retry(e),
                Err(e) => Outcome::retry(e),
            }
        })
    }
}

/// What `consume_fn` and `consume_macro` count down.
static LEFT: AtomicU64 = AtomicU64::new(0);
static DONE: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>> =
    std::sync::Mutex::new(None);

/// Arms the function handlers' countdown for `n` records.
fn arm(n: u64, done: tokio::sync::oneshot::Sender<()>) {
    LEFT.store(n, Ordering::Relaxed);
    *DONE.lock().unwrap() = Some(done);
}

/// What both function handlers do with a record.
fn arrived(d: &Delivery<Order>) -> Outcome {
    std::hint::black_box((d.message().id, d.message().quantity));
    if LEFT.fetch_sub(1, Ordering::Relaxed) == 1 {
        if let Some(done) = DONE.lock().unwrap().take() {
            let _ = done.send(());
        }
    }
    Outcome::Ack
}

/// `consume_fn`'s handler, subscribed by hand.
async fn by_hand(d: Delivery<Order>) -> Outcome {
    arrived(&d)
}

/// `consume_macro`'s handler: the same, declared.
#[kafkactor::handler(topic = TOPIC, group = GROUP, concurrency = 1)]
async fn declared(d: Delivery<Order>) -> Outcome {
    arrived(&d)
}

/// One order as a user publishes it: a key, a header, a JSON payload.
fn order(id: u64) -> Publish {
    Publish::to(TOPIC)
        .key([(id % 64) as u8])
        .header("x-source", "bench")
        .json()
        .message(&ORDER)
        .expect("an Order encodes")
}

/// Publishes `n` records with at most `in_flight` unanswered.
async fn publish(producer: &kafkactor::ProducerHandle, n: u64, in_flight: usize) {
    let mut pending = VecDeque::with_capacity(in_flight);
    for id in 0..n {
        pending.push_back(producer.send(order(id)));
        if pending.len() >= in_flight {
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

/// An application on `broker`, with metrics on unless `KAFKACTOR_METRICS=off`.
fn builder(broker: &Broker) -> kafkactor::AppBuilder {
    let on = std::env::var("KAFKACTOR_METRICS").map_or(true, |v| v != "off");
    Kafkactor::builder().broker(broker.clone()).metrics(on)
}

/// The measured phase: everything it runs (on this thread) is counted.
#[no_mangle]
#[inline(never)]
pub extern "Rust" fn kafkactor_measured_phase(run: &mut dyn FnMut()) {
    run();
    std::hint::black_box(());
}

/// What a consuming scenario's handler does.
#[derive(Clone, Copy, PartialEq)]
enum Consumer {
    Json,
    Raw,
    Batch,
    Confirm,
    /// An async function, subscribed by hand.
    Fn,
    /// The same function, declared with `#[kafkactor::handler]`.
    Macro,
}

fn consume(n: u64, consumer: Consumer) -> u64 {
    let system = actix::System::new();
    let broker = Broker::memory_with_partitions(1).expect("a broker");
    // Fills the topic, then publishes `consume_publish`'s confirmations: an
    // application of its own, running across the measured phase.
    let publisher = system.block_on(async {
        let app = Kafkactor::builder()
            .broker(broker.clone())
            .start()
            .await
            .expect("the producing app starts");
        let producer = app.producer();
        for _ in 0..n {
            let publish = Publish::to(TOPIC).json().message(&ORDER).expect("encodes");
            producer
                .send(publish)
                .await
                .expect("the Producer answers")
                .expect("published");
        }
        // The output topic exists before the measured phase.
        producer
            .send(Publish::to(CONFIRMATIONS).payload("first"))
            .await
            .expect("the Producer answers")
            .expect("published");
        app
    });
    let producer = publisher.producer();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    kafkactor_measured_phase(&mut || {
        system.block_on(async {
            let (done, handled) = tokio::sync::oneshot::channel();
            let done = Arc::new(std::sync::Mutex::new(Some(done)));
            let countdown = move || Countdown {
                left: n,
                done: done.lock().unwrap().take(),
            };
            let sub = Subscription::to(TOPIC).group(GROUP).concurrency(1);
            let builder = builder(&broker);
            let builder = match consumer {
                Consumer::Json => builder.subscribe::<_, Order, _>(sub, move || Noop(countdown())),
                Consumer::Raw => builder.subscribe::<_, Raw, _>(sub, move || Noop(countdown())),
                Consumer::Batch => builder.subscribe_batch::<_, Order, _>(
                    sub.batch(100, std::time::Duration::ZERO),
                    move || Noop(countdown()),
                ),
                Consumer::Fn => {
                    arm(n, countdown().done.expect("armed once"));
                    builder.handle(sub, by_hand)
                }
                Consumer::Macro => {
                    arm(n, countdown().done.expect("armed once"));
                    builder.handler(declared)
                }
                Consumer::Confirm => {
                    let producer = producer.clone();
                    builder.subscribe::<_, Order, _>(sub, move || Confirm {
                        countdown: countdown(),
                        producer: producer.clone(),
                    })
                }
            };
            let app = builder.start().await.expect("the consuming app starts");
            handled.await.expect("every record handled");
            // Stopping commits what was handled: no waiting for the next
            // commit tick (a poll loop whose length, and cost, would vary
            // from run to run).
            app.shutdown().await.expect("the consuming app stops");
        })
    });
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    system.block_on(async { publisher.shutdown().await.expect("the producing app stops") });
    let memory = broker.as_memory().expect("the embedded broker");
    assert_eq!(memory.lag(GROUP, TOPIC), 0, "not all committed");
    if consumer == Consumer::Confirm {
        assert_eq!(
            memory.end_offset(CONFIRMATIONS, 0),
            Some(n as i64 + 1),
            "every confirmation written"
        );
    }
    allocations
}

/// How a publishing scenario sends its records.
#[derive(Clone, Copy)]
enum Sending {
    OneAtATime,
    InFlight,
    Batches,
}

fn publish_only(n: u64, sending: Sending) -> u64 {
    let system = actix::System::new();
    let broker = Broker::memory_with_partitions(1).expect("a broker");
    let app = system.block_on(async {
        let app = builder(&broker).start().await.expect("the app starts");
        // The topic exists and every actor on the path has run once.
        publish(&app.producer(), 1, 1).await;
        app
    });
    let producer = app.producer();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    kafkactor_measured_phase(&mut || match sending {
        Sending::OneAtATime => system.block_on(publish(&producer, n, 1)),
        Sending::InFlight => system.block_on(publish(&producer, n, IN_FLIGHT)),
        Sending::Batches => system.block_on(publish_batches(&producer, n)),
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

const SCENARIOS: [&str; 9] = [
    "consume_json",
    "consume_raw",
    "consume_batch",
    "publish",
    "publish_inflight",
    "publish_batch",
    "consume_publish",
    "consume_fn",
    "consume_macro",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        // scripts/instructions.sh, under callgrind.
        [scenario, n] if SCENARIOS.contains(&scenario.as_str()) => {
            let n = n.parse::<u64>().expect("a record count");
            println!("allocations={}", run(scenario, n));
        }
        // `cargo bench`: a quick smoke run of each.
        [bench] if bench == "--bench" => {
            for scenario in SCENARIOS {
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
        "consume_json" => consume(n, Consumer::Json),
        "consume_raw" => consume(n, Consumer::Raw),
        "consume_batch" => consume(n, Consumer::Batch),
        "consume_publish" => consume(n, Consumer::Confirm),
        "consume_fn" => consume(n, Consumer::Fn),
        "consume_macro" => consume(n, Consumer::Macro),
        "publish" => publish_only(n, Sending::OneAtATime),
        "publish_inflight" => publish_only(n, Sending::InFlight),
        "publish_batch" => publish_only(n, Sending::Batches),
        other => panic!("unknown scenario {other}: one of {SCENARIOS:?}"),
    }
}
