//! Child specifications: how a supervisor starts, restarts and stops a child.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use tokio::task::JoinHandle;

use crate::exit::run_catching;
use crate::Exit;

/// Asks a supervised child to finish its in-flight work and stop.
///
/// Every child handles it; the supervisor waits for the child to stop until the
/// child's shutdown deadline, then aborts it. A handler that has nothing to
/// drain simply calls `ctx.stop()`.
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

/// The current address of a supervised child, kept up to date across restarts.
///
/// A restart re-creates the child from its factory with a new mailbox; holders
/// of a `ChildRef` resolve the current one with [`ChildRef::get`].
pub struct ChildRef<A: Actor> {
    addr: Arc<Mutex<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        ChildRef {
            addr: self.addr.clone(),
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
            .field("running", &self.get().is_some())
            .finish()
    }
}

impl<A: Actor> ChildRef<A> {
    /// An empty reference, filled when the child starts.
    pub fn new() -> Self {
        ChildRef {
            addr: Arc::new(Mutex::new(None)),
        }
    }

    /// The address of the current incarnation, if the child is running.
    pub fn get(&self) -> Option<Addr<A>> {
        self.addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|a| a.connected())
            .cloned()
    }

    fn set(&self, addr: Option<Addr<A>>) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

/// A started child: its task (which yields its [`Exit`]) and how to ask it to stop.
pub(crate) struct Running {
    pub(crate) task: JoinHandle<Exit>,
    pub(crate) request_stop: Box<dyn Fn()>,
}

type Starter = Box<dyn FnMut(Box<dyn FnOnce(Exit)>) -> Running>;

/// How to start, restart and stop one child of a [`Supervisor`](crate::Supervisor).
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) starter: Starter,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent child built by `factory`, with a 5 s shutdown deadline.
    pub fn new<A, F>(id: impl Into<Arc<str>>, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: FnMut() -> A + 'static,
    {
        Self::with_ref(id, &ChildRef::new(), factory)
    }

    /// Like [`ChildSpec::new`], keeping `child_ref` pointed at the current incarnation.
    pub fn with_ref<A, F>(id: impl Into<Arc<str>>, child_ref: &ChildRef<A>, mut factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: FnMut() -> A + 'static,
    {
        let child_ref = child_ref.clone();
        let starter = move |on_exit: Box<dyn FnOnce(Exit)>| {
            let ctx = Context::<A>::new();
            let addr = ctx.address();
            child_ref.set(Some(addr.clone()));
            let fut = ctx.into_future(factory());
            let cleared = child_ref.clone();
            let task = actix_rt::spawn(async move {
                let exit = run_catching(fut).await;
                cleared.set(None);
                on_exit(exit.clone());
                exit
            });
            Running {
                task,
                request_stop: Box::new(move || addr.do_send(Shutdown)),
            }
        };
        ChildSpec {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            starter: Box::new(starter),
        }
    }

    /// The restart policy.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// How long the child may take to drain after [`Shutdown`] before it is aborted.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown = deadline;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}
