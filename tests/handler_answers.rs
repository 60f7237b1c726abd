//! Every kind of answer a handler actor can give is awaited by its lane:
//! `Outcome`, `MessageResult`, `ResponseFuture`, `ResponseActFuture` (which
//! reads and writes the actor's state after an await) and `AtomicResponse`
//! (which holds the actor's context until it answers). For each: every
//! record acknowledged once, one record at a time per handler actor, keys in
//! order, a `Retry` retried in place before the key's next record, and a
//! `Reject` dead-lettered. On the embedded broker (how a lane awaits an
//! answer does not depend on the broker).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor::prelude::*;
use support::*;

const N: u64 = 300;
const KEYS: u64 = 7;

/// What every handler kind shares: the log, how many of its calls are under
/// way at once, and the outcome for each delivery.
#[derive(Clone)]
struct Shared {
    log: Log,
    active: Arc<AtomicUsize>,
    overlapped: Arc<AtomicUsize>,
}

impl Shared {
    fn enter(&self) {
        if self.active.fetch_add(1, Ordering::SeqCst) > 0 {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Logs the handling and decides: every 10th order is retried once,
    /// order 13 is rejected.
    fn leave(&self, seen: Seen) -> Outcome {
        self.active.fetch_sub(1, Ordering::SeqCst);
        let outcome = if seen.id == 13 {
            Outcome::reject("thirteen")
        } else if seen.id % 10 == 0 && seen.attempt == 1 {
            Outcome::retry("once more")
        } else {
            Outcome::Ack
        };
        self.log.push(seen);
        outcome
    }
}

struct Sync(Shared);
impl Actor for Sync {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for Sync {
    type Result = Outcome;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
        self.0.enter();
        self.0.leave(Seen::of(&d, "sync"))
    }
}

struct Result_(Shared);
impl Actor for Result_ {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for Result_ {
    type Result = MessageResult<Delivery<Order>>;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        self.0.enter();
        MessageResult(self.0.leave(Seen::of(&d, "message-result")))
    }
}

struct Future_(Shared);
impl Actor for Future_ {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for Future_ {
    type Result = ResponseFuture<Outcome>;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        let shared = self.0.clone();
        shared.enter();
        Box::pin(async move {
            tokio::task::yield_now().await;
            shared.leave(Seen::of(&d, "future"))
        })
    }
}

/// Counts its deliveries in its own state, after an await.
struct ActorFuture_ {
    shared: Shared,
    handled: u64,
}
impl Actor for ActorFuture_ {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for ActorFuture_ {
    type Result = ResponseActFuture<Self, Outcome>;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        self.shared.enter();
        let before = self.handled;
        Box::pin(
            async { tokio::task::yield_now().await }
                .into_actor(self)
                .map(move |(), act, _| {
                    assert_eq!(act.handled, before, "another delivery ran meanwhile");
                    act.handled += 1;
                    act.shared.leave(Seen::of(&d, "actor-future"))
                }),
        )
    }
}

struct Atomic_(Shared);
impl Actor for Atomic_ {
    type Context = Context<Self>;
}
impl Handler<Delivery<Order>> for Atomic_ {
    type Result = AtomicResponse<Self, Outcome>;
    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Self::Result {
        self.0.enter();
        AtomicResponse::new(Box::pin(
            async { tokio::task::yield_now().await }
                .into_actor(self)
                .map(move |(), act, _| act.0.leave(Seen::of(&d, "atomic"))),
        ))
    }
}

/// Runs the records through a subscription whose handler actors `factory`
/// builds, and checks what the module documentation says.
async fn check<A, F>(kind: &str, factory: impl Fn(Shared) -> F)
where
    A: Actor<Context = Context<A>> + Handler<Delivery<Order>>,
    <A as Handler<Delivery<Order>>>::Result: 'static,
    F: Fn() -> A + 'static,
{
    let tb = TestBroker::memory(3);
    let topic = unique(kind);
    let group = unique("g");
    tb.topics(&[&topic]).await;
    let shared = Shared {
        log: Log::default(),
        active: Arc::new(AtomicUsize::new(0)),
        overlapped: Arc::new(AtomicUsize::new(0)),
    };
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(1)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(1))),
            factory(shared.clone()),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(N, KEYS)).await;
    tb.until_committed(&group, &topic, Duration::from_secs(30))
        .await;
    app.shutdown().await.unwrap();

    let seen = shared.log.seen();
    assert_eq!(
        shared.overlapped.load(Ordering::SeqCst),
        0,
        "{kind}: a lane's handler got a record before answering the last"
    );
    // Each record handled once, but every 10th twice (retried once).
    let counts = shared.log.counts();
    for id in 0..N {
        let expected = if id % 10 == 0 && id != 13 { 2 } else { 1 };
        assert_eq!(counts.get(&id), Some(&expected), "{kind}: order {id}");
    }
    // A retry runs before the key's next record: per key, handlings are
    // in seq order with the retried one repeated.
    let mut last: HashMap<&str, (u64, u32)> = HashMap::new();
    for s in &seen {
        if let Some(&(seq, attempt)) = last.get(s.key.as_str()) {
            assert!(
                s.seq > seq || (s.seq == seq && s.attempt == attempt + 1),
                "{kind}: key {} handled seq {} attempt {} after seq {seq} attempt {attempt}",
                s.key,
                s.seq,
                s.attempt
            );
        }
        last.insert(&s.key, (s.seq, s.attempt));
    }
    let dead = tb.records(&format!("{topic}.dlq")).await;
    assert_eq!(dead.len(), 1, "{kind}: one dead letter");
}

#[actix::test]
async fn outcome() {
    check("sync", |s| move || Sync(s.clone())).await;
}

#[actix::test]
async fn message_result() {
    check("message-result", |s| move || Result_(s.clone())).await;
}

#[actix::test]
async fn response_future() {
    check("future", |s| move || Future_(s.clone())).await;
}

#[actix::test]
async fn response_actor_future() {
    check("actor-future", |s| {
        move || ActorFuture_ {
            shared: s.clone(),
            handled: 0,
        }
    })
    .await;
}

#[actix::test]
async fn atomic_response() {
    check("atomic", |s| move || Atomic_(s.clone())).await;
}
