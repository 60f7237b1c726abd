//! The consuming scenarios: `consume_json`, `consume_bytes` and
//! `consume_publish`.

use std::hint::black_box;

use ruststream::OutgoingMessage;
use ruststream::memory::MemoryPublisher;
use ruststream::memory::prelude::*;
use ruststream::runtime::{BrokerScope, Identity};
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::{Latch, ORDERS, Order, measured, order_json, queued, runtime};

/// The record read as bytes: RustStream's byte lane, no codec.
#[derive(Deserialized)]
struct Frame<'a>(&'a [u8]);

/// What `consume_publish`'s handler publishes for each order.
#[derive(Debug, Serialize, Outgoing)]
#[outgoing(name = "confirmations")]
struct Confirmation {
    id: u64,
}

/// The slot `consume_publish`'s handler publishes through.
#[derive(OutSlot)]
#[publishes(Confirmation)]
struct Confirmations;

const CONFIRMATIONS: &str = "confirmations";

#[subscriber("orders")]
async fn consume_json(order: &Order, ctx: &mut Context<'_, (), Latch>) -> HandlerOutcome {
    black_box((order.id, order.quantity));
    ctx.state().arrived();
    HandlerOutcome::ack()
}

#[subscriber("orders")]
async fn consume_bytes(frame: &Frame<'_>, ctx: &mut Context<'_, (), Latch>) -> HandlerOutcome {
    black_box(frame.0.len());
    ctx.state().arrived();
    HandlerOutcome::ack()
}

#[subscriber("orders")]
async fn consume_publish(
    order: &Order,
    ctx: &mut Context<'_, (), Latch>,
    Out(out): Out<impl Publisher, Confirmations>,
) -> HandlerOutcome {
    ctx.state().arrived();
    let confirmation = Confirmation {
        id: black_box(order.id),
    };
    if out.message(&confirmation).publish().await.is_err() {
        return HandlerOutcome::retry();
    }
    HandlerOutcome::ack()
}

/// Which subscriber the service mounts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Json,
    Bytes,
    Publish,
}

/// What the service's broker scope is, for the mount.
type Scope<'a> = &'a mut BrokerScope<MemoryBroker, Identity, (), Latch>;

/// Starts a service consuming "orders" with `handler`, fills "orders" with
/// `n` records, and drains them in the measured phase.
pub fn consume(n: usize, handler: Handler) -> u64 {
    let runtime = runtime();
    let latch = Latch::default();
    let broker = MemoryBroker::new();
    let state = latch.clone();
    let app = RustStream::new(AppInfo::new("peers", "0.0.0"))
        .on_startup(async move |()| Ok::<_, std::convert::Infallible>(state))
        .with_broker(broker.clone(), |b: Scope<'_>| match handler {
            Handler::Json => {
                b.include(consume_json);
            }
            Handler::Bytes => {
                b.include(consume_bytes);
            }
            Handler::Publish => {
                b.include(consume_publish)
                    .out(Confirmations, Publish)
                    .build();
            }
        });
    let running = runtime.block_on(app.start()).expect("the service starts");
    // Keeps what the handler publishes: a discarding broker with nobody
    // reading a name drops a publish to it at once.
    let mut confirmations = (handler == Handler::Publish).then(|| broker.subscribe(CONFIRMATIONS));
    latch.expect(n);
    fill(&broker.publisher(), &runtime, n);
    assert_eq!(
        latch.remaining(),
        n,
        "the queue was consumed while it was being filled"
    );

    let allocations = measured(|| runtime.block_on(latch.drained()));

    if let Some(confirmations) = &mut confirmations {
        let kept = runtime.block_on(queued(confirmations, |_| ()));
        assert_eq!(kept, n, "a confirmation for every order");
    }
    runtime
        .block_on(running.shutdown())
        .expect("the service stops");
    allocations
}

/// Publishes `n` records to "orders" through the broker's own publisher,
/// within one poll: the service's dispatch task does not run meanwhile.
fn fill(publisher: &MemoryPublisher, runtime: &Runtime, n: usize) {
    let body = order_json();
    runtime.block_on(async {
        for _ in 0..n {
            publisher
                .publish(OutgoingMessage::new(ORDERS, body.as_slice()), None)
                .await
                .expect("an in-process publish");
        }
    });
}
