//! Closures as handlers: `|d: Delivery<T>| async move { .. }` (or, for
//! batches, `|b: Batch<T>| async move { .. }`) wrapped in an actor so that
//! it is supervised, restarted and laned like any handler actor.
//!
//! The closure's future runs inside the actor's context, so a panic in it is
//! caught by the supervisor (the lane is re-created and the record retried as
//! a failed attempt) instead of being lost on a detached task.
//!
//! A lane handles one record at a time, so the future of the record being
//! handled lives in one slot of the actor, pinned in place for the actor's
//! life: one allocation per lane rather than one per record. The answer
//! the lane awaits is a zero-sized future polling that slot (a box of
//! nothing allocates nothing).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use actix::prelude::*;

use crate::delivery::{Batch, BatchOutcome, Delivery, Outcome};

/// A handler lane running a closure whose futures are `Fut`.
pub(crate) struct FnHandler<T, F, Fut> {
    f: Arc<F>,
    /// The future of the record (or batch) being handled.
    slot: Pin<Box<Option<Fut>>>,
    _message: PhantomData<fn(T)>,
}

impl<T, F, Fut> FnHandler<T, F, Fut> {
    pub(crate) fn new(f: Arc<F>) -> Self {
        FnHandler {
            f,
            slot: Box::pin(None),
            _message: PhantomData,
        }
    }
}

impl<T, F, Fut> fmt::Debug for FnHandler<T, F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler")
            .field("message", &std::any::type_name::<T>())
            .field("handling", &self.slot.is_some())
            .finish()
    }
}

impl<T: 'static, F: 'static, Fut: 'static> Actor for FnHandler<T, F, Fut> {
    type Context = Context<Self>;
}

impl<T, F, Fut, O> Handler<Delivery<T>> for FnHandler<T, F, Fut>
where
    T: 'static,
    F: Fn(Delivery<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<Outcome>,
{
    type Result = ResponseActFuture<Self, Outcome>;

    fn handle(&mut self, delivery: Delivery<T>, _: &mut Context<Self>) -> Self::Result {
        self.slot.as_mut().set(Some((self.f)(delivery)));
        Box::pin(InSlot(PhantomData))
    }
}

impl<T, F, Fut, O> Handler<Batch<T>> for FnHandler<T, F, Fut>
where
    T: 'static,
    F: Fn(Batch<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<BatchOutcome>,
{
    type Result = ResponseActFuture<Self, BatchOutcome>;

    fn handle(&mut self, batch: Batch<T>, _: &mut Context<Self>) -> Self::Result {
        self.slot.as_mut().set(Some((self.f)(batch)));
        Box::pin(InSlot(PhantomData))
    }
}

/// The answer of the record in the actor's slot, once its future is done
/// (the slot is emptied then). Zero-sized.
struct InSlot<R>(PhantomData<fn() -> R>);

/// What an answer is when the slot is empty: never, as a lane polls each
/// answer until it is ready and calls the handler again only then; should
/// it be, the record is tried again rather than answered for.
trait Emptied {
    fn emptied() -> Self;
}

impl Emptied for Outcome {
    fn emptied() -> Self {
        Outcome::retry("the handler's future was gone before it answered")
    }
}

impl Emptied for BatchOutcome {
    fn emptied() -> Self {
        BatchOutcome::All(Outcome::emptied())
    }
}

impl<T, F, Fut, R> ActorFuture<FnHandler<T, F, Fut>> for InSlot<R>
where
    T: 'static,
    F: 'static,
    Fut: Future + 'static,
    Fut::Output: Into<R>,
    R: Emptied,
{
    type Output = R;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut FnHandler<T, F, Fut>,
        _: &mut Context<FnHandler<T, F, Fut>>,
        task: &mut task::Context<'_>,
    ) -> Poll<R> {
        let Some(future) = act.slot.as_mut().as_pin_mut() else {
            return Poll::Ready(R::emptied());
        };
        let answer = std::task::ready!(future.poll(task));
        act.slot.as_mut().set(None);
        Poll::Ready(answer.into())
    }
}
