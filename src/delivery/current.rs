//! The record being handled on this thread, as a hook: a lane's runner
//! sets it for the length of one turn (not per record), and a publish made
//! from the handler reads it, to inherit the record's context or to join
//! its transaction. The subscription implements [`Handling`]; the layers
//! below it (the producer's handle, the outbox) only ask this module.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::envelope::Record;
use crate::error::Result;
use crate::observe::trace::TraceContext;
use crate::publish::{Publish, PublishOutcome};

/// What a handler running on this thread is handling, as its lane sees it.
pub(crate) trait Handling {
    /// Calls `f` with the record being handled and its `handle` span's
    /// trace context (when spans are on); not at all when none is.
    fn record(&self, f: &mut dyn FnMut(&Record, Option<TraceContext>));

    /// Whether `record` is being handled (the record of the call under
    /// way, or one of its batch).
    fn handles(&self, record: &Record) -> bool;

    /// Offers `publish` to the transaction of the record being handled:
    /// taken (and answered) in a transactional subscription, given back
    /// otherwise.
    fn join(&self, publish: Publish) -> Joined;
}

/// What became of a publish offered to the record's transaction.
pub(crate) enum Joined {
    /// Taken (or refused, with why).
    Taken(Result<PublishOutcome>),
    /// Not in a transactional handler: for the Producer.
    Back(Publish),
}

thread_local! {
    /// The lane whose handler runs on this thread right now.
    static CURRENT: RefCell<Option<Rc<dyn Handling>>> = const { RefCell::new(None) };
    /// Whether `CURRENT` is set: the one check a publish outside any
    /// handler pays.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Marks `handling` as what the handler running on this thread handles,
/// until the guard is dropped.
pub(crate) struct Current(());

impl Current {
    pub(crate) fn enter(handling: &Rc<dyn Handling>) -> Self {
        CURRENT.with(|c| *c.borrow_mut() = Some(handling.clone()));
        IN_HANDLER.with(|h| h.set(true));
        Current(())
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        IN_HANDLER.with(|h| h.set(false));
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Whether a handler runs on this thread (one thread-local read).
#[inline]
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// Calls `f` with the record the handler running on this thread is
/// handling and its `handle` span's trace context (when the span is on).
pub(crate) fn with_current<R>(f: impl FnOnce(&Record, Option<TraceContext>) -> R) -> Option<R> {
    if !in_handler() {
        return None;
    }
    let (mut f, mut out) = (Some(f), None);
    // Borrowed in place: `record` only reads the board, never this hook.
    CURRENT.with(|c| {
        if let Some(handling) = c.borrow().as_deref() {
            handling.record(&mut |record, trace| {
                if let Some(f) = f.take() {
                    out = Some(f(record, trace));
                }
            });
        }
    });
    out
}

/// Whether `record` (the same, not an equal one) is the record of the
/// call under way on this thread (a batch's first).
pub(crate) fn is_running(record: &Record) -> bool {
    with_current(|running, _| std::ptr::eq(running, record)).unwrap_or(false)
}

/// Whether the handler running on this thread is handling `record` now
/// (the same record, not an equal one; in a batch, any of its records).
pub(crate) fn handles(record: &Record) -> bool {
    if !in_handler() {
        return false;
    }
    CURRENT.with(|c| c.borrow().as_deref().is_some_and(|h| h.handles(record)))
}

/// Offers `publish` to the transaction of the record handled on this
/// thread ([`Handling::join`]); gives it back outside any handler.
pub(crate) fn join(publish: Publish) -> Joined {
    if !in_handler() {
        return Joined::Back(publish);
    }
    // Borrowed in place: `join` only changes the board, never this hook.
    CURRENT.with(|c| match c.borrow().as_deref() {
        Some(handling) => handling.join(publish),
        None => Joined::Back(publish),
    })
}
