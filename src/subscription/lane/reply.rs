//! A handler's answer to one record: at once, or a future polled in place
//! by its runner in the handler's context.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use actix::dev::MessageResponse;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::delivery::{Handled, Outcome};

/// The answer to a handler call.
pub(crate) enum Reply<A: Actor> {
    /// Answered at once.
    Now(Outcome),
    /// To be awaited in the handler's context.
    Later(Later<A>),
}

/// An answer to come, awaited in the handler's context.
pub(crate) enum Later<A: Actor> {
    /// A `ResponseFuture`, polled in place.
    Future(Pin<Box<dyn Future<Output = Outcome>>>),
    /// A `ResponseActFuture`, polled in place with the actor and its context.
    ActorFuture(Pin<Box<dyn ActorFuture<A, Output = Outcome>>>),
    /// Any other response, answering through a channel.
    Channel(oneshot::Receiver<Outcome>),
}

impl<A: Actor<Context = Context<A>>> Reply<A> {
    /// The reply a handler's `response` to `M` gives, without a channel for
    /// the responses the lane knows.
    #[inline]
    pub(crate) fn of<M, R>(response: R, ctx: &mut Context<A>) -> Reply<A>
    where
        M: Message<Result = Outcome> + 'static,
        R: MessageResponse<A, M> + 'static,
    {
        let mut slot = Some(response);
        let any: &mut dyn Any = &mut slot;
        if let Some(outcome) = any.downcast_mut::<Option<Outcome>>().and_then(Option::take) {
            return Reply::Now(outcome);
        }
        if let Some(MessageResult(outcome)) = any
            .downcast_mut::<Option<MessageResult<M>>>()
            .and_then(Option::take)
        {
            return Reply::Now(outcome);
        }
        if let Some(handled) = any.downcast_mut::<Option<Handled>>().and_then(Option::take) {
            return match handled.into_parts() {
                Ok(outcome) => Reply::Now(outcome),
                Err(future) => Reply::Later(Later::Future(future)),
            };
        }
        if let Some(future) = any
            .downcast_mut::<Option<ResponseFuture<Outcome>>>()
            .and_then(Option::take)
        {
            return Reply::Later(Later::Future(future));
        }
        if let Some(future) = any
            .downcast_mut::<Option<ResponseActFuture<A, Outcome>>>()
            .and_then(Option::take)
        {
            return Reply::Later(Later::ActorFuture(future));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(response) = slot {
            response.handle(ctx, Some(tx));
        }
        Reply::Later(Later::Channel(rx))
    }
}

impl<A: Actor<Context = Context<A>>> Later<A> {
    /// Polls the answer: `None` when the handler dropped its reply.
    pub(super) fn poll(
        &mut self,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
    ) -> Poll<Option<Outcome>> {
        match self {
            Later::Future(future) => future.as_mut().poll(task).map(Some),
            Later::ActorFuture(future) => future.as_mut().poll(act, ctx, task).map(Some),
            Later::Channel(rx) => Pin::new(rx).poll(task).map(Result::ok),
        }
    }
}
