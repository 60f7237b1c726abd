//! The `Supervisor` actor: starts children in order, restarts them by strategy
//! within a restart intensity, escalates past it, and stops them in reverse order.
//!
//! Messages: [`Shutdown`] (stop every child in reverse order, each within its
//! deadline, then stop), [`FailChild`] (make a child, or a child of a nested
//! supervisor, fail with a reason), and an internal exit notice from each child.
//! It owns its children's tasks. When a supervisor is itself restarted, its
//! children are started afresh from their factories. No child outlives its
//! supervisor: one whose context is stopped some other way first stops its
//! children in reverse order, and one that is dropped (aborted past its own
//! deadline) aborts them.
//!
//! Restarting a group (one-for-all, rest-for-one) stops the rest of the group
//! before the mailbox is read again; the backoff before the start does not
//! hold the mailbox.
//!
//! [`Shutdown`]: crate::Shutdown

mod actor;
mod builder;
mod fail_child;
mod handle;
mod restart;
mod shutdown;
mod strategy;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::child::Running;
use crate::{Backoff, ChildSpec, Events};

pub use fail_child::{FailChild, FailChildError};
pub use handle::SupervisorHandle;
pub use strategy::Strategy;

struct Child {
    spec: ChildSpec,
    running: Option<Running>,
    generation: u64,
    restarts: u64,
    failures_in_row: u32,
    started_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Stopping,
}

/// A supervisor of actix actors; see the [crate docs](crate).
pub struct Supervisor {
    name: Arc<str>,
    strategy: Strategy,
    max_restarts: usize,
    window: Duration,
    backoff: Backoff,
    events: Events,
    children: Vec<Child>,
    restart_times: VecDeque<Instant>,
    state: State,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("window", &self.window)
            .field("children", &self.children.len())
            .finish()
    }
}
