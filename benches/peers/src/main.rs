//! RustStream 0.7.7's per-record cost, counted the way `benches/instructions.rs`
//! counts kafkactor's: CPU instructions under callgrind and heap allocations
//! by a counting allocator, for N and for 2N records, reported as
//! `(I(2N) - I(N)) / N` so that start-up, shutdown and whatever a run does
//! once cancel.
//!
//! Usage: `peers <scenario> <records>`; it prints `allocations=<count>` for
//! the measured phase. Everything measured runs inside
//! [`peers_measured_phase`], which `valgrind --tool=callgrind
//! --toggle-collect=peers_measured_phase` counts (`scripts/instructions.sh
//! --peers`). Built on its own (`cargo build --release --manifest-path
//! benches/peers/Cargo.toml --target-dir target/peers`), with the fat LTO
//! RustStream's own benchmarks are published with.
//!
//! Every scenario runs RustStream's service on its in-process
//! `MemoryBroker`, on one thread (a current-thread tokio runtime), the way
//! RustStream's own `benches/` do (`common::start_and_drain`). The set-up
//! (building and starting the service, filling the queue) is outside the
//! measured phase; so is every check. Each record is the same JSON
//! `{"id":1000000,"quantity":37}` (RustStream's `json_body(0)`, kafkactor's
//! `ORDER`), so a run's second half costs what its first does.
//!
//! Scenarios, each named after kafkactor's scenario it is compared with:
//! - `consume_json`: N records already in "orders"; the measured phase
//!   drains them through a subscriber that decodes each into `Order { id,
//!   quantity }` with RustStream's JSON codec, black-boxes both fields,
//!   counts a latch down and acks (RustStream's `benches/consume_json.rs`).
//!   kafkactor's `consume_json` also starts and stops its application inside
//!   the measured phase: a fixed cost, which cancels.
//! - `consume_bytes`: the same on RustStream's byte lane: the handler takes
//!   the payload as `&[u8]`, no codec runs (their `benches/consume_lane.rs`);
//!   kafkactor's `consume_raw`.
//! - `publish`: N records published one at a time, each awaited before the
//!   next, through the service's publisher (`RunningApp::publisher`, a
//!   `MemoryPublisher`) with RustStream's publish builder:
//!   `message(&order).to("orders").with_headers(map).publish()`. The map
//!   carries the record's key in the memory broker's `partition-key` header
//!   (RustStream has no key field: a broker carries it as a header or an
//!   option of its own, and the memory broker's is this header) and one
//!   header of its own, `x-source: bench`, as kafkactor's
//!   `Publish::key(..).header(..)` does: the key's byte copied into the map
//!   (kafkactor copies it too), the constant name and value in the forms
//!   RustStream documents as free (`Str::from_static`, `Bytes::from_static`).
//!   Built with `&str` names and owned values instead, a record costs about
//!   800 instructions and 3 allocations more. The broker is a retaining one
//!   (`MemoryBroker::retaining`), so it keeps every record, as kafkactor's
//!   embedded broker does; a discarding one with nobody reading drops a
//!   publish at once. The records are counted back afterwards.
//! - `publish_inflight`: the same records with up to 256 publishes pending
//!   at once: chunks of 256 publish futures, joined. The memory broker's
//!   publish completes at its first poll, so nothing is ever waited for and
//!   the work is the sequential one; the figure shows what the concurrency
//!   adds (kafkactor's `publish_inflight`, which its Producer batches).
//! - `consume_publish`: as `consume_json`, the handler publishing one JSON
//!   `Confirmation { id }` to "confirmations" through an `Out` slot and
//!   acking once the publish returned (kafkactor's `consume_publish`: a
//!   handler publishing, acknowledging once written; RustStream's
//!   `benches/out_slot.rs` without its transform). A reader subscribed to
//!   "confirmations" keeps every confirmation, and they are counted
//!   afterwards.

mod consume;
mod publish;

use std::alloc::{GlobalAlloc, Layout, System as Heap};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::{FutureExt as _, StreamExt as _};
use ruststream::{IncomingMessage as _, Subscriber};
use serde::{Deserialize, Serialize};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Notify;
use tokio::task::unconstrained;

/// Counts every allocation (and growing reallocation) of the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator as it came.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { Heap.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { Heap.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { Heap.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { Heap.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The measured phase: everything it runs (on this thread) is counted.
///
/// The `black_box` after the call keeps `run` from being a tail call, which
/// would leave this frame (and callgrind's collection) before `run` runs.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "Rust" fn peers_measured_phase(run: &mut dyn FnMut()) {
    run();
    black_box(());
}

/// Runs `run` as the measured phase; returns the allocations it made.
fn measured(mut run: impl FnMut()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    peers_measured_phase(&mut run);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// The topic every record goes to, or is consumed from.
const ORDERS: &str = "orders";

/// The record: two integer fields, so decoding allocates nothing.
#[derive(Debug, Serialize, Deserialize, ruststream::Outgoing)]
struct Order {
    id: u64,
    quantity: u32,
}

/// The same order in every record (RustStream's `json_body(0)`).
const ORDER: Order = Order {
    id: 1_000_000,
    quantity: 37,
};

/// [`ORDER`] as JSON, the bytes every consumed record carries.
fn order_json() -> Vec<u8> {
    format!("{{\"id\":{},\"quantity\":{}}}", ORDER.id, ORDER.quantity).into_bytes()
}

/// A single-threaded runtime, as RustStream's benchmarks run on: one order
/// of execution, the same instruction count on every run.
fn runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// Counts handled records down and wakes the waiter on the last one
/// (RustStream's `common::Latch`): one relaxed decrement per record, one
/// wake-up per run.
#[derive(Clone, Debug, Default)]
struct Latch(Arc<LatchInner>);

#[derive(Debug, Default)]
struct LatchInner {
    remaining: AtomicUsize,
    drained: Notify,
}

impl Latch {
    /// Arms the latch for `count` records.
    fn expect(&self, count: usize) {
        self.0.remaining.store(count, Ordering::Release);
    }

    /// One record handled.
    fn arrived(&self) {
        if self.0.remaining.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.drained.notify_one();
        }
    }

    /// How many records are still to come.
    fn remaining(&self) -> usize {
        self.0.remaining.load(Ordering::Acquire)
    }

    /// Resolves once every expected record has been handled.
    async fn drained(&self) {
        while self.remaining() > 0 {
            self.0.drained.notified().await;
        }
    }
}

/// Reads (and acks) every message already queued for `subscriber`, handing
/// each to `check`; returns how many there were.
///
/// Outside tokio's cooperative budget, which would otherwise end the read
/// after 128 messages as if the queue were empty.
async fn queued<S: Subscriber>(subscriber: &mut S, mut check: impl FnMut(&S::Message)) -> usize {
    let mut stream = pin!(subscriber.stream());
    let mut count = 0;
    while let Some(Some(message)) = unconstrained(stream.next()).now_or_never() {
        let message = message.expect("a delivery");
        check(&message);
        message.ack().await.expect("acknowledged");
        count += 1;
    }
    count
}

const SCENARIOS: [&str; 5] = [
    "consume_json",
    "consume_bytes",
    "publish",
    "publish_inflight",
    "consume_publish",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [scenario, records] = args.as_slice() else {
        eprintln!("usage: peers <scenario> <records>; scenarios: {SCENARIOS:?}");
        std::process::exit(2);
    };
    let n: usize = records.parse().expect("a record count");
    let allocations = match scenario.as_str() {
        "consume_json" => consume::consume(n, consume::Handler::Json),
        "consume_bytes" => consume::consume(n, consume::Handler::Bytes),
        "consume_publish" => consume::consume(n, consume::Handler::Publish),
        "publish" => publish::publish(n, publish::Mode::OneAtATime),
        "publish_inflight" => publish::publish(n, publish::Mode::InFlight),
        other => {
            eprintln!("unknown scenario {other}; scenarios: {SCENARIOS:?}");
            std::process::exit(2);
        }
    };
    println!("allocations={allocations}");
}
