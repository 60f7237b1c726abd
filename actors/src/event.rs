//! Supervision as data: the lifecycle events a [`Supervisor`](crate::Supervisor)
//! publishes, and the channel to observe them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

/// Why a child stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// The child stopped on its own (or was asked to) with no failure.
    Normal,
    /// The child stopped itself with [`fail`](crate::fail) and this reason.
    Failed(String),
    /// A handler or future of the child panicked; the panic message.
    Panicked(String),
    /// The child did not finish its shutdown within its deadline and was aborted.
    Killed,
}

impl Exit {
    /// True for every exit that is not [`Exit::Normal`].
    pub fn is_failure(&self) -> bool {
        !matches!(self, Exit::Normal)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Normal => f.write_str("normal exit"),
            Exit::Failed(r) => write!(f, "failed: {r}"),
            Exit::Panicked(r) => write!(f, "panicked: {r}"),
            Exit::Killed => f.write_str("killed after shutdown deadline"),
        }
    }
}

/// One lifecycle event of a supervised child, or of the supervisor itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisionEvent {
    /// The child was started (first time).
    Started {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
    },
    /// The child exited with a failure.
    Failed {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// The failure.
        exit: Exit,
    },
    /// The child will be restarted after `delay`.
    Restarting {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// Backoff before the restart.
        delay: Duration,
    },
    /// The child was started again from its factory.
    Restarted {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// How many restarts this child has had in total.
        restarts: u64,
    },
    /// The child stopped: it exited and its restart policy does not restart
    /// it, or its supervisor stopped it (on shutdown, on escalation, or as
    /// part of a one-for-all / rest-for-one group, in which case a
    /// [`Restarting`](SupervisionEvent::Restarting) event for it came first).
    Stopped {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// How it stopped.
        exit: Exit,
    },
    /// The child keeps running but could not do all of its job; `reason`
    /// says what it did instead (a dead letter written without its
    /// payload, a write it keeps retrying, ..).
    Degraded {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// Child id.
        child: Arc<str>,
        /// What went wrong and what was done about it.
        reason: String,
    },
    /// The supervisor exceeded its restart intensity and gave up.
    Escalated {
        /// Supervisor name.
        supervisor: Arc<str>,
        /// What made it give up.
        reason: String,
    },
}

/// A cloneable source of [`SupervisionEvent`]s. Every clone publishes to the
/// same subscribers; a supervisor tree usually shares one.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<SupervisionEvent>,
    log: Arc<Mutex<Option<Vec<SupervisionEvent>>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A new event channel.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Events {
            tx,
            log: Arc::new(Mutex::new(None)),
        }
    }

    /// Subscribe to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.tx.subscribe()
    }

    /// Keep every event from now on in memory, to be read with [`Events::recorded`].
    /// Meant for tests and diagnostics.
    pub fn record(&self) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.get_or_insert_with(Vec::new);
    }

    /// The events kept since [`Events::record`] was called.
    pub fn recorded(&self) -> Vec<SupervisionEvent> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.clone().unwrap_or_default()
    }

    /// Publishes `event` to every subscriber. Supervisors publish the
    /// lifecycle events; a child publishes [`SupervisionEvent::Degraded`]
    /// about itself.
    pub fn publish(&self, event: SupervisionEvent) {
        tracing::debug!(?event, "supervision");
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = log.as_mut() {
                log.push(event.clone());
            }
        }
        let _ = self.tx.send(event);
    }
}
