//! Starting a child on its supervisor's thread: the starter behind
//! [`ChildSpec::new`], [`ChildSpec::graceful`], their `_with_ref` forms and
//! [`ChildSpec::create_with_ref`].

use std::sync::Arc;

use actix::{Actor, Context};

use super::incarnation::{listen_for_stop, report, NewIncarnation};
use super::running::{running, Stopper};
use super::{ChildRef, ChildSpec};
use crate::exit::run_catching;
use crate::Exit;

impl ChildSpec {
    pub(super) fn build<A, F>(
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

    pub(super) fn build_in_context<A, F>(
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
}
