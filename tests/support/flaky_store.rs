//! An idempotency store whose claims and completions fail while a test
//! says so, counting its calls and the keys it claimed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kafkactor::idempotency::{Claim, IdempotencyStore, MemoryStore};
use kafkactor::Error;

/// A store whose claims and completions fail while told to, counting
/// every call.
pub struct Flaky {
    inner: MemoryStore,
    claims_down: Arc<AtomicBool>,
    completions_down: Arc<AtomicBool>,
    claims: Arc<AtomicUsize>,
    claimed: Arc<Mutex<Vec<String>>>,
}

fn down<T: Send + 'static>() -> BoxFuture<'static, kafkactor::Result<T>> {
    Box::pin(async { Err(Error::Unavailable("store down".into())) })
}

impl IdempotencyStore for Flaky {
    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, kafkactor::Result<Vec<Claim>>> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        if self.claims_down.load(Ordering::SeqCst) {
            return down();
        }
        self.claimed.lock().unwrap().extend(keys.iter().cloned());
        self.inner.claim(keys, owner, lease)
    }
    fn complete<'a>(
        &'a self,
        keys: &'a [String],
        ttl: Duration,
    ) -> BoxFuture<'a, kafkactor::Result<()>> {
        if self.completions_down.load(Ordering::SeqCst) {
            return down();
        }
        self.inner.complete(keys, ttl)
    }
    fn release<'a>(
        &'a self,
        keys: &'a [String],
        owner: &'a str,
    ) -> BoxFuture<'a, kafkactor::Result<()>> {
        self.inner.release(keys, owner)
    }
}

/// The switches, the call count and the keys claimed of a [`Flaky`] store.
#[derive(Clone, Default)]
pub struct Switches {
    pub claims_down: Arc<AtomicBool>,
    pub completions_down: Arc<AtomicBool>,
    pub claims: Arc<AtomicUsize>,
    pub claimed: Arc<Mutex<Vec<String>>>,
}

impl Switches {
    pub fn store(&self) -> Flaky {
        Flaky {
            inner: MemoryStore::new(10_000),
            claims_down: self.claims_down.clone(),
            completions_down: self.completions_down.clone(),
            claims: self.claims.clone(),
            claimed: self.claimed.clone(),
        }
    }
}
