//! The supervision subtree of one subscription.
//!
//! ```text
//! subscription:<group>:<topics>   (one-for-one, the subscription's restart limits)
//! ├── handler-0 .. handler-N-1    the user's actors, one per lane, from the factory
//! ├── dispatcher                  routes, decodes, retries, dead-letters
//! └── consumer-connection         group membership, polling, commits
//! ```
//!
//! Children start in that order and stop in reverse: the connection stops
//! polling and drains first (the dispatcher and the handlers are still there
//! to finish in-flight records), commits and leaves the group; then the
//! dispatcher and the handlers stop. A handler or dispatcher restart leaves
//! the connection, and so the group membership, untouched.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};
use kafkactor_actors::{ChildRef, ChildSpec, Events, Supervisor};

use crate::broker::{BrokerBackend, ConsumerConfig};
use crate::connection::consumer::{ConsumerConnection, ConsumerSettings, DispatchTarget};
use crate::dead_letter::DeadLetter;
use crate::dispatch::{DispatchSettings, Dispatcher};
use crate::route::Routes;
use crate::subscription::Subscription;

/// What every subscription subtree shares with the rest of the application.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    pub(crate) dead_letter: ChildRef<DeadLetter>,
    pub(crate) events: Events,
}

/// The child spec of one subscription's supervisor.
pub(crate) fn subscription_spec<A, F>(
    sub: Subscription,
    routes: Routes<A>,
    factory: Arc<F>,
    shared: Shared,
) -> ChildSpec
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + 'static,
{
    let name = format!("subscription:{}:{}", sub.group_name(), sub.topics.join(","));
    let routes = Rc::new(routes);
    let dispatch = Arc::new(DispatchSettings {
        group: Arc::from(sub.group_name()),
        retry: sub.retry,
        dead_letter: sub.dead_letter.as_deref().map(Arc::from),
        default_content_type: sub.default_content_type,
        max_record_bytes: sub.max_record_bytes,
    });
    let consumer = ConsumerSettings {
        config: ConsumerConfig {
            group: sub.group_name().to_string(),
            topics: sub.topics.clone(),
            reset: sub.reset,
        },
        max_in_flight: sub.in_flight_limit(),
        commit_interval: sub.commit_interval,
        drain_timeout: sub.drain_timeout,
    };
    let handlers: Vec<ChildRef<A>> = (0..sub.concurrency).map(|_| ChildRef::new()).collect();
    let dispatcher: ChildRef<Dispatcher<A>> = ChildRef::new();
    let connection: ChildRef<ConsumerConnection> = ChildRef::new();
    let drain = sub.drain_timeout;
    let (max_restarts, window) = sub.restart_limit;
    let backoff = sub.restart_backoff;
    let supervisor_name = name.clone();

    ChildSpec::graceful(name, move || {
        let mut tree = Supervisor::new(supervisor_name.clone())
            .events(shared.events.clone())
            .restart_limit(max_restarts, window)
            .backoff(backoff);
        for (i, handler) in handlers.iter().enumerate() {
            let factory = factory.clone();
            tree = tree.child(ChildSpec::new_with_ref(
                format!("handler-{i}"),
                handler,
                move || factory(),
            ));
        }
        let (settings, routes, lanes, dead_letter, conn) = (
            dispatch.clone(),
            routes.clone(),
            handlers.clone(),
            shared.dead_letter.clone(),
            connection.clone(),
        );
        tree = tree.child(ChildSpec::graceful_with_ref(
            "dispatcher",
            &dispatcher,
            move || {
                Dispatcher::new(
                    settings.clone(),
                    routes.clone(),
                    lanes.clone(),
                    dead_letter.clone(),
                    conn.clone(),
                )
            },
        ));
        let (backend, settings, target) =
            (shared.backend.clone(), consumer.clone(), dispatcher.clone());
        tree.child(
            ChildSpec::graceful_with_ref("consumer-connection", &connection, move || {
                let target = target.clone();
                let resolve: DispatchTarget =
                    Box::new(move || target.get_numbered().map(|(a, n)| (a.recipient(), n)));
                ConsumerConnection::new(backend.clone(), settings.clone(), resolve)
            })
            .shutdown_deadline(drain + Duration::from_secs(5)),
        )
    })
    .shutdown_deadline(drain + Duration::from_secs(10))
}
