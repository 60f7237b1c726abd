//! [`Shutdown`], the message that asks a graceful child to drain and stop.

use actix::Message;

/// Asks a supervised child to finish its in-flight work and stop.
///
/// Children built with [`ChildSpec::graceful`](crate::ChildSpec::graceful)
/// receive it when their supervisor stops them; the supervisor waits until
/// the child's shutdown deadline, then aborts it. A handler with nothing to
/// drain simply calls `ctx.stop()`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;
