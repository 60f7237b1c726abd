//! Child specifications: how a supervisor starts, restarts and stops a child,
//! and [`ChildRef`], the always-current address of a supervised child.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::channel::{channel, AddressReceiver, AddressSender};
use actix::fut::wrap_future;
use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message};
use actix_rt::{Arbiter, System};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::exit::{fail, run_catching};
use crate::stop::{stop_line, StopListener, StopRequest, StopSender};
use crate::Exit;

/// Asks a supervised child to finish its in-flight work and stop.
///
/// Children built with [`ChildSpec::graceful`] receive it when their
/// supervisor stops them; the supervisor waits until the child's shutdown
/// deadline, then aborts it. A handler with nothing to drain simply calls
/// `ctx.stop()`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// When a child that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted, whatever the exit.
    #[default]
    Permanent,
    /// Restarted only after a failure (panic, [`fail`](crate::fail), kill).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    pub(crate) fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => exit.is_failure(),
            Restart::Temporary => false,
        }
    }
}

/// One incarnation of a child, as seen through a [`ChildRef`].
struct Incarnation<A: Actor> {
    addr: Addr<A>,
    /// The mailbox sender behind `addr`.
    sender: AddressSender<A>,
    number: u64,
    stop: StopSender,
}

impl<A: Actor> Clone for Incarnation<A> {
    fn clone(&self) -> Self {
        Incarnation {
            addr: self.addr.clone(),
            sender: self.sender.clone(),
            number: self.number,
            stop: self.stop.clone(),
        }
    }
}

/// The current address of a supervised child, kept up to date across restarts.
///
/// A restart re-creates the child from its factory with a new mailbox; holders
/// of a `ChildRef` resolve the current one with [`ChildRef::get`], or wait for
/// it with [`ChildRef::ready`]. Each start of the child is an *incarnation*,
/// numbered from 1.
pub struct ChildRef<A: Actor> {
    slot: Arc<watch::Sender<Slot<A>>>,
}

struct Slot<A: Actor> {
    current: Option<Incarnation<A>>,
    started: u64,
    last_exit: Option<(u64, Exit)>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        ChildRef {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> Default for ChildRef<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor> fmt::Debug for ChildRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildRef")
            .field("actor", &std::any::type_name::<A>())
            .field("incarnation", &self.get_numbered().map(|(_, n)| n))
            .finish()
    }
}

impl<A: Actor> ChildRef<A> {
    /// An empty reference, filled when the child starts.
    pub fn new() -> Self {
        ChildRef {
            slot: Arc::new(watch::Sender::new(Slot {
                current: None,
                started: 0,
                last_exit: None,
            })),
        }
    }

    /// The address of the current incarnation, if the child is running.
    pub fn get(&self) -> Option<Addr<A>> {
        self.get_numbered().map(|(addr, _)| addr)
    }

    /// The address of the current incarnation and its number, if running.
    pub fn get_numbered(&self) -> Option<(Addr<A>, u64)> {
        self.running(|i| (i.addr.clone(), i.number))
    }

    /// The mailbox sender of the current incarnation and its number, if
    /// running: for a caller that keeps it for the incarnation's life and
    /// sends with [`AddressSender::send`], which hands back the reply's
    /// receiver instead of a request future to box.
    pub fn sender_numbered(&self) -> Option<(AddressSender<A>, u64)> {
        self.running(|i| (i.sender.clone(), i.number))
    }

    /// Calls `f` with the address of the current incarnation and its
    /// number, if one runs, without cloning the address (a clone allocates):
    /// for a message per call on a hot path. `f` must not wait, nor start,
    /// stop or look up this child.
    pub fn with<R>(&self, f: impl FnOnce(&Addr<A>, u64) -> R) -> Option<R> {
        self.running(|i| f(&i.addr, i.number))
    }

    /// `f` of the current incarnation, if it runs.
    fn running<R>(&self, f: impl FnOnce(&Incarnation<A>) -> R) -> Option<R> {
        let slot = self.slot.borrow();
        slot.current.as_ref().filter(|i| i.addr.connected()).map(f)
    }

    /// Waits until an incarnation numbered above `after` runs (pass 0 for
    /// any), or until `timeout` passes.
    pub async fn ready_after(&self, after: u64, timeout: Duration) -> Option<(Addr<A>, u64)> {
        let mut rx = self.slot.subscribe();
        let wait = async {
            loop {
                if let Some(found) = self.get_numbered().filter(|(_, n)| *n > after) {
                    return Some(found);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Waits up to `timeout` for a running incarnation.
    pub async fn ready(&self, timeout: Duration) -> Option<Addr<A>> {
        self.ready_after(0, timeout).await.map(|(addr, _)| addr)
    }

    /// Stops incarnation `number` (if it is still the current one) and reports
    /// it to its supervisor as failed with `reason`, so that the supervisor
    /// applies its restart policy. Returns whether the incarnation was found.
    ///
    /// This is how a caller that saw a child misbehave (for example drop a
    /// reply) gets it re-created from its factory.
    pub fn fail(&self, number: u64, reason: impl Into<String>) -> bool {
        let current = self.slot.borrow().current.clone();
        match current {
            Some(i) if i.number == number => i.stop.send(StopRequest::Fail(reason.into())),
            _ => false,
        }
    }

    /// How the most recent incarnation that ended ended, with its number.
    pub fn last_exit(&self) -> Option<(u64, Exit)> {
        self.slot.borrow().last_exit.clone()
    }

    /// Registers a new incarnation and returns its number.
    fn publish(&self, make: impl FnOnce(u64) -> Incarnation<A>) -> u64 {
        let mut number = 0;
        self.slot.send_modify(|slot| {
            slot.started += 1;
            number = slot.started;
            slot.current = Some(make(number));
        });
        number
    }

    fn exited(&self, number: u64, exit: Exit) {
        self.slot.send_modify(|slot| {
            if slot.current.as_ref().is_some_and(|i| i.number == number) {
                slot.current = None;
            }
            // An aborted incarnation may be dropped after a newer one ended.
            if slot.last_exit.as_ref().is_none_or(|(n, _)| *n <= number) {
                slot.last_exit = Some((number, exit));
            }
        });
    }
}

/// Records an incarnation as [`Exit::Killed`] in its [`ChildRef`] if its task
/// is dropped before the child's future finished (the task was aborted after
/// the shutdown deadline, or its supervisor went away).
struct KilledUnlessFinished<A: Actor> {
    child_ref: Option<ChildRef<A>>,
    number: u64,
}

impl<A: Actor> KilledUnlessFinished<A> {
    fn finished(mut self, exit: Exit) {
        if let Some(child_ref) = self.child_ref.take() {
            child_ref.exited(self.number, exit);
        }
    }
}

impl<A: Actor> Drop for KilledUnlessFinished<A> {
    fn drop(&mut self) {
        if let Some(child_ref) = self.child_ref.take() {
            child_ref.exited(self.number, Exit::Killed);
        }
    }
}

/// A started child: its task (which yields its [`Exit`]), how to ask it to
/// stop, how to make it fail, and its address when it is itself a supervisor.
///
/// Dropping it aborts the child's task: a child never outlives the
/// supervisor that owns it (a supervisor that is itself aborted takes its
/// whole subtree down with it). A finished task is unaffected.
pub(crate) struct Running {
    pub(crate) task: JoinHandle<Exit>,
    pub(crate) request_stop: Box<dyn Fn()>,
    pub(crate) fail: Box<dyn Fn(String)>,
    pub(crate) nested: Option<Addr<crate::Supervisor>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A child's mailbox capacity unless [`ChildSpec::mailbox_capacity`] says
/// otherwise (actix's default).
const DEFAULT_MAILBOX: usize = 16;

/// The largest mailbox capacity [`ChildSpec::mailbox_capacity`] accepts.
const MAX_MAILBOX: usize = 1 << 24;

type Starter = Box<dyn FnMut(Box<dyn FnOnce(Exit)>, Option<usize>) -> Running>;

/// How to start, restart and stop one child of a [`Supervisor`](crate::Supervisor).
///
/// The factory is called for the first start and for every restart, so a
/// child never keeps state from a failed incarnation.
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) significant: bool,
    /// Stopped together with the neighbouring children that have it too.
    pub(crate) stops_with_siblings: bool,
    pub(crate) mailbox_capacity: Option<usize>,
    pub(crate) starter: Starter,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("significant", &self.significant)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent child built by `factory`, stopped with `ctx.stop()` (its
    /// `stopping` and `stopped` hooks run), with a 5 s shutdown deadline.
    /// Works for any actor.
    pub fn new<A, F>(id: impl Into<Arc<str>>, factory: F) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut() -> A + 'static,
    {
        Self::build(id, &ChildRef::new(), factory, stop_by_context::<A>)
    }

    /// Like [`ChildSpec::new`], keeping `child_ref` pointed at the current incarnation.
    pub fn new_with_ref<A, F>(id: impl Into<Arc<str>>, child_ref: &ChildRef<A>, factory: F) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut() -> A + 'static,
    {
        Self::build(id, child_ref, factory, stop_by_context::<A>)
    }

    /// A permanent child that is asked to stop with the [`Shutdown`] message,
    /// so it can drain in-flight work before it stops itself.
    pub fn graceful<A, F>(id: impl Into<Arc<str>>, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: FnMut() -> A + 'static,
    {
        Self::build(id, &ChildRef::new(), factory, stop_by_message::<A>)
    }

    /// Like [`ChildSpec::graceful`], keeping `child_ref` pointed at the current incarnation.
    pub fn graceful_with_ref<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: FnMut() -> A + 'static,
    {
        Self::build(id, child_ref, factory, stop_by_message::<A>)
    }

    /// Like [`ChildSpec::new_with_ref`], with a factory that is handed each
    /// incarnation's context and number before the actor starts (as actix's
    /// `Actor::create` hands its closure the context): to spawn futures into
    /// the context, or to take the incarnation's address, before the first
    /// message is handled.
    ///
    /// ```
    /// # use actix::prelude::*;
    /// # use kafkactor_actors::{ChildRef, ChildSpec};
    /// struct Worker { incarnation: u64 }
    /// impl Actor for Worker { type Context = Context<Self>; }
    /// let worker = ChildRef::new();
    /// let spec = ChildSpec::create_with_ref("worker", &worker, |ctx: &mut Context<Worker>, incarnation| {
    ///     ctx.run_later(std::time::Duration::from_secs(1), |_, _| println!("a second in"));
    ///     Worker { incarnation }
    /// });
    /// ```
    pub fn create_with_ref<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut(&mut Context<A>, u64) -> A + 'static,
    {
        Self::build_in_context(id, child_ref, factory, stop_by_context::<A>)
    }

    fn build<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        mut factory: F,
        stopper: Stopper<A>,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut() -> A + 'static,
    {
        Self::build_in_context(
            id,
            child_ref,
            move |_: &mut Context<A>, _| factory(),
            stopper,
        )
    }

    fn build_in_context<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        mut factory: F,
        stopper: Stopper<A>,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut(&mut Context<A>, u64) -> A + 'static,
    {
        let child_ref = child_ref.clone();
        let starter = move |on_exit: Box<dyn FnOnce(Exit)>, capacity: Option<usize>| {
            let new = NewIncarnation::register(&child_ref, capacity);
            let mut ctx = Context::<A>::with_receiver(new.mailbox);
            listen_for_stop(&mut ctx, new.listener);
            let actor = factory(&mut ctx, new.record.number);
            let fut = ctx.into_future(actor);
            let task = actix_rt::spawn(report(run_catching(fut), new.record, on_exit));
            running(new.addr, new.stop, stopper, task)
        };
        Self::with_starter(id, Box::new(starter))
    }

    /// Like [`ChildSpec::graceful`], the child running on a thread of its
    /// own (an actix `Arbiter` started with the first incarnation, kept for
    /// every restart and stopped when the spec is dropped): if the child is
    /// a supervisor, its whole subtree runs there. For a subtree whose
    /// timing must not depend on how busy its supervisor's thread is. The
    /// factory is called on that thread; a panic in it is the
    /// incarnation's failure. Outside an actix `System` (which an `Arbiter`
    /// needs) the child runs on its supervisor's thread.
    ///
    /// ```
    /// # use actix::prelude::*;
    /// # use kafkactor_actors::{ChildSpec, Supervisor};
    /// let timers = ChildSpec::graceful_on_own_thread("timers", || {
    ///     Supervisor::new("timers") // and its children
    /// });
    /// ```
    pub fn graceful_on_own_thread<A, F>(id: impl Into<Arc<str>>, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: FnMut() -> A + Send + 'static,
    {
        Self::build_on_own_thread(id, &ChildRef::new(), factory, stop_by_message::<A>)
    }

    fn build_on_own_thread<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        factory: F,
        stopper: Stopper<A>,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut() -> A + Send + 'static,
    {
        let child_ref = child_ref.clone();
        let factory = Arc::new(Mutex::new(factory));
        let mut thread = OwnThread::default();
        let starter = move |on_exit: Box<dyn FnOnce(Exit)>, capacity: Option<usize>| {
            let NewIncarnation {
                mailbox,
                addr,
                stop,
                listener,
                record,
            } = NewIncarnation::register(&child_ref, capacity);
            let (exit_tx, exit_rx) = oneshot::channel();
            let (abort, registration) = AbortHandle::new_pair();
            let factory = factory.clone();
            // Runs on the child's thread: everything it moves there is `Send`.
            thread.run(move || {
                let child = async move {
                    let mut ctx = Context::<A>::with_receiver(mailbox);
                    listen_for_stop(&mut ctx, listener);
                    let actor = (factory.lock().unwrap_or_else(|e| e.into_inner()))();
                    ctx.into_future(actor).await
                };
                actix_rt::spawn(async move {
                    let exit = Abortable::new(run_catching(child), registration)
                        .await
                        .unwrap_or(Exit::Killed);
                    let _ = exit_tx.send(exit);
                });
            });
            let task = actix_rt::spawn(async move {
                // Aborting this task aborts the child's.
                let _child = AbortOnDrop(abort);
                // No exit: the child's thread went away with the child.
                let exit = exit_rx.map(|exit| exit.unwrap_or(Exit::Killed));
                report(exit, record, on_exit).await
            });
            running(addr, stop, stopper, task)
        };
        Self::with_starter(id, Box::new(starter))
    }

    fn with_starter(id: impl Into<Arc<str>>, starter: Starter) -> Self {
        ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            significant: false,
            stops_with_siblings: false,
            mailbox_capacity: None,
            starter,
        }
    }

    /// The restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long the child may take to drain after being asked to stop before
    /// it is aborted (default 5 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown = deadline;
        self
    }

    /// The child's mailbox capacity (actix's default is 16), set before its
    /// address is handed out. Past it, `Addr::send` waits for room, and
    /// senders that wait are not served in the order they sent: an actor
    /// whose message order matters to its callers wants a large capacity.
    /// `do_send` ignores the capacity. Clamped to `1..=2^24`.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = Some(capacity.clamp(1, MAX_MAILBOX));
        self
    }

    /// Makes the child *significant*: when it fails, its supervisor does not
    /// restart it but stops every child and escalates with the child's
    /// reason (OTP's significant children with `auto_shutdown`). For a
    /// subtree whose crash loop must bring the application down.
    pub fn significant(mut self) -> Self {
        self.significant = true;
        self
    }

    /// Stops this child together with its neighbours that are marked so
    /// too, instead of one after the other: on shutdown every one of them is
    /// asked to stop at once and they drain side by side, each within its
    /// own deadline, before the children declared before them are stopped.
    /// For independent siblings (one subtree per subscription) whose drains
    /// need not wait for each other.
    pub fn stops_with_siblings(mut self) -> Self {
        self.stops_with_siblings = true;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

type Stopper<A> = fn(Addr<A>, StopSender) -> Box<dyn Fn()>;

/// Asks a child to stop through its stop listener (`ctx.stop()`).
fn stop_by_context<A: Actor<Context = Context<A>>>(
    _addr: Addr<A>,
    stop: StopSender,
) -> Box<dyn Fn()> {
    Box::new(move || {
        stop.send(StopRequest::Stop);
    })
}

/// Asks a child to stop by sending it [`Shutdown`].
fn stop_by_message<A: Actor<Context = Context<A>> + Handler<Shutdown>>(
    addr: Addr<A>,
    _stop: StopSender,
) -> Box<dyn Fn()> {
    Box::new(move || addr.do_send(Shutdown))
}

/// A new incarnation of a child, registered in its [`ChildRef`] before
/// its actor exists: its mailbox (with the capacity set before any sender
/// sees the address), address, stop line and exit record.
struct NewIncarnation<A: Actor> {
    mailbox: AddressReceiver<A>,
    addr: Addr<A>,
    stop: StopSender,
    listener: StopListener,
    record: KilledUnlessFinished<A>,
}

impl<A: Actor<Context = Context<A>>> NewIncarnation<A> {
    fn register(child_ref: &ChildRef<A>, capacity: Option<usize>) -> Self {
        let (sender, mut mailbox) = channel(DEFAULT_MAILBOX);
        if let Some(capacity) = capacity {
            // Before the address is handed out, so no sender ever sees the default.
            mailbox.set_capacity(capacity);
        }
        let addr = Addr::new(sender.clone());
        let (stop, listener) = stop_line();
        let number = child_ref.publish(|number| Incarnation {
            addr: addr.clone(),
            sender,
            number,
            stop: stop.clone(),
        });
        NewIncarnation {
            mailbox,
            addr,
            stop,
            listener,
            record: KilledUnlessFinished {
                child_ref: Some(child_ref.clone()),
                number,
            },
        }
    }
}

/// Waits for an incarnation's exit, records it in its `ChildRef` and tells
/// its supervisor.
async fn report<A: Actor>(
    exit: impl Future<Output = Exit>,
    record: KilledUnlessFinished<A>,
    on_exit: Box<dyn FnOnce(Exit)>,
) -> Exit {
    let exit = exit.await;
    record.finished(exit.clone());
    on_exit(exit.clone());
    exit
}

/// Spawns the stop listener inside a child's own context, so it can stop
/// the actor from outside without the actor's cooperation.
fn listen_for_stop<A: Actor<Context = Context<A>>>(ctx: &mut Context<A>, stop: StopListener) {
    ctx.spawn(wrap_future(stop).map(
        move |request, _act: &mut A, ctx: &mut Context<A>| match request {
            StopRequest::Fail(reason) => fail(ctx, reason),
            StopRequest::Stop => ctx.stop(),
        },
    ));
}

/// A started incarnation as its supervisor holds it.
fn running<A: Actor<Context = Context<A>>>(
    addr: Addr<A>,
    stop: StopSender,
    stopper: Stopper<A>,
    task: JoinHandle<Exit>,
) -> Running {
    let nested = (&addr as &dyn Any)
        .downcast_ref::<Addr<crate::Supervisor>>()
        .cloned();
    let fail_tx = stop.clone();
    let fail: Box<dyn Fn(String)> = Box::new(move |reason| {
        fail_tx.send(StopRequest::Fail(reason));
    });
    Running {
        task,
        request_stop: stopper(addr, stop),
        fail,
        nested,
    }
}

/// Aborts a child running on another thread when dropped (a finished
/// child is unaffected).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The thread of a child started with [`ChildSpec::graceful_on_own_thread`]:
/// started with its first incarnation, started again if it went away,
/// stopped when the spec is dropped.
#[derive(Default)]
struct OwnThread {
    arbiter: Option<Arbiter>,
}

impl OwnThread {
    /// Runs `start` on the thread, or on this one outside an actix `System`.
    fn run(&mut self, start: impl FnOnce() + Send + 'static) {
        if self.arbiter.is_none() && System::try_current().is_some() {
            match Arbiter::try_new() {
                Ok(arbiter) => self.arbiter = Some(arbiter),
                Err(error) => {
                    tracing::warn!(%error, "no thread of its own for a child: it runs on its supervisor's")
                }
            }
        }
        match &self.arbiter {
            Some(arbiter) => {
                if !arbiter.spawn_fn(start) {
                    // The thread is gone (its System is stopping): `start`
                    // is dropped, which the incarnation reports as killed;
                    // a next start makes a new thread.
                    self.arbiter = None;
                }
            }
            None => start(),
        }
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        if let Some(arbiter) = self.arbiter.take() {
            arbiter.stop();
        }
    }
}
