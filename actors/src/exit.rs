//! How a running child reports why it stopped: panics are caught, and a child
//! may stop itself with a failure reason through [`fail`].

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use actix::{Actor, ActorContext, Context};
use futures_util::FutureExt;

use crate::Exit;

tokio::task_local! {
    static FAILURE: RefCell<Option<String>>;
}

/// Stop the current actor and report it to its supervisor as failed with `reason`.
///
/// Outside a supervised child this only stops the actor.
pub fn fail<A>(ctx: &mut Context<A>, reason: impl Into<String>)
where
    A: Actor<Context = Context<A>>,
{
    let reason = reason.into();
    let _ = FAILURE.try_with(|f| *f.borrow_mut() = Some(reason));
    ctx.stop();
}

/// Runs a child's future to completion, turning panics and [`fail`] into an [`Exit`].
pub(crate) async fn run_catching<F: Future<Output = ()>>(fut: F) -> Exit {
    let result = FAILURE
        .scope(RefCell::new(None), async move {
            let r = AssertUnwindSafe(fut).catch_unwind().await;
            let failed = FAILURE.with(|f| f.borrow_mut().take());
            (r, failed)
        })
        .await;
    match result {
        (Err(panic), _) => Exit::Panicked(panic_message(&*panic)),
        (Ok(()), Some(reason)) => Exit::Failed(reason),
        (Ok(()), None) => Exit::Normal,
    }
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
