//! Building a [`Supervisor`]: its strategy, restart limit, backoff, events
//! and children, and starting it as a root.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{Child, State, Strategy, Supervisor, SupervisorHandle};
use crate::exit::run_catching;
use crate::{Backoff, ChildSpec, Events};

impl Supervisor {
    /// A one-for-one supervisor allowing 5 restarts within 10 s.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Supervisor {
            name: name.into(),
            strategy: Strategy::OneForOne,
            max_restarts: 5,
            window: Duration::from_secs(10),
            backoff: Backoff::default(),
            events: Events::new(),
            children: Vec::new(),
            restart_times: VecDeque::new(),
            state: State::Running,
        }
    }

    /// The restart strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max` restarts within `window`; one more and the supervisor
    /// stops its children and fails, escalating to its parent.
    pub fn restart_limit(mut self, max: usize, window: Duration) -> Self {
        self.max_restarts = max;
        self.window = window;
        self
    }

    /// The delay between a failure and the restart.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Publish lifecycle events to `events` (share one across a tree).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Adds a child; children start in the order they are added.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(Child {
            spec,
            running: None,
            generation: 0,
            restarts: 0,
            failures_in_row: 0,
            started_at: Instant::now(),
        });
        self
    }

    /// Starts this supervisor as a root, outside any other supervisor.
    pub fn start_root(self) -> SupervisorHandle {
        let ctx = Context::<Supervisor>::new();
        let addr = ctx.address();
        let fut = ctx.into_future(self);
        let task = actix_rt::spawn(run_catching(fut));
        SupervisorHandle {
            addr,
            task,
            exit: None,
        }
    }
}
