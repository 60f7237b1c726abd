//! What every start of a child shares: registering a new incarnation in
//! its [`ChildRef`], listening for stop requests inside its context, and
//! recording how it ended.

use std::future::Future;

use actix::dev::channel::{channel, AddressReceiver};
use actix::fut::wrap_future;
use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context};
use futures_util::FutureExt;

use super::child_ref::{ChildRef, Incarnation};
use crate::exit::fail;
use crate::stop::{stop_line, StopListener, StopRequest, StopSender};
use crate::Exit;

/// A child's mailbox capacity unless [`ChildSpec::mailbox_capacity`] says
/// otherwise (actix's default).
///
/// [`ChildSpec::mailbox_capacity`]: crate::ChildSpec::mailbox_capacity
const DEFAULT_MAILBOX: usize = 16;

/// Records an incarnation as [`Exit::Killed`] in its [`ChildRef`] if its task
/// is dropped before the child's future finished (the task was aborted after
/// the shutdown deadline, or its supervisor went away).
pub(super) struct KilledUnlessFinished<A: Actor> {
    child_ref: Option<ChildRef<A>>,
    pub(super) number: u64,
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

/// A new incarnation of a child, registered in its [`ChildRef`] before
/// its actor exists: its mailbox (with the capacity set before any sender
/// sees the address), address, stop line and exit record.
pub(super) struct NewIncarnation<A: Actor> {
    pub(super) mailbox: AddressReceiver<A>,
    pub(super) addr: Addr<A>,
    pub(super) stop: StopSender,
    pub(super) listener: StopListener,
    pub(super) record: KilledUnlessFinished<A>,
}

impl<A: Actor<Context = Context<A>>> NewIncarnation<A> {
    pub(super) fn register(child_ref: &ChildRef<A>, capacity: Option<usize>) -> Self {
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
/// its supervisor. (A combinator, not an `async fn`, which would hold
/// `exit` twice: see [`run_catching`](crate::exit::run_catching).)
pub(super) fn report<A: Actor>(
    exit: impl Future<Output = Exit>,
    record: KilledUnlessFinished<A>,
    on_exit: Box<dyn FnOnce(Exit)>,
) -> impl Future<Output = Exit> {
    exit.map(move |exit| {
        record.finished(exit.clone());
        on_exit(exit.clone());
        exit
    })
}

/// Spawns the stop listener inside a child's own context, so it can stop
/// the actor from outside without the actor's cooperation.
pub(super) fn listen_for_stop<A: Actor<Context = Context<A>>>(
    ctx: &mut Context<A>,
    stop: StopListener,
) {
    ctx.spawn(wrap_future(stop).map(
        move |request, _act: &mut A, ctx: &mut Context<A>| match request {
            StopRequest::Fail(reason) => fail(ctx, reason),
            StopRequest::Stop => ctx.stop(),
        },
    ));
}
