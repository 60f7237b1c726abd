//! [`Restart`], the policy that decides whether a child that exited is
//! started again.

use crate::Exit;

/// When a child that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always restarted, whatever the exit.
    #[default]
    Permanent,
    /// Restarted only after a failure (panic, [`fail`](crate::fail), kill).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    pub(crate) fn restarts_after(self, exit: &Exit) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => exit.is_failure(),
            Restart::Temporary => false,
        }
    }
}
