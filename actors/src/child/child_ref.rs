//! [`ChildRef`], the always-current address of a supervised child, and
//! `Incarnation`, the running child it points at.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::channel::AddressSender;
use actix::{Actor, Addr};
use tokio::sync::watch;

use crate::stop::{StopRequest, StopSender};
use crate::Exit;

/// One incarnation of a child, as seen through a [`ChildRef`].
pub(super) struct Incarnation<A: Actor> {
    pub(super) addr: Addr<A>,
    /// The mailbox sender behind `addr`.
    pub(super) sender: AddressSender<A>,
    pub(super) number: u64,
    pub(super) stop: StopSender,
}

impl<A: Actor> Clone for Incarnation<A> {
    fn clone(&self) -> Self {
        Incarnation {
            addr: self.addr.clone(),
            sender: self.sender.clone(),
            number: self.number,
            stop: self.stop.clone(),
        }
    }
}

/// The current address of a supervised child, kept up to date across restarts.
///
/// A restart re-creates the child from its factory with a new mailbox; holders
/// of a `ChildRef` resolve the current one with [`ChildRef::get`], or wait for
/// it with [`ChildRef::ready`]. Each start of the child is an *incarnation*,
/// numbered from 1.
pub struct ChildRef<A: Actor> {
    slot: Arc<watch::Sender<Slot<A>>>,
}

struct Slot<A: Actor> {
    current: Option<Incarnation<A>>,
    started: u64,
    last_exit: Option<(u64, Exit)>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        ChildRef {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> Default for ChildRef<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor> fmt::Debug for ChildRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildRef")
            .field("actor", &std::any::type_name::<A>())
            .field("incarnation", &self.get_numbered().map(|(_, n)| n))
            .finish()
    }
}

impl<A: Actor> ChildRef<A> {
    /// An empty reference, filled when the child starts.
    pub fn new() -> Self {
        ChildRef {
            slot: Arc::new(watch::Sender::new(Slot {
                current: None,
                started: 0,
                last_exit: None,
            })),
        }
    }

    /// The address of the current incarnation, if the child is running.
    pub fn get(&self) -> Option<Addr<A>> {
        self.get_numbered().map(|(addr, _)| addr)
    }

    /// The address of the current incarnation and its number, if running.
    pub fn get_numbered(&self) -> Option<(Addr<A>, u64)> {
        self.running(|i| (i.addr.clone(), i.number))
    }

    /// The mailbox sender of the current incarnation and its number, if
    /// running: for a caller that keeps it for the incarnation's life and
    /// sends with [`AddressSender::send`], which hands back the reply's
    /// receiver instead of a request future to box.
    pub fn sender_numbered(&self) -> Option<(AddressSender<A>, u64)> {
        self.running(|i| (i.sender.clone(), i.number))
    }

    /// Calls `f` with the address of the current incarnation and its
    /// number, if one runs, without cloning the address (a clone allocates):
    /// for a message per call on a hot path. `f` must not wait, nor start,
    /// stop or look up this child.
    pub fn with<R>(&self, f: impl FnOnce(&Addr<A>, u64) -> R) -> Option<R> {
        self.running(|i| f(&i.addr, i.number))
    }

    /// `f` of the current incarnation, if it runs.
    fn running<R>(&self, f: impl FnOnce(&Incarnation<A>) -> R) -> Option<R> {
        let slot = self.slot.borrow();
        slot.current.as_ref().filter(|i| i.addr.connected()).map(f)
    }

    /// Waits until an incarnation numbered above `after` runs (pass 0 for
    /// any), or until `timeout` passes.
    pub async fn ready_after(&self, after: u64, timeout: Duration) -> Option<(Addr<A>, u64)> {
        let mut rx = self.slot.subscribe();
        let wait = async {
            loop {
                if let Some(found) = self.get_numbered().filter(|(_, n)| *n > after) {
                    return Some(found);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Waits up to `timeout` for a running incarnation.
    pub async fn ready(&self, timeout: Duration) -> Option<Addr<A>> {
        self.ready_after(0, timeout).await.map(|(addr, _)| addr)
    }

    /// Stops incarnation `number` (if it is still the current one) and reports
    /// it to its supervisor as failed with `reason`, so that the supervisor
    /// applies its restart policy. Returns whether the incarnation was found.
    ///
    /// This is how a caller that saw a child misbehave (for example drop a
    /// reply) gets it re-created from its factory.
    pub fn fail(&self, number: u64, reason: impl Into<String>) -> bool {
        let current = self.slot.borrow().current.clone();
        match current {
            Some(i) if i.number == number => i.stop.send(StopRequest::Fail(reason.into())),
            _ => false,
        }
    }

    /// How the most recent incarnation that ended ended, with its number.
    pub fn last_exit(&self) -> Option<(u64, Exit)> {
        self.slot.borrow().last_exit.clone()
    }

    /// Registers a new incarnation and returns its number.
    pub(super) fn publish(&self, make: impl FnOnce(u64) -> Incarnation<A>) -> u64 {
        let mut number = 0;
        self.slot.send_modify(|slot| {
            slot.started += 1;
            number = slot.started;
            slot.current = Some(make(number));
        });
        number
    }

    pub(super) fn exited(&self, number: u64, exit: Exit) {
        self.slot.send_modify(|slot| {
            if slot.current.as_ref().is_some_and(|i| i.number == number) {
                slot.current = None;
            }
            // An aborted incarnation may be dropped after a newer one ended.
            if slot.last_exit.as_ref().is_none_or(|(n, _)| *n <= number) {
                slot.last_exit = Some((number, exit));
            }
        });
    }
}
