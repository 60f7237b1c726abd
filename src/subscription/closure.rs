//! Closures as handlers: `|d: Delivery<T>| async move { .. }` (or, for
//! batches, `|b: Batch<T>| async move { .. }`) wrapped in an actor so that
//! it is supervised, restarted and laned like any handler actor.
//!
//! The closure's future runs inside the actor's context, so a panic in it is
//! caught by the supervisor (the lane is re-created and the record retried as
//! a failed attempt) instead of being lost on a detached task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use actix::prelude::*;

use crate::delivery::{Batch, BatchOutcome, Delivery, Outcome};

/// A handler lane running a closure.
pub(crate) struct FnHandler<T, F> {
    f: Arc<F>,
    _message: PhantomData<fn(T)>,
}

impl<T, F> FnHandler<T, F> {
    pub(crate) fn new(f: Arc<F>) -> Self {
        FnHandler {
            f,
            _message: PhantomData,
        }
    }
}

impl<T, F> fmt::Debug for FnHandler<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler")
            .field("message", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: 'static, F: 'static> Actor for FnHandler<T, F> {
    type Context = Context<Self>;
}

impl<T, F, Fut, O> Handler<Delivery<T>> for FnHandler<T, F>
where
    T: 'static,
    F: Fn(Delivery<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<Outcome>,
{
    type Result = ResponseActFuture<Self, Outcome>;

    fn handle(&mut self, delivery: Delivery<T>, _: &mut Context<Self>) -> Self::Result {
        let fut = (self.f)(delivery);
        Box::pin(async move { fut.await.into() }.into_actor(self))
    }
}

impl<T, F, Fut, O> Handler<Batch<T>> for FnHandler<T, F>
where
    T: 'static,
    F: Fn(Batch<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<BatchOutcome>,
{
    type Result = ResponseActFuture<Self, BatchOutcome>;

    fn handle(&mut self, batch: Batch<T>, _: &mut Context<Self>) -> Self::Result {
        let fut = (self.f)(batch);
        Box::pin(async move { fut.await.into() }.into_actor(self))
    }
}
