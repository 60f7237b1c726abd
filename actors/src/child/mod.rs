//! Child specifications: how a supervisor starts, restarts and stops a child,
//! and [`ChildRef`], the always-current address of a supervised child.

mod child_ref;
mod incarnation;
mod own_thread;
mod restart;
mod running;
mod shutdown;
mod spec;
mod starter;

pub use child_ref::ChildRef;
pub use restart::Restart;
pub(crate) use running::Running;
pub use shutdown::Shutdown;
pub use spec::ChildSpec;
