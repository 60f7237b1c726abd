//! The application: [`Kafkactor::builder`] assembles the supervision tree,
//! [`App`] runs it. This folder is the root of the tree; every subtree is
//! built by its own folder's `tree.rs` from the parts given here.
//!
//! ```text
//! kafkactor                       root supervisor, one-for-one
//! ├── producer-connection         the application's producer client    app/outbound.rs
//! ├── producer                    Publish -> PublishOutcome            app/outbound.rs
//! ├── dead-letter                 failed records -> dead-letter topics app/outbound.rs
//! ├── lineage                     lineage events -> their topic        app/lineage.rs
//! ├── replies:<topic>[<p>]        the reply partition, no group        request/tree.rs
//! ├── outbox:<table>              one per outbox relay (postgres)      outbox/tree.rs
//! ├── republisher                 delay buckets -> destinations        delay/tree.rs
//! │   ├── producer-connection
//! │   ├── consumer-connection
//! │   └── republisher
//! ├── subscription:<group>:<topics>   one per subscription             subscription/tree.rs
//! │   ├── handlers
//! │   │   └── handler-0 .. handler-N-1
//! │   ├── dispatcher
//! │   └── consumer-connection
//! └── http                        /metrics, /health/*                  app/http.rs
//! ```
//!
//! Children start in that order (each only when its feature is on) and
//! stop in reverse, each draining first: the subscriptions finish and
//! commit their in-flight records while lineage, the dead-letter actor and
//! the producer can still write.
//!
//! Files: `builder.rs` (the settings), `start.rs` (the start order),
//! `running.rs` ([`App`]), `outbound.rs`, `lineage.rs` and `http.rs` (the
//! root's own children), `health.rs` (what the application observes of its
//! subtrees).

mod builder;
mod declared;
mod health;
mod http;
mod lineage;
mod outbound;
mod running;
mod start;

pub use builder::{AppBuilder, Kafkactor};
pub use declared::{DeclaredHandler, Subscriber};
pub use running::App;
