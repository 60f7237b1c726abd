//! Health as data: what [`App::health`](crate::App::health) answers
//! ([`Health`], each [`Check`]), and what the actors that call a dependency
//! (an idempotency store, the outbox's database) or run handlers record of
//! its failures ([`Failing`]). The application reads them (`app/health.rs`);
//! nothing here calls anything.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// How many records in a row a subscription may dead-letter, none
/// acknowledged, before it reports not ready.
pub(crate) const DEAD_LETTER_STREAK: u32 = 100;

/// What the application reports about itself: `live` while it runs, `ready`
/// when it can do its work; each check says what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The supervision tree runs.
    pub live: bool,
    /// Live, the broker answers, and every consumer owns partitions.
    pub ready: bool,
    /// Each check, in order: the broker, each consumer, each
    /// subscription's handlers, each idempotency store, the outbox's
    /// database.
    pub checks: Vec<Check>,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `broker`, `consumer:<group>`, `handlers:<group>` (a subscription's
    /// handlers: failing while they are past their restart limit, or while
    /// every record lately went to the dead-letter topic),
    /// `idempotency:<group>` (an idempotent subscription's store) or
    /// `outbox:<table>` (an outbox relay's database).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The last failure of something the application depends on besides the
/// broker (an idempotency store, the outbox's database), while it lasts:
/// set by the actor that calls it, read by the readiness check. Each kind
/// of call (an idempotency store's claims and its completions) fails and
/// recovers on its own: the check passes once none is failing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Failing(Arc<Mutex<std::collections::BTreeMap<&'static str, Failure>>>);

/// One kind of call's failure, and when it stops counting (None: once
/// cleared).
type Failure = (String, Option<Instant>);

impl Failing {
    /// Calls of kind `call` fail.
    pub(crate) fn set_for(&self, call: &'static str, failure: String) {
        self.lock().insert(call, (failure, None));
    }

    /// `what` fails until `until` (unless set again).
    pub(crate) fn set_until(&self, what: &'static str, failure: String, until: Instant) {
        self.lock().insert(what, (failure, Some(until)));
    }

    /// Calls of kind `call` succeed again.
    pub(crate) fn clear_for(&self, call: &'static str) {
        let mut failing = self.lock();
        if !failing.is_empty() {
            failing.remove(call);
        }
    }

    /// What is failing, if anything: each kind of call's last failure.
    pub(crate) fn get(&self) -> Option<String> {
        let mut failing = self.lock();
        if failing.is_empty() {
            return None;
        }
        let now = Instant::now();
        failing.retain(|_, (_, until)| until.is_none_or(|until| now < until));
        let all: Vec<String> = failing
            .iter()
            .map(|(call, (failure, _))| format!("{call}: {failure}"))
            .collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<&'static str, Failure>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
