//! The child spec of a `consumer-connection`: how a subtree (a
//! subscription, the Republisher) starts the connection that feeds it.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};
use kafkactor_actors::{ChildRef, ChildSpec};

use super::{ConsumerConnection, ConsumerSettings};
use crate::broker::BrokerBackend;
use crate::connection::protocol::{Consumer, Deliver, FindConsumer, Refused, Released};

/// The child spec of a `consumer-connection` that feeds `target` (a
/// Dispatcher or the Republisher) and reports to whichever incarnation of it
/// is running.
pub(crate) fn spec<D>(
    backend: Arc<dyn BrokerBackend>,
    settings: ConsumerSettings,
    connection: &ChildRef<ConsumerConnection>,
    target: ChildRef<D>,
    shutdown_deadline: Duration,
) -> ChildSpec
where
    D: Actor<Context = Context<D>>
        + actix::Handler<Deliver>
        + actix::Handler<Released>
        + actix::Handler<Refused>,
{
    ChildSpec::graceful_with_ref("consumer-connection", connection, move || {
        let target = target.clone();
        let resolve: FindConsumer = Box::new(move || {
            target.get_numbered().map(|(a, n)| {
                let target = Consumer {
                    deliver: a.clone().recipient(),
                    released: a.clone().recipient(),
                    refused: a.recipient(),
                };
                (target, n)
            })
        });
        ConsumerConnection::new(backend.clone(), settings.clone(), resolve)
    })
    .shutdown_deadline(shutdown_deadline)
}
