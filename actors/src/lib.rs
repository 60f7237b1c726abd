#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod backoff;
mod child;
mod event;
mod exit;
mod stop;
mod supervisor;

pub use backoff::Backoff;
pub use child::{ChildRef, ChildSpec, Restart, Shutdown};
pub use event::{Events, Exit, SupervisionEvent};
pub use exit::{fail, panic_message};
pub use supervisor::{FailChild, FailChildError, Strategy, Supervisor, SupervisorHandle};

/// The names most users need.
pub mod prelude {
    pub use crate::{
        fail, Backoff, ChildRef, ChildSpec, Events, Exit, FailChild, Restart, Shutdown, Strategy,
        SupervisionEvent, Supervisor, SupervisorHandle,
    };
}
