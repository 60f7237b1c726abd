//! The calls of a test's closure handlers, as they answered.

use std::sync::{Arc, Mutex};

use crate::codec::Decode;
use crate::delivery::Outcome;
use crate::envelope::Record;
use crate::error::Result;

/// One call of a handler: the record it was called with, its attempt and
/// what it answered.
#[derive(Debug, Clone)]
pub struct Call {
    record: Arc<Record>,
    attempt: u32,
    outcome: Outcome,
}

impl Call {
    pub(super) fn new(record: Arc<Record>, attempt: u32, outcome: Outcome) -> Self {
        Call {
            record,
            attempt,
            outcome,
        }
    }

    /// The message it was called with, decoded as `T`.
    pub fn message<T: Decode>(&self) -> Result<T> {
        self.record.decode()
    }

    /// The record it was called with.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The record's key as UTF-8, when it has one.
    pub fn key(&self) -> Option<&str> {
        self.record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Which attempt it was (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What the handler answered.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// Every call, in answering order, shared by the wrapped handlers.
#[derive(Debug, Clone, Default)]
pub(super) struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    pub(super) fn push(&self, call: Call) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }

    /// The calls on records of `topic`.
    pub(super) fn of(&self, topic: &str) -> Vec<Call> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| &*c.record.topic == topic)
            .cloned()
            .collect()
    }
}
