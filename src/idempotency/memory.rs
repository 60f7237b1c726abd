//! The in-memory idempotency store: for tests and single instances (or
//! several subscriptions of one process sharing it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{self, BoxFuture, FutureExt};

use super::{Claim, IdempotencyStore};
use crate::error::Result;

/// Keys in this process's memory, at most `capacity` of them: past it the
/// oldest handled keys are forgotten first (a claim in progress is never
/// dropped for room). Lost when the process ends.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, Entry>,
    /// Handled keys in the order recorded, for eviction past capacity.
    done_order: VecDeque<(String, Instant)>,
}

impl Inner {
    /// Whether `key`'s entry is the one recorded until `until`.
    fn is_current(&self, key: &str, until: Instant) -> bool {
        matches!(self.keys.get(key), Some(Entry::Done { until: u }) if *u == until)
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Claimed { owner: String, until: Instant },
    Done { until: Instant },
}

impl MemoryStore {
    /// A store remembering at most `capacity` handled keys.
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// How many keys it holds (claimed or handled, expired ones included
    /// until they are met again).
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claim>>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let claims = keys
            .iter()
            .map(|key| {
                let claim = match inner.keys.get(key) {
                    Some(Entry::Done { until }) if *until > now => return Claim::Done,
                    Some(Entry::Claimed { owner: o, until }) if *until > now && o != owner => {
                        return Claim::Busy
                    }
                    _ => Entry::Claimed {
                        owner: owner.to_string(),
                        until: crate::clock::deadline_after(now, lease),
                    },
                };
                inner.keys.insert(key.clone(), claim);
                Claim::New
            })
            .collect();
        future::ready(Ok(claims)).boxed()
    }

    fn complete<'a>(&'a self, keys: &'a [String], ttl: Duration) -> BoxFuture<'a, Result<()>> {
        let now = Instant::now();
        let until = crate::clock::deadline_after(now, ttl);
        let mut inner = self.lock();
        for key in keys {
            inner.keys.insert(key.clone(), Entry::Done { until });
            inner.done_order.push_back((key.clone(), until));
        }
        // Forget the oldest handled keys past capacity (an entry of the
        // order list whose key was recorded again later is stale).
        while inner.keys.len() > self.capacity {
            let Some((key, until)) = inner.done_order.pop_front() else {
                break;
            };
            if inner.is_current(&key, until) {
                inner.keys.remove(&key);
            }
        }
        // Keys recorded again (after their TTL, or a copy's) leave stale
        // entries behind: the list keeps at most about twice the keys.
        if inner.done_order.len() > 2 * inner.keys.len() + 64 {
            let Inner { keys, done_order } = &mut *inner;
            done_order.retain(|(key, until)| {
                matches!(keys.get(key), Some(Entry::Done { until: u }) if u == until)
            });
        }
        future::ready(Ok(())).boxed()
    }

    fn release<'a>(&'a self, keys: &'a [String], owner: &'a str) -> BoxFuture<'a, Result<()>> {
        let mut inner = self.lock();
        for key in keys {
            if matches!(inner.keys.get(key), Some(Entry::Claimed { owner: o, .. }) if o == owner) {
                inner.keys.remove(key);
            }
        }
        future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[actix_rt::test]
    async fn claims_follow_the_key_s_state() {
        let store = MemoryStore::new(10);
        let lease = Duration::from_secs(60);
        let (a, b) = (keys(&["a"]), keys(&["b"]));
        assert_eq!(store.claim(&a, "m1", lease).await.unwrap(), [Claim::New]);
        assert_eq!(store.claim(&a, "m2", lease).await.unwrap(), [Claim::Busy]);
        assert_eq!(store.claim(&a, "m1", lease).await.unwrap(), [Claim::New]);
        store.complete(&a, lease).await.unwrap();
        assert_eq!(store.claim(&a, "m2", lease).await.unwrap(), [Claim::Done]);
        assert_eq!(store.claim(&b, "m2", lease).await.unwrap(), [Claim::New]);
        store.release(&b, "m1").await.unwrap();
        assert_eq!(store.claim(&b, "m1", lease).await.unwrap(), [Claim::Busy]);
        store.release(&b, "m2").await.unwrap();
        assert_eq!(store.claim(&b, "m1", lease).await.unwrap(), [Claim::New]);
    }

    #[actix_rt::test]
    async fn leases_and_ttls_run_out() {
        let store = MemoryStore::new(10);
        let a = keys(&["a"]);
        assert_eq!(
            store.claim(&a, "m1", Duration::ZERO).await.unwrap(),
            [Claim::New]
        );
        assert_eq!(
            store
                .claim(&a, "m2", Duration::from_secs(60))
                .await
                .unwrap(),
            [Claim::New],
            "an expired claim is taken over"
        );
        store.complete(&a, Duration::ZERO).await.unwrap();
        assert_eq!(
            store
                .claim(&a, "m3", Duration::from_secs(60))
                .await
                .unwrap(),
            [Claim::New],
            "an expired key is new again"
        );
    }

    /// A key recorded again and again (after its TTL, or by copies) keeps
    /// one entry in the eviction order, give or take: the order list grew
    /// by one per recording, without bound.
    #[actix_rt::test]
    async fn keys_recorded_again_keep_memory_bounded() {
        let store = MemoryStore::new(1_000);
        for round in 0..100_000u32 {
            let ttl = Duration::from_nanos(u64::from(round % 3));
            store.complete(&keys(&["a", "b"]), ttl).await.unwrap();
        }
        let inner = store.lock();
        assert_eq!(inner.keys.len(), 2);
        assert!(
            inner.done_order.len() <= 2 * 2 + 64 + 2,
            "{}",
            inner.done_order.len()
        );
    }

    #[actix_rt::test]
    async fn past_capacity_the_oldest_handled_keys_go() {
        let store = MemoryStore::new(3);
        let ttl = Duration::from_secs(60);
        for k in ["a", "b", "c", "d"] {
            store.complete(&keys(&[k]), ttl).await.unwrap();
        }
        assert_eq!(store.len(), 3);
        let claims = store.claim(&keys(&["a", "d"]), "m", ttl).await.unwrap();
        assert_eq!(claims, [Claim::New, Claim::Done]);
    }
}
