//! The supervision subtree of one subscription.
//!
//! ```text
//! subscription:<group>:<topics>   one-for-one, the subscription's restart limit
//! ├── handlers                    one-for-one supervisor of the lanes
//! │   └── handler-0 .. handler-N-1  the user's actors, one per lane, from the factory
//! ├── dispatcher                  routes, decodes, retries, dead-letters
//! └── consumer-connection         group membership, polling, commits
//! ```
//!
//! Children start in that order and stop in reverse: the connection stops
//! polling and drains first (the dispatcher and the handlers are still there
//! to finish in-flight records), commits and leaves the group; then the
//! dispatcher and the handlers stop. A handler or dispatcher restart leaves
//! the connection, and so the group membership, untouched.
//!
//! Handler crash loops follow [`OnRestartLimit`]: with `DeadLetter` the
//! `handlers` supervisor restarts lanes without limit (the dispatcher stops
//! retrying records while the limit is exceeded); with `Escalate` it has the
//! subscription's limit and is significant, as is the subscription subtree
//! under the root, so the failure stops the application.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context};
use kafkactor_actors::{ChildRef, ChildSpec, Events, Supervisor};

use crate::broker::{BrokerBackend, ConsumerConfig, PartitionCounts};
use crate::connection::consumer::{self, ConsumerConnection, ConsumerSettings};
use crate::dead_letter::DeadLetter;
use crate::observe::health::Failing;
use crate::observe::lineage::Tap;
use crate::observe::metrics::Metrics;
use crate::subscription::dispatcher::{DispatchSettings, Dispatcher};
use crate::subscription::lane::{Board, Runner, SharedBoard};
use crate::subscription::route::Routes;
use crate::subscription::transaction::Transactional;
use crate::subscription::{OnRestartLimit, Subscription};

/// What the application gives a subscription's subtree.
pub(crate) struct Parts {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    pub(crate) events: Events,
    /// Where it dead-letters.
    pub(crate) dead_letter: ChildRef<DeadLetter>,
    /// Its consumer connection, which the application asks what it owns.
    pub(crate) connection: ChildRef<ConsumerConnection>,
    pub(crate) metrics: Metrics,
    /// Where lineage events go, when on.
    pub(crate) lineage: Option<Tap>,
    /// The largest record the application publishes (what a transactional
    /// handler's outputs are checked against).
    pub(crate) max_record_bytes: usize,
    /// The readiness check of its handlers.
    pub(crate) handlers_health: Failing,
}

/// What a member of `sub`'s group is.
fn consumer_config(sub: &Subscription) -> ConsumerConfig {
    ConsumerConfig {
        group: sub.group_name().to_string(),
        topics: sub.topics.clone(),
        reset: sub.reset,
        revoke_timeout: sub.drain_timeout.saturating_add(Duration::from_secs(5)),
        // Read ahead while the handlers are busy: bounded by the
        // subscription's own setting (the Kafka client also bounds it in
        // bytes, and reads at least a thousand).
        prefetch: sub.in_flight_limit(),
        fetch_wait: None,
    }
}

/// The child spec of one subscription's supervisor.
pub(crate) fn subscription_spec<A, F>(
    sub: Subscription,
    routes: Routes<A>,
    factory: Arc<F>,
    parts: Parts,
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
        handler_timeout: sub.handler_timeout,
        handler_restart_limit: match sub.on_restart_limit {
            OnRestartLimit::DeadLetter => Some(sub.restart_limit),
            OnRestartLimit::Escalate => None,
        },
        metrics: parts.metrics.clone(),
        lineage: parts.lineage.clone(),
        idempotency: sub.idempotency.clone(),
        member: Arc::from(uuid::Uuid::now_v7().to_string()),
        health: parts.handlers_health.clone(),
    });
    // What the connection learns of the topics a transactional
    // subscription's handlers publish to, for their publishes' checks.
    let partitions = PartitionCounts::default();
    let consumer = ConsumerSettings {
        config: consumer_config(&sub),
        max_in_flight: sub.in_flight_limit(),
        commit_interval: sub.commit_interval,
        drain_timeout: sub.drain_timeout,
        transactional: sub.transactional.then(|| partitions.clone()),
        in_flight: parts
            .metrics
            .collectors()
            .in_flight
            .with_label_values(&[sub.group_name()]),
    };
    let parts_max_bytes = parts.max_record_bytes;
    let Parts {
        backend,
        events,
        dead_letter,
        connection,
        ..
    } = parts;
    let handlers: Vec<ChildRef<A>> = (0..sub.concurrency).map(|_| ChildRef::new()).collect();
    let dispatcher: ChildRef<Dispatcher<A>> = ChildRef::new();
    let drain = sub.drain_timeout;
    let (max_restarts, window) = sub.restart_limit;
    let backoff = sub.restart_backoff;
    let supervisor_name = name.clone();

    let escalate = sub.on_restart_limit == OnRestartLimit::Escalate;
    let (transactional, max_record_bytes) = (sub.transactional, parts_max_bytes);
    let spec = ChildSpec::graceful(name, move || {
        // The lanes of this incarnation of the subtree, shared by its
        // dispatcher and handlers (each restart of either keeps them).
        let board = Board::shared(handlers.len());
        board.borrow_mut().transactional = transactional.then(|| Transactional {
            max_bytes: max_record_bytes,
            partitions: partitions.clone(),
        });
        let lanes = Handlers {
            name: format!("{supervisor_name}/handlers"),
            events: events.clone(),
            backoff,
            limit: (if escalate { max_restarts } else { usize::MAX }, window),
            handlers: handlers.clone(),
            factory: factory.clone(),
            board: board.clone(),
            routes: routes.clone(),
            settings: dispatch.clone(),
        };
        let mut lanes_spec = ChildSpec::graceful("handlers", move || lanes.supervisor());
        if escalate {
            lanes_spec = lanes_spec.significant();
        }
        let mut tree = Supervisor::new(supervisor_name.clone())
            .events(events.clone())
            .restart_limit(max_restarts, window)
            .backoff(backoff)
            .child(lanes_spec);
        let (settings, lanes, dead_letter, conn) = (
            dispatch.clone(),
            handlers.clone(),
            dead_letter.clone(),
            connection.clone(),
        );
        tree = tree.child(ChildSpec::graceful_with_ref(
            "dispatcher",
            &dispatcher,
            move || {
                Dispatcher::new(
                    settings.clone(),
                    board.clone(),
                    lanes.clone(),
                    dead_letter.clone(),
                    conn.clone(),
                )
            },
        ));
        tree.child(consumer::spec(
            backend.clone(),
            consumer.clone(),
            &connection,
            dispatcher.clone(),
            drain.saturating_add(Duration::from_secs(5)),
        ))
    })
    .shutdown_deadline(drain.saturating_add(Duration::from_secs(10)))
    // Subscriptions are independent: on shutdown all stop taking records at
    // once and drain side by side.
    .stops_with_siblings();
    if escalate {
        spec.significant()
    } else {
        spec
    }
}

/// How to build the supervisor of a subscription's handler lanes.
struct Handlers<A: Actor, F> {
    name: String,
    events: Events,
    backoff: kafkactor_actors::Backoff,
    limit: (usize, Duration),
    handlers: Vec<ChildRef<A>>,
    factory: Arc<F>,
    board: SharedBoard,
    routes: Rc<Routes<A>>,
    settings: Arc<DispatchSettings>,
}

impl<A, F> Handlers<A, F>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + 'static,
{
    fn supervisor(&self) -> Supervisor {
        let mut lanes = Supervisor::new(self.name.clone())
            .events(self.events.clone())
            .backoff(self.backoff)
            .restart_limit(self.limit.0, self.limit.1);
        for (i, handler) in self.handlers.iter().enumerate() {
            let factory = self.factory.clone();
            let (board, routes, settings) = (
                self.board.clone(),
                self.routes.clone(),
                self.settings.clone(),
            );
            // Each incarnation takes the lane's records with a runner in
            // its own context.
            lanes = lanes.child(ChildSpec::create_with_ref(
                format!("handler-{i}"),
                handler,
                move |ctx: &mut Context<A>, incarnation| {
                    let runner = Runner::new(
                        board.clone(),
                        i,
                        incarnation,
                        routes.clone(),
                        settings.clone(),
                    );
                    ctx.spawn(runner);
                    factory()
                },
            ));
        }
        lanes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a member reads ahead while its handlers are busy is bounded by
    /// the subscription's `max_in_flight` (it was at least 10,000 records).
    #[test]
    fn read_ahead_is_the_subscriptions_in_flight_bound() {
        let sub = Subscription::to("t").group("g").max_in_flight(64);
        assert_eq!(consumer_config(&sub).prefetch, 64);
        let sub = Subscription::to("t").group("g").concurrency(2);
        assert_eq!(consumer_config(&sub).prefetch, 512);
    }
}
