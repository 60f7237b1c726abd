//! The outbox's place in the supervision tree: one child per relay.
//!
//! ```text
//! outbox:<table>     the relay of one outbox table (OutboxRelayActor)
//! ```
//!
//! Started after the Producer it publishes through, stopped before it.

use kafkactor_actors::ChildSpec;

use super::{OutboxRelay, OutboxRelayActor};
use crate::observe::health::Failing;
use crate::observe::metrics::Metrics;
use crate::producer::ProducerHandle;

/// The child spec of `relay`'s actor: `outbox:<table>`, its database's
/// readiness recorded in `failing`.
pub(crate) fn relay_spec(
    relay: OutboxRelay,
    producer: ProducerHandle,
    metrics: Metrics,
    failing: Failing,
) -> ChildSpec {
    ChildSpec::graceful(relay_name(&relay), move || {
        OutboxRelayActor::new(
            relay.clone(),
            producer.clone(),
            metrics.clone(),
            failing.clone(),
        )
    })
}

/// The child id (and readiness check name) of `relay`: `outbox:<table>`.
pub(crate) fn relay_name(relay: &OutboxRelay) -> String {
    format!("outbox:{}", relay.outbox.table_name())
}
