//! Shared helpers for the behaviour tests: a configurable test actor that logs
//! its lifecycle, a shared log, and an event reader that waits with deadlines.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition or reads
//! the event channel under a deadline and fails the test when it passes.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    MessageResult, ResponseActFuture, ResponseFuture, WrapFuture,
};
use kafkactor_actors::prelude::*;
use tokio::sync::broadcast;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(2);

/// A log of lifecycle lines shared between test actors and the test.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// How many lines equal `line`.
    pub fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }

    /// Incarnations of `name` that started and have not stopped yet.
    pub fn alive(&self, name: &str) -> usize {
        self.count(&format!("{name} started")) - self.count(&format!("{name} stopped"))
    }

    /// Waits until `cond` holds on the log, failing the test after [`WAIT`].
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&[String]) -> bool) {
        let log = self.clone();
        eventually(what, move || cond(&log.lines())).await;
    }
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// A compact, comparable rendering of an event:
/// `"<verb> <supervisor>/<child> <detail>"`.
pub fn short(event: &SupervisionEvent) -> String {
    match event {
        SupervisionEvent::Started { supervisor, child } => format!("started {supervisor}/{child}"),
        SupervisionEvent::Failed {
            supervisor,
            child,
            exit,
        } => format!("failed {supervisor}/{child} {exit}"),
        SupervisionEvent::Restarting {
            supervisor,
            child,
            delay,
        } => format!("restarting {supervisor}/{child} {delay:?}"),
        SupervisionEvent::Restarted {
            supervisor,
            child,
            restarts,
        } => format!("restarted {supervisor}/{child} {restarts}"),
        SupervisionEvent::Stopped {
            supervisor,
            child,
            exit,
        } => format!("stopped {supervisor}/{child} {exit}"),
        SupervisionEvent::Escalated { supervisor, reason } => {
            format!("escalated {supervisor}: {reason}")
        }
        other => format!("{other:?}"),
    }
}

/// Reads events from an [`Events`] channel, each read bounded by [`WAIT`].
/// Create it before starting the supervisor so no event is missed.
#[derive(Debug)]
pub struct EventReader {
    rx: broadcast::Receiver<SupervisionEvent>,
}

impl EventReader {
    pub fn new(events: &Events) -> Self {
        EventReader {
            rx: events.subscribe(),
        }
    }

    /// The next event, failing the test if none comes within [`WAIT`].
    pub async fn next(&mut self) -> SupervisionEvent {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("timed out waiting for the next supervision event"),
        }
    }

    /// The next `n` events, rendered with [`short`].
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(short(&self.next().await));
        }
        out
    }

    /// Asserts that the next events are exactly `expected`, in order.
    pub async fn expect(&mut self, expected: &[&str]) {
        let got = self.take(expected.len()).await;
        assert_eq!(got, expected, "unexpected supervision events");
    }

    /// Reads events until one matches `pred`; returns every event read, the
    /// matching one last.
    pub async fn until(
        &mut self,
        pred: impl Fn(&SupervisionEvent) -> bool,
    ) -> Vec<SupervisionEvent> {
        let mut out = Vec::new();
        loop {
            let event = self.next().await;
            let done = pred(&event);
            out.push(event);
            if done {
                return out;
            }
        }
    }

    /// Asserts that no event is waiting to be read right now.
    pub fn assert_drained(&mut self) {
        match self.rx.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => {}
            Ok(event) => panic!("unexpected extra event: {}", short(&event)),
            Err(e) => panic!("event channel: {e}"),
        }
    }
}

/// Panics inside the handler.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Crash(pub &'static str);

/// Panics inside a future spawned on the actor's context with `ctx.spawn`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CrashSpawned(pub &'static str);

/// Panics inside the `ResponseActFuture` the handler returns.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CrashInResponse(pub &'static str);

/// Panics inside the `ResponseFuture` the handler returns, which actix runs
/// on a detached task: the panic does not reach the actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CrashInDetachedFuture(pub &'static str);

/// Stops the actor through [`fail`] with the reason.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FailWith(pub &'static str);

/// Stops the actor normally with `ctx.stop()`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Quit;

/// Answers with the worker's name.
#[derive(Debug, Message)]
#[rtype(result = "String")]
pub struct Ping;

/// Answers with the thread the worker runs on.
#[derive(Debug, Message)]
#[rtype(result = "std::thread::ThreadId")]
pub struct WhichThread;

/// A test actor that logs `"<name> started"` and `"<name> stopped"` and can be
/// told to fail in every way a child can fail.
#[derive(Debug)]
pub struct Worker {
    name: String,
    log: Log,
}

impl Worker {
    pub fn new(name: &str, log: &Log) -> Self {
        Worker {
            name: name.to_string(),
            log: log.clone(),
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.log.push(format!("{} started", self.name));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.push(format!("{} stopped", self.name));
    }
}

impl Handler<Shutdown> for Worker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.log.push(format!("{} shutdown", self.name));
        ctx.stop();
    }
}

impl Handler<Crash> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Crash, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

impl Handler<CrashSpawned> for Worker {
    type Result = ();
    fn handle(&mut self, msg: CrashSpawned, ctx: &mut Context<Self>) {
        ctx.spawn(
            async {}
                .into_actor(self)
                .map(move |(), _, _| panic!("{}", msg.0)),
        );
    }
}

impl Handler<CrashInResponse> for Worker {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, msg: CrashInResponse, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            async { tokio::task::yield_now().await }
                .into_actor(self)
                .map(move |(), _, _| panic!("{}", msg.0)),
        )
    }
}

impl Handler<CrashInDetachedFuture> for Worker {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: CrashInDetachedFuture, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move { panic!("{}", msg.0) })
    }
}

impl Handler<FailWith> for Worker {
    type Result = ();
    fn handle(&mut self, msg: FailWith, ctx: &mut Context<Self>) {
        fail(ctx, msg.0);
    }
}

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<WhichThread> for Worker {
    type Result = MessageResult<WhichThread>;
    fn handle(&mut self, _: WhichThread, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::thread::current().id())
    }
}

impl Handler<Ping> for Worker {
    type Result = String;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> String {
        self.name.clone()
    }
}

/// A graceful child spec for a [`Worker`] called `name`, and its [`ChildRef`].
pub fn worker(name: &str, log: &Log) -> (ChildSpec, ChildRef<Worker>) {
    let child_ref = ChildRef::new();
    (worker_with(name, log, &child_ref), child_ref)
}

/// A graceful child spec for a [`Worker`] called `name` that keeps
/// `child_ref` current (for specs built again by a nested supervisor's factory).
pub fn worker_with(name: &str, log: &Log, child_ref: &ChildRef<Worker>) -> ChildSpec {
    let (n, l) = (name.to_string(), log.clone());
    ChildSpec::graceful_with_ref(name.to_string(), child_ref, move || Worker::new(&n, &l))
}

/// The current incarnation of `child`, failing the test after [`WAIT`].
pub async fn current<A: Actor>(child: &ChildRef<A>) -> (Addr<A>, u64) {
    child
        .ready_after(0, WAIT)
        .await
        .expect("child did not start in time")
}

/// Waits for an incarnation of `child` newer than `after`.
pub async fn newer_than<A: Actor>(child: &ChildRef<A>, after: u64) -> (Addr<A>, u64) {
    child
        .ready_after(after, WAIT)
        .await
        .unwrap_or_else(|| panic!("no incarnation after {after} in time"))
}
