//! The `Supervisor` actor: starts children in order, restarts them by strategy
//! within a restart intensity, escalates past it, and stops them in reverse order.
//!
//! Messages: [`Shutdown`] (stop every child in reverse order, each within its
//! deadline, then stop), [`FailChild`] (make a child, or a child of a nested
//! supervisor, fail with a reason), and an internal exit notice from each child.
//! It owns its children's tasks. When a supervisor is itself restarted, its
//! children are started afresh from their factories. No child outlives its
//! supervisor: one whose context is stopped some other way first stops its
//! children in reverse order, and one that is dropped (aborted past its own
//! deadline) aborts them.
//!
//! Restarting a group (one-for-all, rest-for-one) stops the rest of the group
//! before the mailbox is read again; the backoff before the start does not
//! hold the mailbox.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;
use tokio::task::JoinHandle;

use crate::child::Running;
use crate::exit::{fail, panic_message, run_catching};
use crate::{Backoff, ChildSpec, Events, Exit, Restart, Shutdown, SupervisionEvent};

/// Which children restart when one of them exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that exited.
    #[default]
    OneForOne,
    /// Every child: the others are stopped in reverse order, then all start again.
    OneForAll,
    /// The child that exited and every child declared after it.
    RestForOne,
}

struct Child {
    spec: ChildSpec,
    running: Option<Running>,
    generation: u64,
    restarts: u64,
    failures_in_row: u32,
    started_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Stopping,
}

/// A supervisor of actix actors; see the [crate docs](crate).
pub struct Supervisor {
    name: Arc<str>,
    strategy: Strategy,
    max_restarts: usize,
    window: Duration,
    backoff: Backoff,
    events: Events,
    children: Vec<Child>,
    restart_times: VecDeque<Instant>,
    state: State,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("window", &self.window)
            .field("children", &self.children.len())
            .finish()
    }
}

impl Supervisor {
    /// A one-for-one supervisor allowing 5 restarts within 10 s.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Supervisor {
            name: name.into(),
            strategy: Strategy::OneForOne,
            max_restarts: 5,
            window: Duration::from_secs(10),
            backoff: Backoff::default(),
            events: Events::new(),
            children: Vec::new(),
            restart_times: VecDeque::new(),
            state: State::Running,
        }
    }

    /// The restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max` restarts within `window`; one more and the supervisor
    /// stops its children and fails, escalating to its parent.
    pub fn restart_limit(mut self, max: usize, window: Duration) -> Self {
        self.max_restarts = max;
        self.window = window;
        self
    }

    /// The delay between a failure and the restart.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Publish lifecycle events to `events` (share one across a tree).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Adds a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(Child {
            spec,
            running: None,
            generation: 0,
            restarts: 0,
            failures_in_row: 0,
            started_at: Instant::now(),
        });
        self
    }

    /// Starts this supervisor as a root, outside any other supervisor.
    pub fn start_root(self) -> SupervisorHandle {
        let ctx = Context::<Supervisor>::new();
        let addr = ctx.address();
        let fut = ctx.into_future(self);
        let task = actix_rt::spawn(run_catching(fut));
        SupervisorHandle {
            addr,
            task,
            exit: None,
        }
    }

    fn event_child(&self, index: usize) -> (Arc<str>, Arc<str>) {
        (self.name.clone(), self.children[index].spec.id.clone())
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        let on_exit = Box::new(move |exit: Exit| {
            me.do_send(ChildExited {
                index,
                generation,
                exit,
            })
        });
        child.running = Some((child.spec.starter)(on_exit, child.spec.mailbox_capacity));
        child.started_at = Instant::now();
    }

    /// Takes the running children among `indices` (in the given order) out of
    /// the tree, so that their exits are not taken for failures.
    fn detach(&mut self, indices: impl Iterator<Item = usize>) -> Vec<(usize, Running)> {
        let mut out = Vec::new();
        for i in indices {
            let child = &mut self.children[i];
            child.generation += 1;
            if let Some(running) = child.running.take() {
                out.push((i, running));
            }
        }
        out
    }

    /// Stops detached children one after the other, each within its
    /// deadline; a run of neighbours marked
    /// [`stops_with_siblings`](ChildSpec::stops_with_siblings) is stopped
    /// together (all asked at once, drained side by side).
    fn stop_in_order(
        &self,
        detached: Vec<(usize, Running)>,
    ) -> impl ActorFuture<Self, Output = ()> + 'static {
        let mut groups: Vec<Vec<_>> = Vec::new();
        let mut together = false;
        for (i, running) in detached {
            let spec = &self.children[i].spec;
            let (sup, id) = self.event_child(i);
            let step = (sup, id, spec.shutdown, running);
            match groups.last_mut() {
                Some(group) if together && spec.stops_with_siblings => group.push(step),
                _ => groups.push(vec![step]),
            }
            together = spec.stops_with_siblings;
        }
        let events = self.events.clone();
        wrap_future(async move {
            for group in groups {
                let stops = group
                    .into_iter()
                    .map(|(supervisor, child, deadline, running)| {
                        let events = events.clone();
                        async move {
                            let exit = stop_child(running, deadline).await;
                            events.publish(SupervisionEvent::Stopped {
                                supervisor,
                                child,
                                exit,
                            });
                        }
                    });
                futures_util::future::join_all(stops).await;
            }
        })
    }

    fn escalate(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.state = State::Stopping;
        self.events.publish(SupervisionEvent::Escalated {
            supervisor: self.name.clone(),
            reason: reason.clone(),
        });
        let n = self.children.len();
        let detached = self.detach((0..n).rev());
        ctx.wait(
            self.stop_in_order(detached)
                .map(move |(), _act, ctx: &mut Context<Self>| fail(ctx, reason)),
        );
    }
}

/// Asks a child to stop, waits up to `deadline`, then aborts it.
///
/// Outside a runtime (a supervisor dropped while its runtime shuts down, as
/// when an application is dropped without being shut down) nothing can be
/// waited for: the child is aborted at once.
async fn stop_child(mut running: Running, deadline: Duration) -> Exit {
    (running.request_stop)();
    if tokio::runtime::Handle::try_current().is_err() {
        // Dropping `running` aborts the task.
        return Exit::Killed;
    }
    match tokio::time::timeout(deadline, &mut running.task).await {
        Ok(Ok(exit)) => exit,
        Ok(Err(join)) if join.is_panic() => Exit::Panicked(panic_message(&*join.into_panic())),
        Ok(Err(_)) => Exit::Killed,
        // Dropping `running` aborts the task.
        Err(_) => Exit::Killed,
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for i in 0..self.children.len() {
            self.start_child(i, ctx);
            let (supervisor, child) = self.event_child(i);
            self.events
                .publish(SupervisionEvent::Started { supervisor, child });
        }
    }

    /// A supervisor stopped other than by [`Shutdown`] or an escalation (its
    /// context was stopped: [`fail`], [`FailChild`] naming it, a
    /// [`ChildSpec::new`] parent stopping it) first stops its children in
    /// reverse order, each within its deadline, so none outlives it.
    fn stopping(&mut self, ctx: &mut Context<Self>) -> actix::Running {
        if self.state == State::Stopping {
            return actix::Running::Stop;
        }
        self.state = State::Stopping;
        let n = self.children.len();
        let detached = self.detach((0..n).rev());
        if detached.is_empty() {
            return actix::Running::Stop;
        }
        ctx.wait(
            self.stop_in_order(detached)
                .map(|(), _act, ctx: &mut Context<Self>| ctx.stop()),
        );
        actix::Running::Continue
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct ChildExited {
    index: usize,
    generation: u64,
    exit: Exit,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let ChildExited {
            index,
            generation,
            exit,
        } = msg;
        if self.state != State::Running || self.children[index].generation != generation {
            return;
        }
        self.children[index].running = None;
        let (supervisor, child) = self.event_child(index);
        if exit.is_failure() {
            self.events.publish(SupervisionEvent::Failed {
                supervisor: supervisor.clone(),
                child: child.clone(),
                exit: exit.clone(),
            });
        }
        if exit.is_failure() && self.children[index].spec.significant {
            let reason = format!("significant child `{child}` {exit}");
            self.escalate(reason, ctx);
            return;
        }
        if !self.children[index].spec.restart.restarts_after(&exit) {
            self.events.publish(SupervisionEvent::Stopped {
                supervisor,
                child,
                exit,
            });
            return;
        }

        let now = Instant::now();
        self.restart_times.push_back(now);
        while let Some(&t) = self.restart_times.front() {
            if now.duration_since(t) > self.window {
                self.restart_times.pop_front();
            } else {
                break;
            }
        }
        if self.restart_times.len() > self.max_restarts {
            let reason = format!(
                "child `{child}` {exit}; more than {} restarts within {:?}",
                self.max_restarts, self.window
            );
            self.escalate(reason, ctx);
            return;
        }

        let c = &mut self.children[index];
        if c.started_at.elapsed() >= self.backoff.reset_after {
            c.failures_in_row = 0;
        }
        let delay = self.backoff.delay(c.failures_in_row);
        c.failures_in_row = c.failures_in_row.saturating_add(1);

        let n = self.children.len();
        let group: Vec<usize> = match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..n).collect(),
            Strategy::RestForOne => (index..n).collect(),
        };
        let detached = self.detach(group.iter().rev().copied().filter(|&i| i != index));
        // A temporary sibling stopped with its group is not restarted.
        let group: Vec<usize> = group
            .into_iter()
            .filter(|&i| i == index || self.children[i].spec.restart != Restart::Temporary)
            .collect();
        for &i in &group {
            let (supervisor, child) = self.event_child(i);
            self.events.publish(SupervisionEvent::Restarting {
                supervisor,
                child,
                delay,
            });
        }
        // Bump the generation of the failed child too, so a stale notice from
        // its previous incarnation can never be taken for the new one.
        self.children[index].generation += 1;
        // Remember each generation: a child whose pending restart is taken
        // over by a later group restart (which bumps it) is not started twice.
        let group: Vec<(usize, u64)> = group
            .into_iter()
            .map(|i| (i, self.children[i].generation))
            .collect();
        let restart = wrap_future::<_, Self>(tokio::time::sleep(delay)).map(
            move |(), act: &mut Self, ctx: &mut Context<Self>| {
                if act.state != State::Running {
                    return;
                }
                for &(i, generation) in &group {
                    if act.children[i].generation != generation {
                        continue;
                    }
                    act.start_child(i, ctx);
                    let c = &mut act.children[i];
                    c.restarts += 1;
                    let restarts = c.restarts;
                    let (supervisor, child) = act.event_child(i);
                    act.events.publish(SupervisionEvent::Restarted {
                        supervisor,
                        child,
                        restarts,
                    });
                }
            },
        );
        if detached.is_empty() {
            ctx.spawn(restart);
        } else {
            // As in OTP, the rest of the group is stopped before anything else
            // is handled: a `Shutdown` or another exit waits until the group is
            // down (and cannot cut a draining sibling short). The backoff that
            // follows does not hold the mailbox.
            ctx.wait(
                self.stop_in_order(detached)
                    .map(move |(), _act, ctx: &mut Context<Self>| {
                        ctx.spawn(restart);
                    }),
            );
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    /// Answered once every child has stopped. The mailbox waits meanwhile, so
    /// nothing (a second `Shutdown`, a [`FailChild`]) cuts the ordered stop short.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.state = State::Stopping;
        let n = self.children.len();
        let detached = self.detach((0..n).rev());
        AtomicResponse::new(Box::pin(
            self.stop_in_order(detached)
                .map(|(), _act, ctx: &mut Context<Self>| ctx.stop()),
        ))
    }
}

/// Makes a running child fail with `reason`, as if it had stopped itself
/// with [`fail`](crate::fail): its supervisor then applies the child's restart
/// policy. For fault-injection tests and operators ("kill that actor").
///
/// `path` names the child by id; children of nested supervisors are reached
/// with `/`, e.g. `"subscription/dispatcher"`. Answers a [`FailChildError`]
/// when no running child has that path.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FailChildError>")]
pub struct FailChild {
    /// Child ids from this supervisor down, separated by `/`.
    pub path: String,
    /// The failure reason reported for the child.
    pub reason: String,
}

/// Why [`FailChild`] reached no child; each variant holds a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailChildError {
    /// No child has that id (the description lists the children there are).
    NoSuchChild(String),
    /// The child is not running at the moment (it is being restarted).
    NotRunning(String),
    /// The path goes on below a child that is not a supervisor.
    NotASupervisor(String),
    /// A supervisor on the way could not be reached.
    Unavailable(String),
}

impl fmt::Display for FailChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailChildError::NoSuchChild(d)
            | FailChildError::NotRunning(d)
            | FailChildError::NotASupervisor(d)
            | FailChildError::Unavailable(d) => f.write_str(d),
        }
    }
}

impl std::error::Error for FailChildError {}

impl Handler<FailChild> for Supervisor {
    type Result = ResponseFuture<Result<(), FailChildError>>;

    fn handle(&mut self, msg: FailChild, _: &mut Context<Self>) -> Self::Result {
        let (head, rest) = match msg.path.split_once('/') {
            Some((head, rest)) => (head, Some(rest)),
            None => (msg.path.as_str(), None),
        };
        let Some(child) = self.children.iter().find(|c| &*c.spec.id == head) else {
            let known: Vec<&str> = self.children.iter().map(|c| &*c.spec.id).collect();
            let error = FailChildError::NoSuchChild(format!(
                "supervisor `{}` has no child `{head}` (children: {known:?})",
                self.name
            ));
            return Box::pin(async move { Err(error) });
        };
        let Some(running) = &child.running else {
            let error = FailChildError::NotRunning(format!(
                "child `{head}` of `{}` is not running",
                self.name
            ));
            return Box::pin(async move { Err(error) });
        };
        match (rest, &running.nested) {
            (None, _) => {
                (running.fail)(msg.reason);
                Box::pin(async { Ok(()) })
            }
            (Some(rest), Some(nested)) => {
                let nested = nested.clone();
                let msg = FailChild {
                    path: rest.to_string(),
                    reason: msg.reason,
                };
                Box::pin(async move {
                    nested.send(msg).await.unwrap_or_else(|e| {
                        Err(FailChildError::Unavailable(format!(
                            "nested supervisor unavailable: {e}"
                        )))
                    })
                })
            }
            (Some(_), None) => {
                let error =
                    FailChildError::NotASupervisor(format!("child `{head}` is not a supervisor"));
                Box::pin(async move { Err(error) })
            }
        }
    }
}

/// A running root supervisor: its address and the task whose result is its [`Exit`].
#[derive(Debug)]
pub struct SupervisorHandle {
    addr: Addr<Supervisor>,
    task: JoinHandle<Exit>,
    /// The exit, once the task has been joined (a `JoinHandle` yields it once).
    exit: Option<Exit>,
}

impl SupervisorHandle {
    /// The supervisor's address.
    pub fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    /// Makes the child at `path` fail with `reason` (see [`FailChild`]).
    pub async fn fail_child(&self, path: &str, reason: &str) -> Result<(), FailChildError> {
        self.addr
            .send(FailChild {
                path: path.to_string(),
                reason: reason.to_string(),
            })
            .await
            .unwrap_or_else(|e| {
                Err(FailChildError::Unavailable(format!(
                    "supervisor unavailable: {e}"
                )))
            })
    }

    /// True once the supervisor has stopped (after shutdown or escalation).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the supervisor stops on its own; an escalation gives
    /// [`Exit::Failed`] with the reason. May be called again: it answers the
    /// same exit.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = join_exit(&mut self.task).await;
        self.exit = Some(exit.clone());
        exit
    }

    /// Stops every child in reverse order, each within its deadline, and
    /// returns how the supervisor ended (its earlier exit if it had already
    /// stopped on its own).
    pub async fn shutdown(mut self) -> Exit {
        if self.exit.is_none() {
            self.addr.do_send(Shutdown);
        }
        self.wait().await
    }
}

async fn join_exit(task: &mut JoinHandle<Exit>) -> Exit {
    match task.await {
        Ok(exit) => exit,
        Err(e) if e.is_panic() => Exit::Panicked(panic_message(&*e.into_panic())),
        Err(_) => Exit::Killed,
    }
}
