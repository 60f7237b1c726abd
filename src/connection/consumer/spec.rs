//! The child spec of a `consumer-connection`: how a subtree (a
//! subscription, the Republisher) starts the connection that feeds it.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};
use kafkactor_actors::{ChildRef, ChildSpec};

use super::{ConsumerConnection, ConsumerSettings};
use crate::broker::BrokerBackend;
use crate::connection::protocol::{Deliver, FindReader, Reader, Refused, Released, Revoking};

/// The child spec of a `consumer-connection` that feeds `reader` (a
/// Dispatcher or the Republisher) and reports to whichever incarnation of it
/// is running.
pub(crate) fn spec<D>(
    backend: Arc<dyn BrokerBackend>,
    settings: ConsumerSettings,
    connection: &ChildRef<ConsumerConnection>,
    reader: ChildRef<D>,
    shutdown_deadline: Duration,
) -> ChildSpec
where
    D: Actor<Context = Context<D>>
        + actix::Handler<Deliver>
        + actix::Handler<Released>
        + actix::Handler<Refused>
        + actix::Handler<Revoking>,
{
    ChildSpec::graceful_with_ref("consumer-connection", connection, move || {
        let reader = reader.clone();
        let resolve: FindReader = Box::new(move || {
            reader.get_numbered().map(|(a, n)| {
                let reader = Reader {
                    deliver: a.clone().recipient(),
                    released: a.clone().recipient(),
                    refused: a.clone().recipient(),
                    revoking: a.recipient(),
                };
                (reader, n)
            })
        });
        ConsumerConnection::new(backend.clone(), settings.clone(), resolve)
    })
    .shutdown_deadline(shutdown_deadline)
}
