//! Idempotent consumption: a subscription that handles each idempotency key
//! once, however often records carrying it arrive.
//!
//! [`Subscription::idempotent`](crate::Subscription::idempotent) takes an
//! [`Idempotency`]: a store, where a record's key comes from, how long a
//! handled key is remembered ([`ttl`](Idempotency::ttl)) and how long a
//! member's claim on a key it is handling holds ([`lease`](Idempotency::lease)).
//!
//! For each batch the Dispatcher claims every record's key in one call to
//! the store, before any of them reaches a handler:
//! - a key handled before ([`Claim::Done`]): the record is acknowledged
//!   without calling the handler and counted
//!   (`kafkactor_duplicates_total`);
//! - a key claimed by another member and not finished ([`Claim::Busy`]):
//!   the record, and every later record of its partition, waits and is
//!   claimed again until the claim is finished or its lease runs out;
//!   never handled by two members at once;
//! - a key nobody holds ([`Claim::New`]): handled; once its fate is final
//!   (acknowledged, or written to the dead-letter topic) the key is
//!   recorded as done, and only then is the record's offset committed.
//!
//! **What is guaranteed.** A record whose key the store holds as done is
//! never handled again while the store remembers it (the TTL). If the
//! process dies after the handler's effect and before the key is recorded,
//! the record is read again (its offset was not committed) and handled
//! again once the dead member's lease runs out: for that window, at least
//! once. The same holds for the records a subscription's Dispatcher had
//! under way when it was restarted (a bug in kafkactor, not a handler's
//! panic, which restarts only the handler): its member claims them again.
//!
//! A store that cannot be reached pauses the subscription (claims and
//! completions are tried again, backing off up to 5 s; each failure
//! counted in `kafkactor_idempotency_store_errors_total`, and the
//! application not ready, check `idempotency:<group>`, until a call
//! succeeds): no record skips the check and none is committed before its
//! key is recorded.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::envelope::{header, Record};
use crate::error::Result;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// What a store knows of a key when a member claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody handled it and nobody else holds it: the claimer does (for
    /// the lease).
    New,
    /// Handled before: a duplicate.
    Done,
    /// Another member holds an unexpired claim on it.
    Busy,
}

/// Where idempotency keys are kept: shared by every member of a group.
///
/// Each call covers a whole batch (one round trip to a remote store).
/// Keys come namespaced by consumer group.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims each of `keys` for `owner` for `lease`, answering in the
    /// order asked: [`Claim::New`] when nobody handled it and no other
    /// owner holds it (a claim `owner` itself holds is renewed),
    /// [`Claim::Done`] when it was handled, [`Claim::Busy`] when another
    /// owner's claim has not run out.
    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        owner: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claim>>>;

    /// Records each of `keys` as handled, remembered for `ttl`.
    fn complete<'a>(&'a self, keys: &'a [String], ttl: Duration) -> BoxFuture<'a, Result<()>>;

    /// Gives up `owner`'s claims on `keys` (records it will not handle
    /// after all, as their partition moved to another member).
    fn release<'a>(&'a self, keys: &'a [String], owner: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A key resolver of the application's.
type KeyFn = Arc<dyn Fn(&Record) -> Option<String> + Send + Sync>;

/// Where a record's idempotency key comes from.
#[derive(Clone)]
enum KeyFrom {
    Header(&'static str),
    Custom(KeyFn),
}

/// How a subscription consumes idempotently: see the [module](self).
///
/// ```
/// # use kafkactor::prelude::*;
/// use kafkactor::idempotency::{Idempotency, MemoryStore};
/// use std::time::Duration;
/// let idempotency = Idempotency::new(MemoryStore::new(100_000))
///     .key_header(kafkactor::header::IDEMPOTENCY_KEY)
///     .ttl(Duration::from_secs(24 * 3600));
/// let subscription = Subscription::to("payments").group("billing").idempotent(idempotency);
/// ```
#[derive(Clone)]
pub struct Idempotency {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    /// The last store failure, until a call succeeds again: the
    /// subscription's readiness check.
    pub(crate) failing: crate::observe::health::Failing,
    key: KeyFrom,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            KeyFrom::Header(name) => *name,
            KeyFrom::Custom(_) => "custom",
        };
        f.debug_struct("Idempotency")
            .field("key", &key)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Keys kept in `store`; by default a record's key is its message id
    /// (header `x-message-id`, set by every kafkactor publisher), handled
    /// keys are remembered for 24 hours, and a claim holds for 60 s.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::shared(Arc::new(store))
    }

    /// The same with a store shared with other subscriptions.
    pub fn shared(store: Arc<dyn IdempotencyStore>) -> Self {
        Idempotency {
            store,
            failing: Default::default(),
            key: KeyFrom::Header(header::MESSAGE_ID),
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
        }
    }

    /// Takes the key from the header `name` (as
    /// [`header::IDEMPOTENCY_KEY`], which publishers set with
    /// [`Publish::idempotency_key`](crate::Publish::idempotency_key)).
    pub fn key_header(mut self, name: &'static str) -> Self {
        self.key = KeyFrom::Header(name);
        self
    }

    /// Takes the key from the record (its headers, key or payload).
    /// `None`: the record has no key and is handled without the check.
    pub fn key_with(
        mut self,
        key: impl Fn(&Record) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.key = KeyFrom::Custom(Arc::new(key));
        self
    }

    /// How long a handled key is remembered (default 24 hours).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a member's claim on a key it is handling holds before
    /// another member may take the key over (default 60 s): longer than a
    /// record's handling with its retries, short enough to wait out after a
    /// member died.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The key of `record`, namespaced by `group`; `None` when it has none.
    /// A dead letter sent back by a [`Replay`](crate::Replay) (its
    /// `x-replay-count`) is a new delivery of a record whose fate was a
    /// failure, not a duplicate: its key says which replay it is.
    pub(crate) fn key_of(&self, group: &str, record: &Record) -> Option<String> {
        let key = match &self.key {
            KeyFrom::Header(name) => record.headers.get_str(name).map(str::to_string),
            KeyFrom::Custom(f) => f(record),
        }?;
        Some(match record.headers.get_str(header::REPLAY_COUNT) {
            Some(replay) => format!("{group}:{key}:replay-{replay}"),
            None => format!("{group}:{key}"),
        })
    }
}
