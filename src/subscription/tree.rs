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
use crate::connection::producer::Writer;
use crate::dead_letter::DeadLetter;
use crate::observe::health::Failing;
use crate::observe::lineage::Tap;
use crate::observe::metrics::Metrics;
use crate::subscription::dispatcher::{DispatchSettings, Dispatcher, Parking};
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
    /// Writes to its retry topics (the application's producer connection).
    pub(crate) writer: Writer,
    /// How long a write may take.
    pub(crate) delivery_timeout: Duration,
    /// The producer of its broker, for its handlers' publishes.
    pub(crate) producer: crate::producer::ProducerHandle,
    /// The producers of the application's other brokers, by name.
    pub(crate) others: crate::delivery::outlet::Publishers,
}

/// What a member of `sub`'s group is.
fn consumer_config(sub: &Subscription) -> ConsumerConfig {
    ConsumerConfig {
        group: sub.group_name().to_string(),
        // With their retry topics, read by the same member partition by
        // partition.
        topics: sub
            .topics
            .iter()
            .cloned()
            .chain(
                sub.retry_topics()
                    .pairs()
                    .map(|(_, retry)| retry.to_string()),
            )
            .collect(),
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
    let escalate = sub.on_restart_limit == OnRestartLimit::Escalate;
    let drain = sub.drain_timeout;
    let subtree = Subtree::new(name.clone(), sub, routes, factory, parts);
    let spec = ChildSpec::graceful(name, move || subtree.supervisor())
        .shutdown_deadline(drain.saturating_add(Duration::from_secs(10)))
        // Subscriptions are independent: on shutdown all stop taking
        // records at once and drain side by side.
        .stops_with_siblings();
    if escalate {
        spec.significant()
    } else {
        spec
    }
}

/// What the Dispatcher and the lanes of `sub` know of it.
fn dispatch_settings(sub: &Subscription, parts: &Parts) -> DispatchSettings {
    DispatchSettings {
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
        retry_topics: sub.retry_topics(),
        writer: parts.writer.clone(),
        delivery_timeout: parts.delivery_timeout,
        outlet: Some(Arc::new(crate::delivery::outlet::Registration::new(
            crate::delivery::outlet::Outlet {
                publisher: Arc::new(parts.producer.clone()),
                transactional: sub.transactional,
                others: parts.others.clone(),
            },
        ))),
        batch: sub.batch.unwrap_or(DEFAULT_BATCH),
        lanes_by_partition: sub.lanes_by_partition,
    }
}

/// A batch handler's batch size and linger unless its subscription says.
pub(crate) const DEFAULT_BATCH: (usize, Duration) = (100, Duration::ZERO);

/// What the consumer connection of `sub` is; `partitions` is what it
/// learns of the topics a transactional subscription's handlers publish to.
fn consumer_settings(
    sub: &Subscription,
    parts: &Parts,
    partitions: &PartitionCounts,
) -> ConsumerSettings {
    ConsumerSettings {
        config: consumer_config(sub),
        max_in_flight: sub.in_flight_limit(),
        refill: consumer::REFILL,
        commit_interval: sub.commit_interval,
        drain_timeout: sub.drain_timeout,
        transactional: sub.transactional.then(|| partitions.clone()),
        in_flight: parts
            .metrics
            .collectors()
            .in_flight
            .with_label_values(&[sub.group_name()]),
        retry_topics: sub.retry_topics(),
    }
}

/// How to build one subscription's supervisor, once per incarnation of it.
struct Subtree<A: Actor<Context = Context<A>>, F> {
    name: String,
    events: Events,
    backend: Arc<dyn BrokerBackend>,
    /// The subscription's restart limit and backoff.
    limit: (usize, Duration),
    backoff: kafkactor_actors::Backoff,
    /// Whether a crash loop of the handlers stops the application.
    escalate: bool,
    drain: Duration,
    handlers: Vec<ChildRef<A>>,
    dispatcher: ChildRef<Dispatcher<A>>,
    connection: ChildRef<ConsumerConnection>,
    dead_letter: ChildRef<DeadLetter>,
    factory: Arc<F>,
    routes: Rc<Routes<A>>,
    settings: Arc<DispatchSettings>,
    consumer: ConsumerSettings,
    /// What a transactional subscription's outputs are checked against.
    transactional: Option<Transactional>,
}

impl<A, F> Subtree<A, F>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + 'static,
{
    fn new(
        name: String,
        sub: Subscription,
        routes: Routes<A>,
        factory: Arc<F>,
        parts: Parts,
    ) -> Self {
        let settings = Arc::new(dispatch_settings(&sub, &parts));
        let partitions = PartitionCounts::default();
        let consumer = consumer_settings(&sub, &parts, &partitions);
        let transactional = sub.transactional.then_some(Transactional {
            max_bytes: parts.max_record_bytes,
            partitions,
        });
        Subtree {
            name,
            events: parts.events,
            backend: parts.backend,
            limit: sub.restart_limit,
            backoff: sub.restart_backoff,
            escalate: sub.on_restart_limit == OnRestartLimit::Escalate,
            drain: sub.drain_timeout,
            handlers: (0..sub.concurrency).map(|_| ChildRef::new()).collect(),
            dispatcher: ChildRef::new(),
            connection: parts.connection,
            dead_letter: parts.dead_letter,
            factory,
            routes: Rc::new(routes),
            settings,
            consumer,
            transactional,
        }
    }

    /// The subscription's supervisor: handlers, dispatcher, connection.
    fn supervisor(&self) -> Supervisor {
        // The lanes of this incarnation of the subtree, shared by its
        // dispatcher and handlers (each restart of either keeps them).
        let board = Board::shared(self.handlers.len());
        board.borrow_mut().transactional = self.transactional.clone();
        // What is in the retry path, rebuilt from the log by each incarnation.
        let parking = (!self.settings.retry_topics.is_empty()).then(Parking::shared);
        let (max_restarts, window) = self.limit;
        Supervisor::new(self.name.clone())
            .events(self.events.clone())
            .restart_limit(max_restarts, window)
            .backoff(self.backoff)
            .child(self.handlers_spec(&board))
            .child(self.dispatcher_spec(board, parking))
            .child(consumer::spec(
                self.backend.clone(),
                self.consumer.clone(),
                &self.connection,
                self.dispatcher.clone(),
                self.drain.saturating_add(Duration::from_secs(5)),
            ))
    }

    /// `handlers`: the supervisor of the lanes' handler actors.
    fn handlers_spec(&self, board: &SharedBoard) -> ChildSpec {
        let (max_restarts, window) = self.limit;
        let handlers = Handlers {
            name: format!("{}/handlers", self.name),
            events: self.events.clone(),
            backoff: self.backoff,
            limit: (
                if self.escalate {
                    max_restarts
                } else {
                    usize::MAX
                },
                window,
            ),
            handlers: self.handlers.clone(),
            factory: self.factory.clone(),
            board: board.clone(),
            routes: self.routes.clone(),
            settings: self.settings.clone(),
        };
        let spec = ChildSpec::graceful("handlers", move || handlers.supervisor());
        if self.escalate {
            spec.significant()
        } else {
            spec
        }
    }

    /// `dispatcher`.
    fn dispatcher_spec(
        &self,
        board: SharedBoard,
        parking: Option<crate::subscription::dispatcher::SharedParking>,
    ) -> ChildSpec {
        let (settings, handlers, dead_letter, connection) = (
            self.settings.clone(),
            self.handlers.clone(),
            self.dead_letter.clone(),
            self.connection.clone(),
        );
        ChildSpec::graceful_with_ref("dispatcher", &self.dispatcher, move || {
            Dispatcher::new(
                settings.clone(),
                board.clone(),
                handlers.clone(),
                dead_letter.clone(),
                connection.clone(),
                parking.clone(),
            )
        })
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
