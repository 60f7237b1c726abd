//! [`FailChild`]: making a running child, or a child of a nested
//! supervisor, fail with a reason; and [`FailChildError`], why it reached
//! no child.

use std::fmt;

use actix::prelude::*;

use super::Supervisor;
use crate::child::Running;

/// Makes a running child fail with `reason`, as if it had stopped itself
/// with [`fail`](crate::fail): its supervisor then applies the child's restart
/// policy. For fault-injection tests and operators ("kill that actor").
///
/// `path` names the child by id; children of nested supervisors are reached
/// with `/`, e.g. `"subscription/dispatcher"`. Answers a [`FailChildError`]
/// when no running child has that path.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), FailChildError>")]
pub struct FailChild {
    /// Child ids from this supervisor down, separated by `/`.
    pub path: String,
    /// The failure reason reported for the child.
    pub reason: String,
}

/// Why [`FailChild`] reached no child; each variant holds a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailChildError {
    /// No child has that id (the description lists the children there are).
    NoSuchChild(String),
    /// The child is not running at the moment (it is being restarted).
    NotRunning(String),
    /// The path goes on below a child that is not a supervisor.
    NotASupervisor(String),
    /// A supervisor on the way could not be reached.
    Unavailable(String),
}

impl fmt::Display for FailChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailChildError::NoSuchChild(d)
            | FailChildError::NotRunning(d)
            | FailChildError::NotASupervisor(d)
            | FailChildError::Unavailable(d) => f.write_str(d),
        }
    }
}

impl std::error::Error for FailChildError {}

impl Handler<FailChild> for Supervisor {
    type Result = ResponseFuture<Result<(), FailChildError>>;

    fn handle(&mut self, msg: FailChild, _: &mut Context<Self>) -> Self::Result {
        let (head, rest) = match msg.path.split_once('/') {
            Some((head, rest)) => (head, Some(rest)),
            None => (msg.path.as_str(), None),
        };
        let running = match self.running_child(head) {
            Ok(running) => running,
            Err(error) => return Box::pin(async move { Err(error) }),
        };
        match (rest, &running.nested) {
            (None, _) => {
                (running.fail)(msg.reason);
                Box::pin(async { Ok(()) })
            }
            (Some(rest), Some(nested)) => {
                let nested = nested.clone();
                let msg = FailChild {
                    path: rest.to_string(),
                    reason: msg.reason,
                };
                Box::pin(async move {
                    nested.send(msg).await.unwrap_or_else(|e| {
                        Err(FailChildError::Unavailable(format!(
                            "nested supervisor unavailable: {e}"
                        )))
                    })
                })
            }
            (Some(_), None) => {
                let error =
                    FailChildError::NotASupervisor(format!("child `{head}` is not a supervisor"));
                Box::pin(async move { Err(error) })
            }
        }
    }
}

impl Supervisor {
    /// The running child with id `head`.
    fn running_child(&self, head: &str) -> Result<&Running, FailChildError> {
        let Some(child) = self.children.iter().find(|c| &*c.spec.id == head) else {
            let known: Vec<&str> = self.children.iter().map(|c| &*c.spec.id).collect();
            return Err(FailChildError::NoSuchChild(format!(
                "supervisor `{}` has no child `{head}` (children: {known:?})",
                self.name
            )));
        };
        child.running.as_ref().ok_or_else(|| {
            FailChildError::NotRunning(format!("child `{head}` of `{}` is not running", self.name))
        })
    }
}
