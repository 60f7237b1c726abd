//! [`Running`], a started child as its supervisor holds it, and the ways a
//! supervisor asks a child to stop.

use std::any::Any;

use actix::{Actor, Addr, Context, Handler};
use tokio::task::JoinHandle;

use super::Shutdown;
use crate::stop::{StopRequest, StopSender};
use crate::Exit;

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

/// A started incarnation as its supervisor holds it.
pub(super) fn running<A: Actor<Context = Context<A>>>(
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

/// How a supervisor asks an incarnation to stop, given its address and stop line.
pub(super) type Stopper<A> = fn(Addr<A>, StopSender) -> Box<dyn Fn()>;

/// Asks a child to stop through its stop listener (`ctx.stop()`).
pub(super) fn stop_by_context<A: Actor<Context = Context<A>>>(
    _addr: Addr<A>,
    stop: StopSender,
) -> Box<dyn Fn()> {
    Box::new(move || {
        stop.send(StopRequest::Stop);
    })
}

/// Asks a child to stop by sending it [`Shutdown`].
pub(super) fn stop_by_message<A: Actor<Context = Context<A>> + Handler<Shutdown>>(
    addr: Addr<A>,
    _stop: StopSender,
) -> Box<dyn Fn()> {
    Box::new(move || addr.do_send(Shutdown))
}
