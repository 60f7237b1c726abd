//! The [`Supervisor`] as an actix actor: it starts its children when it
//! starts, and stops them before its context stops.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::restart::ChildExited;
use super::{State, Supervisor};
use crate::{Exit, SupervisionEvent};

impl Supervisor {
    pub(super) fn event_child(&self, index: usize) -> (Arc<str>, Arc<str>) {
        (self.name.clone(), self.children[index].spec.id.clone())
    }

    pub(super) fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
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
    ///
    /// [`Shutdown`]: crate::Shutdown
    /// [`fail`]: crate::fail
    /// [`FailChild`]: crate::FailChild
    /// [`ChildSpec::new`]: crate::ChildSpec::new
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
