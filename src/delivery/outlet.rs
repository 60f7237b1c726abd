//! Where a [`Delivery`](super::Delivery)'s publishes go: the application's
//! producer, as a hook the producer layer fills in (this layer cannot name
//! it).
//!
//! A subscription registers its outlet once, and each of its deliveries
//! carries the registration's number (a plain integer: no reference count
//! to take and drop per record); a publish looks the outlet up. The
//! registration ends with the subscription: a delivery kept past it
//! publishes nothing (`Error::Shutdown`).

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

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

/// Publishers by broker name.
pub(crate) type Publishers = Arc<[(Arc<str>, Arc<dyn Publisher>)]>;

/// A subscription's way out for its handlers' publishes.
#[derive(Clone)]
pub(crate) struct Outlet {
    pub(crate) publisher: Arc<dyn Publisher>,
    /// Whether the subscription is transactional: a publish made after its
    /// handler's turn cannot join the record's transaction, and is refused
    /// rather than written outside it.
    pub(crate) transactional: bool,
    /// The application's other brokers' publishers, by name
    /// ([`Delivery::publish_on`](super::Delivery::publish_on)).
    pub(crate) others: Publishers,
}

impl std::fmt::Debug for Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outlet")
            .field("transactional", &self.transactional)
            .finish()
    }
}

/// The number of a registered outlet, which deliveries carry.
pub(crate) type OutletId = NonZeroU64;

/// The outlets registered now (a handful: one per running subscription).
static OUTLETS: RwLock<Vec<(OutletId, Outlet)>> = RwLock::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// An outlet's registration, held by its subscription; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Registration(OutletId);

impl Registration {
    pub(crate) fn new(outlet: Outlet) -> Self {
        let id = OutletId::new(NEXT.fetch_add(1, Ordering::Relaxed)).expect("counts from 1");
        OUTLETS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, outlet));
        Registration(id)
    }

    pub(crate) fn id(&self) -> OutletId {
        self.0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        OUTLETS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.0);
    }
}

/// The outlet registered as `id`, while it is.
pub(crate) fn find(id: OutletId) -> Option<Outlet> {
    OUTLETS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, outlet)| outlet.clone())
}
