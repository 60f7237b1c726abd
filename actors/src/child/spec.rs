//! [`ChildSpec`], the builder of a child: its factory, restart policy,
//! shutdown deadline and mailbox.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};

use super::running::{stop_by_context, stop_by_message, Running};
use super::{ChildRef, Restart, Shutdown};
use crate::Exit;

/// The largest mailbox capacity [`ChildSpec::mailbox_capacity`] accepts.
const MAX_MAILBOX: usize = 1 << 24;

/// Starts one incarnation, given what to call with its exit and its
/// mailbox capacity.
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

    pub(super) fn with_starter(id: impl Into<Arc<str>>, starter: Starter) -> Self {
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
