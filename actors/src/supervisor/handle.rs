//! [`SupervisorHandle`], a running root supervisor: its address, failing
//! its children, waiting for it and shutting it down.

use actix::prelude::*;
use tokio::task::JoinHandle;

use super::{FailChild, FailChildError, Supervisor};
use crate::exit::panic_message;
use crate::{Exit, Shutdown};

/// A running root supervisor: its address and the task whose result is its [`Exit`].
#[derive(Debug)]
pub struct SupervisorHandle {
    pub(super) addr: Addr<Supervisor>,
    pub(super) task: JoinHandle<Exit>,
    /// The exit, once the task has been joined (a `JoinHandle` yields it once).
    pub(super) exit: Option<Exit>,
}

impl SupervisorHandle {
    /// The supervisor's address.
    pub fn addr(&self) -> &Addr<Supervisor> {
        &self.addr
    }

    /// Makes the child at `path` fail with `reason` (see [`FailChild`]).
    pub async fn fail_child(&self, path: &str, reason: &str) -> Result<(), FailChildError> {
        self.addr
            .send(FailChild {
                path: path.to_string(),
                reason: reason.to_string(),
            })
            .await
            .unwrap_or_else(|e| {
                Err(FailChildError::Unavailable(format!(
                    "supervisor unavailable: {e}"
                )))
            })
    }

    /// True once the supervisor has stopped (after shutdown or escalation).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the supervisor stops on its own; an escalation gives
    /// [`Exit::Failed`] with the reason. May be called again: it answers the
    /// same exit.
    pub async fn wait(&mut self) -> Exit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = join_exit(&mut self.task).await;
        self.exit = Some(exit.clone());
        exit
    }

    /// Stops every child in reverse order, each within its deadline, and
    /// returns how the supervisor ended (its earlier exit if it had already
    /// stopped on its own).
    pub async fn shutdown(mut self) -> Exit {
        if self.exit.is_none() {
            self.addr.do_send(Shutdown);
        }
        self.wait().await
    }
}

async fn join_exit(task: &mut JoinHandle<Exit>) -> Exit {
    match task.await {
        Ok(exit) => exit,
        Err(e) if e.is_panic() => Exit::Panicked(panic_message(&*e.into_panic())),
        Err(_) => Exit::Killed,
    }
}
