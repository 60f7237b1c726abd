//! Where a [`Delivery`](super::Delivery)'s publishes go: the application's
//! producer, as a hook the producer layer fills in (this layer cannot name
//! it), bound to the delivery when its subscription makes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Result;
use crate::publish::{Publish, PublishOutcome};

/// The answer to a publish made through an [`Outlet`].
pub(crate) type Sent = Pin<Box<dyn Future<Output = Result<PublishOutcome>>>>;

/// Publishes for a handler (the application's producer implements it).
pub(crate) trait Publisher: Send + Sync {
    /// Publishes `publish` as the application's producer does, answering
    /// once it is written (or joined to the record's transaction).
    fn publish(&self, publish: Publish) -> Sent;
}

/// A subscription's way out for its handlers' publishes, shared by all its
/// deliveries (one reference count per delivery).
#[derive(Clone)]
pub(crate) struct Outlet {
    pub(crate) publisher: Arc<dyn Publisher>,
    /// Whether the subscription is transactional: a publish made after its
    /// handler's turn cannot join the record's transaction, and is refused
    /// rather than written outside it.
    pub(crate) transactional: bool,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("transactional", &self.transactional)
            .finish()
    }
}
