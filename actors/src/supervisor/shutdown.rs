//! Stopping children in reverse order, each within its deadline: on
//! [`Shutdown`], on an escalation, and for the rest of a restarted group.

use std::time::Duration;

use actix::fut::wrap_future;
use actix::prelude::*;

use super::{State, Supervisor};
use crate::child::Running;
use crate::exit::{fail, panic_message};
use crate::{Exit, Shutdown, SupervisionEvent};

impl Supervisor {
    /// Takes the running children among `indices` (in the given order) out of
    /// the tree, so that their exits are not taken for failures.
    pub(super) fn detach(&mut self, indices: impl Iterator<Item = usize>) -> Vec<(usize, Running)> {
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
    /// [`stops_with_siblings`](crate::ChildSpec::stops_with_siblings) is stopped
    /// together (all asked at once, drained side by side).
    pub(super) fn stop_in_order(
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

    pub(super) fn escalate(&mut self, reason: String, ctx: &mut Context<Self>) {
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

impl Handler<Shutdown> for Supervisor {
    /// Answered once every child has stopped. The mailbox waits meanwhile, so
    /// nothing (a second `Shutdown`, a [`FailChild`]) cuts the ordered stop short.
    ///
    /// [`FailChild`]: crate::FailChild
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
