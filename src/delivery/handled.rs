//! [`Handled`]: an actor handler's answer written once, now or later.

use std::future::Future;
use std::pin::Pin;

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;

use super::{Failure, Outcome};

/// What an actor's `Handler<Delivery<T>>` answers when its body is
/// `async` (`type Result = Handled`): an [`Outcome`] (or anything that
/// converts to one) at once, or an async body written once with
/// [`Handled::later`], where `?` turns an error into a retry or a
/// rejection ([`Failure`]).
///
/// ```
/// # use actix::prelude::*;
/// # use kafkactor::prelude::*;
/// # #[derive(serde::Deserialize, serde::Serialize)] struct Order { amount: u64 }
/// struct Billing;
/// impl Actor for Billing { type Context = Context<Self>; }
///
/// impl Handler<Delivery<Order>> for Billing {
///     type Result = Handled;
///
///     fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Handled {
///         if d.message().amount == 0 {
///             return Outcome::reject("an order of nothing").into();
///         }
///         Handled::later(async move {
///             d.publish(Publish::to("invoices").message(d.message())?).await?;
///             Ok(())
///         })
///     }
/// }
/// ```
///
/// Its future runs in the handler's lane, polled in place like a
/// `ResponseFuture`: what it publishes while it runs inherits the record's
/// context and joins its transaction in a transactional subscription.
pub struct Handled(Answer);

enum Answer {
    Now(Outcome),
    Later(Pin<Box<dyn Future<Output = Outcome>>>),
}

impl Handled {
    /// An answer that comes once `body` is done: `Ok(())` acknowledges,
    /// `Err(failure)` retries or rejects by its kind.
    pub fn later(body: impl Future<Output = Result<(), Failure>> + 'static) -> Self {
        Handled(Answer::Later(Box::pin(async move { body.await.into() })))
    }

    /// An answer that comes once `body` is done, whatever it answers that
    /// converts to an [`Outcome`].
    pub fn later_outcome<O: Into<Outcome>>(body: impl Future<Output = O> + 'static) -> Self {
        Handled(Answer::Later(Box::pin(async move { body.await.into() })))
    }

    /// The answer given at once, or the future of the one to come.
    pub(crate) fn into_parts(self) -> Result<Outcome, Pin<Box<dyn Future<Output = Outcome>>>> {
        match self.0 {
            Answer::Now(outcome) => Ok(outcome),
            Answer::Later(future) => Err(future),
        }
    }
}

impl std::fmt::Debug for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Answer::Now(outcome) => f.debug_tuple("Handled").field(outcome).finish(),
            Answer::Later(_) => f.write_str("Handled(later)"),
        }
    }
}

/// An answer at once.
impl<O: Into<Outcome>> From<O> for Handled {
    fn from(outcome: O) -> Self {
        Handled(Answer::Now(outcome.into()))
    }
}

/// Sent with actix (`addr.send(delivery)`) rather than by a lane: the
/// answer as a `ResponseFuture` gives it.
impl<A: Actor, M: Message<Result = Outcome>> MessageResponse<A, M> for Handled {
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<Outcome>>) {
        match self.into_parts() {
            Ok(outcome) => {
                if let Some(tx) = tx {
                    let _ = tx.send(outcome);
                }
            }
            Err(future) => {
                actix_rt::spawn(async move {
                    let outcome = future.await;
                    if let Some(tx) = tx {
                        let _ = tx.send(outcome);
                    }
                });
            }
        }
    }
}
