//! Handlers that declare their own subscription
//! ([`#[kafkactor::handler]`](crate::handler)), and the builders that take
//! them: [`AppBuilder::handler`](crate::AppBuilder::handler), and the test
//! harness's.

use std::future::Future;

use crate::codec::Decode;
use crate::delivery::{Delivery, Outcome};
use crate::subscription::Subscription;

/// A handler that knows its subscription: what
/// [`#[kafkactor::handler]`](crate::handler) makes of an async function.
/// Register it with [`AppBuilder::handler`](crate::AppBuilder::handler).
pub trait DeclaredHandler {
    /// The subscription it declares.
    fn subscription(&self) -> Subscription;

    /// Subscribes it to `subscription` (its own, or one a test harness
    /// renamed) on `builder`.
    fn register<B: Subscriber>(self, builder: B, subscription: Subscription) -> B;
}

/// A builder that subscribes async handlers: the application's
/// ([`AppBuilder`](crate::AppBuilder)) and the test harness's.
pub trait Subscriber: Sized {
    /// Subscribes `handler` to `subscription`, as
    /// [`AppBuilder::handle`](crate::AppBuilder::handle) does.
    fn handle<T, F, Fut, O>(self, subscription: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: Future<Output = O> + 'static,
        O: Into<Outcome> + 'static;
}
