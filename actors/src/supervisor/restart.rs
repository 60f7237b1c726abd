//! Restarting: how a supervisor handles a child's exit notice, within its
//! restart intensity, with backoff, by strategy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::wrap_future;
use actix::prelude::*;

use super::{State, Strategy, Supervisor};
use crate::{Exit, Restart, SupervisionEvent};

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ChildExited {
    pub(super) index: usize,
    pub(super) generation: u64,
    pub(super) exit: Exit,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let ChildExited {
            index,
            generation,
            exit,
        } = msg;
        if self.state != State::Running || self.children[index].generation != generation {
            return;
        }
        self.children[index].running = None;
        let (supervisor, child) = self.event_child(index);
        if exit.is_failure() {
            self.events.publish(SupervisionEvent::Failed {
                supervisor: supervisor.clone(),
                child: child.clone(),
                exit: exit.clone(),
            });
        }
        if exit.is_failure() && self.children[index].spec.significant {
            let reason = format!("significant child `{child}` {exit}");
            self.escalate(reason, ctx);
            return;
        }
        if !self.children[index].spec.restart.restarts_after(&exit) {
            self.events.publish(SupervisionEvent::Stopped {
                supervisor,
                child,
                exit,
            });
            return;
        }
        if let Some(reason) = self.over_restart_limit(&child, &exit) {
            self.escalate(reason, ctx);
            return;
        }
        let delay = self.next_delay(index);
        self.restart_group(index, delay, ctx);
    }
}

impl Supervisor {
    /// Counts a restart; past the restart intensity, the reason to escalate.
    fn over_restart_limit(&mut self, child: &Arc<str>, exit: &Exit) -> Option<String> {
        let now = Instant::now();
        self.restart_times.push_back(now);
        while let Some(&t) = self.restart_times.front() {
            if now.duration_since(t) > self.window {
                self.restart_times.pop_front();
            } else {
                break;
            }
        }
        (self.restart_times.len() > self.max_restarts).then(|| {
            format!(
                "child `{child}` {exit}; more than {} restarts within {:?}",
                self.max_restarts, self.window
            )
        })
    }

    /// The backoff before child `index` restarts, counting its failure.
    fn next_delay(&mut self, index: usize) -> Duration {
        let c = &mut self.children[index];
        if c.started_at.elapsed() >= self.backoff.reset_after {
            c.failures_in_row = 0;
        }
        let delay = self.backoff.delay(c.failures_in_row);
        c.failures_in_row = c.failures_in_row.saturating_add(1);
        delay
    }

    /// The children the strategy restarts when child `index` exits.
    fn group_of(&self, index: usize) -> Vec<usize> {
        let n = self.children.len();
        match self.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..n).collect(),
            Strategy::RestForOne => (index..n).collect(),
        }
    }

    /// Stops the rest of child `index`'s group, then starts the group again
    /// after `delay`.
    fn restart_group(&mut self, index: usize, delay: Duration, ctx: &mut Context<Self>) {
        let group = self.group_of(index);
        let detached = self.detach(group.iter().rev().copied().filter(|&i| i != index));
        // A temporary sibling stopped with its group is not restarted.
        let group: Vec<usize> = group
            .into_iter()
            .filter(|&i| i == index || self.children[i].spec.restart != Restart::Temporary)
            .collect();
        for &i in &group {
            let (supervisor, child) = self.event_child(i);
            self.events.publish(SupervisionEvent::Restarting {
                supervisor,
                child,
                delay,
            });
        }
        // Bump the generation of the failed child too, so a stale notice from
        // its previous incarnation can never be taken for the new one.
        self.children[index].generation += 1;
        // Remember each generation: a child whose pending restart is taken
        // over by a later group restart (which bumps it) is not started twice.
        let group: Vec<(usize, u64)> = group
            .into_iter()
            .map(|i| (i, self.children[i].generation))
            .collect();
        let restart = start_after(group, delay);
        if detached.is_empty() {
            ctx.spawn(restart);
        } else {
            // As in OTP, the rest of the group is stopped before anything else
            // is handled: a `Shutdown` or another exit waits until the group is
            // down (and cannot cut a draining sibling short). The backoff that
            // follows does not hold the mailbox.
            ctx.wait(
                self.stop_in_order(detached)
                    .map(move |(), _act, ctx: &mut Context<Self>| {
                        ctx.spawn(restart);
                    }),
            );
        }
    }
}

/// Starts each child of `group` after `delay`, unless a later restart took
/// it over (its generation changed) or the supervisor is stopping.
fn start_after(
    group: Vec<(usize, u64)>,
    delay: Duration,
) -> impl ActorFuture<Supervisor, Output = ()> + 'static {
    wrap_future::<_, Supervisor>(tokio::time::sleep(delay)).map(
        move |(), act: &mut Supervisor, ctx: &mut Context<Supervisor>| {
            if act.state != State::Running {
                return;
            }
            for &(i, generation) in &group {
                if act.children[i].generation != generation {
                    continue;
                }
                act.start_child(i, ctx);
                let c = &mut act.children[i];
                c.restarts += 1;
                let restarts = c.restarts;
                let (supervisor, child) = act.event_child(i);
                act.events.publish(SupervisionEvent::Restarted {
                    supervisor,
                    child,
                    restarts,
                });
            }
        },
    )
}
