//! A handler's answer to one record: at once, or a future polled in place
//! by its runner in the handler's context.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};

use actix::dev::MessageResponse;
use actix::prelude::*;
use tokio::sync::oneshot;

use crate::delivery::{BatchOutcome, Handled, Outcome};

/// What a handler call answers: an [`Outcome`] for one record, a
/// [`BatchOutcome`] for a batch.
pub(crate) trait Verdict: Sized + 'static {
    /// The answer a [`Handled`] gives, when `response` is one (only a
    /// single record's handler answers with it).
    fn handled<A: Actor>(response: &mut dyn Any) -> Option<Reply<A, Self>>;
}

impl Verdict for Outcome {
    #[inline]
    fn handled<A: Actor>(response: &mut dyn Any) -> Option<Reply<A, Self>> {
        let handled = response
            .downcast_mut::<Option<Handled>>()
            .and_then(Option::take)?;
        Some(match handled.into_parts() {
            Ok(outcome) => Reply::Now(outcome),
            Err(future) => Reply::Later(Later::Future(future)),
        })
    }
}

impl Verdict for BatchOutcome {
    fn handled<A: Actor>(_: &mut dyn Any) -> Option<Reply<A, Self>> {
        None
    }
}

/// The answer to a handler call.
pub(crate) enum Reply<A: Actor, O = Outcome> {
    /// Answered at once.
    Now(O),
    /// To be awaited in the handler's context.
    Later(Later<A, O>),
}

/// An answer to come, awaited in the handler's context.
pub(crate) enum Later<A: Actor, O = Outcome> {
    /// A `ResponseFuture`, polled in place.
    Future(Pin<Box<dyn Future<Output = O>>>),
    /// A `ResponseActFuture`, polled in place with the actor and its context.
    ActorFuture(Pin<Box<dyn ActorFuture<A, Output = O>>>),
    /// Any other response, answering through a channel.
    Channel(oneshot::Receiver<O>),
}

impl<A: Actor<Context = Context<A>>, O: Verdict> Reply<A, O> {
    /// The reply a handler's `response` to `M` gives, without a channel for
    /// the responses the lane knows.
    #[inline]
    pub(crate) fn of<M, R>(response: R, ctx: &mut Context<A>) -> Reply<A, O>
    where
        M: Message<Result = O> + 'static,
        R: MessageResponse<A, M> + 'static,
    {
        let mut slot = Some(response);
        let any: &mut dyn Any = &mut slot;
        if let Some(outcome) = any.downcast_mut::<Option<O>>().and_then(Option::take) {
            return Reply::Now(outcome);
        }
        if let Some(MessageResult(outcome)) = any
            .downcast_mut::<Option<MessageResult<M>>>()
            .and_then(Option::take)
        {
            return Reply::Now(outcome);
        }
        if let Some(reply) = O::handled(any) {
            return reply;
        }
        if let Some(future) = any
            .downcast_mut::<Option<ResponseFuture<O>>>()
            .and_then(Option::take)
        {
            return Reply::Later(Later::Future(future));
        }
        if let Some(future) = any
            .downcast_mut::<Option<ResponseActFuture<A, O>>>()
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

impl<A: Actor<Context = Context<A>>, O> Later<A, O> {
    /// Polls the answer: `None` when the handler dropped its reply.
    pub(super) fn poll(
        &mut self,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
    ) -> Poll<Option<O>> {
        match self {
            Later::Future(future) => future.as_mut().poll(task).map(Some),
            Later::ActorFuture(future) => future.as_mut().poll(act, ctx, task).map(Some),
            Later::Channel(rx) => Pin::new(rx).poll(task).map(Result::ok),
        }
    }
}
