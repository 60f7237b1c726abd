//! The application: [`Kafkactor::builder`] assembles the supervision tree,
//! [`App`] runs it.
//!
//! ```text
//! kafkactor (root supervisor, one-for-one)
//! ├── producer-connection   broker producer client
//! ├── producer              Publish -> PublishOutcome
//! ├── dead-letter           failed records -> dead-letter topics
//! ├── republisher           delay buckets -> destinations when due (with `delays`)
//! └── subscription:<group>:<topics> ...   one subtree per subscription
//! ```
//!
//! Children start in that order and stop in reverse, each draining first:
//! subscriptions finish and commit their in-flight records while the
//! dead-letter actor and the producer can still write.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use kafkactor_actors::{
    Backoff, ChildRef, ChildSpec, Events, Exit, FailChildError, Supervisor, SupervisorHandle,
};
use serde::de::DeserializeOwned;

use crate::broker::{Broker, BrokerBackend};
use crate::connection::consumer::{ConsumerConnection, Owned};
use crate::delay::tree::republisher_spec;
use crate::delay::Delays;
use crate::delivery::{Delivery, Outcome};
use crate::error::{Error, Result};
use crate::observe::health::{Consumer, Health, Observed};
use crate::observe::http::HttpEndpoints;
use crate::observe::lineage::{Lineage, Tap};
use crate::observe::metrics::Metrics;
use crate::outbound::{Outbound, OutboundSettings};
use crate::producer::handle::IntakeSender;
use crate::producer::{Producer, ProducerHandle};
use crate::subscription::closure::FnHandler;
use crate::subscription::route::Routes;
use crate::subscription::tree::subscription_spec;
use crate::subscription::{Subscription, DEFAULT_MAX_RECORD_BYTES};

/// Entry point: `Kafkactor::builder()`.
#[derive(Debug, Clone, Copy)]
pub struct Kafkactor;

impl Kafkactor {
    /// A builder for an application.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            broker: None,
            subscriptions: Vec::new(),
            max_message_bytes: DEFAULT_MAX_RECORD_BYTES,
            delivery_timeout: Duration::from_secs(30),
            restart_limit: (10, Duration::from_secs(10)),
            backoff: Backoff::exponential(Duration::from_millis(10), Duration::from_secs(2)),
            events: Events::new(),
            delays: None,
            registry: None,
            metrics: true,
            http: None,
            lineage: None,
            #[cfg(feature = "postgres")]
            outbox_relays: Vec::new(),
            error: None,
        }
    }
}

/// Mailbox capacity of the publishing actors (see `ChildSpec::mailbox_capacity`).
pub(crate) const PUBLISH_MAILBOX: usize = 1 << 20;

type MakeSpec = Box<dyn FnOnce(Parts) -> ChildSpec>;

/// What [`AppBuilder::start`] gives each consumer subtree (a subscription or
/// the Republisher) it builds.
pub(crate) struct Parts {
    pub(crate) backend: Arc<dyn BrokerBackend>,
    pub(crate) events: Events,
    /// Where it dead-letters (and handlers publish).
    pub(crate) outbound: Outbound,
    /// Its consumer connection, which the application asks what it owns.
    pub(crate) connection: ChildRef<ConsumerConnection>,
    pub(crate) metrics: Metrics,
    /// Where lineage events go, when on.
    pub(crate) lineage: Option<Tap>,
    /// The largest record the application publishes.
    pub(crate) max_message_bytes: usize,
    /// A subscription's readiness check of its handlers (unused by the
    /// Republisher).
    pub(crate) handlers_health: crate::observe::health::Failing,
}

/// Assembles an application: the broker, the subscriptions and their
/// handlers, and the supervision settings. Nothing runs until [`start`](AppBuilder::start).
pub struct AppBuilder {
    broker: Option<Broker>,
    subscriptions: Vec<(Subscription, MakeSpec)>,
    max_message_bytes: usize,
    delivery_timeout: Duration,
    restart_limit: (usize, Duration),
    backoff: Backoff,
    events: Events,
    delays: Option<Delays>,
    registry: Option<prometheus::Registry>,
    metrics: bool,
    http: Option<String>,
    lineage: Option<Lineage>,
    #[cfg(feature = "postgres")]
    outbox_relays: Vec<crate::outbox::OutboxRelay>,
    error: Option<Error>,
}

impl fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("broker", &self.broker)
            .field(
                "subscriptions",
                &self
                    .subscriptions
                    .iter()
                    .map(|(s, _)| s)
                    .collect::<Vec<_>>(),
            )
            .field("max_message_bytes", &self.max_message_bytes)
            .field("delays", &self.delays)
            .finish()
    }
}

impl AppBuilder {
    /// The broker to use: [`Broker::memory`] or, with Kafka, `Broker::kafka`.
    pub fn broker(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Subscribes the handler actor built by `factory` to `sub`, for the one
    /// message type `T` it handles (`A: Handler<Delivery<T>>`).
    ///
    /// `factory` is called once per lane (`concurrency` times) and again
    /// whenever a lane's actor is restarted after a failure.
    pub fn subscribe<A, T, F>(self, sub: Subscription, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Delivery<T>>,
        <A as Handler<Delivery<T>>>::Result: 'static,
        T: DeserializeOwned + Send + 'static,
        F: Fn() -> A + 'static,
    {
        self.subscribe_routes(sub, Routes::new().route::<T>(), factory)
    }

    /// Subscribes a handler actor that accepts several message types on the
    /// same topics, told apart by the type-name header (see [`Routes`]).
    pub fn subscribe_routes<A, F>(
        mut self,
        sub: Subscription,
        routes: Routes<A>,
        factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: Fn() -> A + 'static,
    {
        if routes.is_empty() {
            self.fail(Error::Config(format!(
                "subscription to {:?} accepts no message type",
                sub.topics
            )));
            return self;
        }
        if let Err(e) = routes.check() {
            self.fail(e);
            return self;
        }
        let factory = Arc::new(factory);
        let spec_sub = sub.clone();
        self.subscriptions.push((
            sub,
            Box::new(move |parts| subscription_spec(spec_sub, routes, factory, parts)),
        ));
        self
    }

    /// Subscribes an async closure: `|d: Delivery<T>| async move { .. }`,
    /// answering an [`Outcome`] or a `Result<(), E>` (`Err` asks for a retry).
    pub fn handle<T, F, Fut, O>(self, sub: Subscription, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: Future<Output = O> + 'static,
        O: Into<Outcome> + 'static,
    {
        let handler = Arc::new(handler);
        self.subscribe::<FnHandler<T, F>, T, _>(sub, move || FnHandler::new(handler.clone()))
    }

    /// The largest record the producer accepts (key, headers and payload;
    /// default 1 MiB); larger ones fail with [`Error::RecordTooLarge`].
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// How long a publish may keep being resent after retriable failures and
    /// connection restarts before it fails (default 30 s). On Kafka it is
    /// also the client's `message.timeout.ms`: a record the broker does not
    /// acknowledge within it fails with a retriable [`Error::Produce`].
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// At most `max` restarts among the root's children (connections,
    /// producer, dead-letter, subscription subtrees) within `window`; past it
    /// the application stops and [`App::wait`] returns [`Error::Escalated`].
    pub fn restart_limit(mut self, max: usize, window: Duration) -> Self {
        self.restart_limit = (max, window);
        self
    }

    /// The delay before restarting a failed child of the root.
    pub fn restart_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Turns on delayed publishing ([`Publish::delay`](crate::Publish::delay),
    /// [`Publish::at`](crate::Publish::at)) with these buckets, and runs a
    /// Republisher in this application unless
    /// [`Delays::publish_only`]. An application with no subscriptions and
    /// `delays(..)` is a standalone Republisher.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use kafkactor::prelude::*;
    /// # use kafkactor::Delays;
    /// # async fn run() -> Result<(), kafkactor::Error> {
    /// let app = Kafkactor::builder()
    ///     .broker(Broker::memory())
    ///     .delays(Delays::default())
    ///     .start()
    ///     .await?;
    /// let reminder = Publish::to("reminders").message(&"call back")?.delay(Duration::from_secs(300));
    /// app.producer().send(reminder).await??;
    /// # Ok(()) }
    /// ```
    pub fn delays(mut self, delays: Delays) -> Self {
        self.delays = Some(delays);
        self
    }

    /// Registers the application's metrics (see [`App::metrics_registry`]
    /// for the list) on `registry`, shared with the rest of the service,
    /// instead of a registry of the application's own. Starting fails with
    /// [`Error::Config`] when they are registered there already.
    pub fn metrics_registry(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether kafkactor keeps its metrics (on by default). Off, nothing is
    /// counted or timed on the way of a record (no clock is read for a
    /// handler's duration or a publish's latency) and kafkactor's metrics
    /// are on no registry: `/metrics` serves only what the service
    /// registered itself on the [registry](Self::metrics_registry). For
    /// services measured by other means; with them on, a consumed record
    /// costs about 3 % more instructions and a published one about 1 %
    /// (`scripts/instructions.sh` measures both ways).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Serves `/metrics` (Prometheus' text format), `/health/live` and
    /// `/health/ready` (200 when ready, 503 when not, with the
    /// [`Health`](crate::Health) as JSON) over HTTP on `addr`, e.g.
    /// `"127.0.0.1:9464"` (port 0: any free port, see [`App::http_addr`]).
    /// Starting fails with [`Error::Config`] when the address cannot be
    /// bound.
    pub fn serve_http(mut self, addr: impl Into<String>) -> Self {
        self.http = Some(addr.into());
        self
    }

    /// Publishes lineage events (see [`Lineage`]) to its topic: what this
    /// service published, and how each subscription (unless
    /// [`Subscription::lineage(false)`](Subscription::lineage)) handled each
    /// record. Off by default.
    pub fn lineage(mut self, lineage: Lineage) -> Self {
        self.lineage = Some(lineage);
        self
    }

    /// Runs `relay` under the root supervisor (child `outbox:<table>`,
    /// after the Producer): it moves its outbox table's rows to the broker
    /// (see [`outbox`](crate::outbox)). [`start`](AppBuilder::start) fails
    /// with a typed error when the database cannot be reached
    /// ([`Error::Unavailable`]) or the table does not exist
    /// ([`Error::Config`]). Feature `postgres`.
    #[cfg(feature = "postgres")]
    pub fn outbox_relay(mut self, relay: crate::outbox::OutboxRelay) -> Self {
        self.outbox_relays.push(relay);
        self
    }

    /// Publishes the tree's lifecycle events to `events` (shared by clones).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// Validates the configuration, starts the supervision tree in order and
    /// returns the running application. Must run inside an actix system.
    pub async fn start(self) -> Result<App> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let broker = self.broker.ok_or_else(|| {
            Error::Config("no broker: call .broker(Broker::memory()) or another broker".into())
        })?;
        if self.max_message_bytes == 0 {
            return Err(Error::Config("max_message_bytes must be at least 1".into()));
        }
        for (sub, _) in &self.subscriptions {
            sub.validate()?;
        }
        #[cfg(feature = "postgres")]
        for relay in &self.outbox_relays {
            relay.validate()?;
            relay.check().await?;
        }
        let plan = self.delays.as_ref().map(Delays::plan).transpose()?;
        // The Republisher of this application, when it runs one.
        let republisher = self
            .delays
            .as_ref()
            .filter(|d| d.republishes())
            .zip(plan.clone());

        let metrics = Metrics::register(self.registry.unwrap_or_default(), self.metrics)?;
        // Once per process (a few ms): not on the first record timed.
        crate::clock::warm();
        let backend = broker.backend()?;
        // Topic administration: subscribed and dead-letter topics exist
        // before anything polls or writes them.
        let mut topics: Vec<String> = Vec::new();
        for (sub, _) in &self.subscriptions {
            for topic in &sub.topics {
                topics.push(topic.clone());
                topics.push(sub.dead_letter_topic(topic));
            }
        }
        if let Some((_, plan)) = &republisher {
            topics.extend(plan.topics());
        }
        if let Some(lineage) = &self.lineage {
            topics.push(lineage.topic.clone());
        }
        topics.sort();
        topics.dedup();
        for topic in &topics {
            backend.ensure_topic(topic, None).await?;
        }
        let outbound = Outbound::default();
        let (intake, intake_rx) = crate::producer::handle::intake(PUBLISH_MAILBOX);
        let tap = self.lineage.as_ref().map(|lineage| {
            let producer = ProducerHandle::new(
                outbound.producer.clone(),
                intake.clone(),
                self.delivery_timeout,
            );
            crate::observe::lineage::start(
                lineage,
                producer,
                metrics.collectors().lineage_dropped.clone(),
            )
        });
        let mut root = Supervisor::new("kafkactor")
            .events(self.events.clone())
            .restart_limit(self.restart_limit.0, self.restart_limit.1)
            .backoff(self.backoff);
        root = outbound.children(
            root,
            OutboundSettings {
                backend: backend.clone(),
                max_message_bytes: self.max_message_bytes,
                delivery_timeout: self.delivery_timeout,
                delays: plan.clone(),
                events: self.events.clone(),
                intake: intake_rx,
                metrics: metrics.clone(),
                lineage: tap.clone(),
            },
        );
        let mut dependencies = Vec::new();
        let mut handlers = Vec::new();
        #[cfg(feature = "postgres")]
        for relay in self.outbox_relays {
            let failing = crate::observe::health::Failing::default();
            let table = relay.outbox.table_name().to_string();
            dependencies.push((format!("outbox:{table}"), failing.clone()));
            let producer = ProducerHandle::new(
                outbound.producer.clone(),
                intake.clone(),
                self.delivery_timeout,
            );
            let metrics = metrics.clone();
            root = root.child(ChildSpec::graceful(format!("outbox:{table}"), move || {
                crate::outbox::OutboxRelayActor::new(
                    relay.clone(),
                    producer.clone(),
                    metrics.clone(),
                    failing.clone(),
                )
            }));
        }
        // The consumer connection of every consumer subtree, asked by
        // `assigned_partitions` what it owns.
        let mut consumers = Vec::new();
        if let Some((delays, plan)) = republisher {
            let connection = ChildRef::new();
            consumers.push(Consumer {
                group: delays.group_name().to_string(),
                topics: plan.topics(),
                connection: connection.clone(),
                buckets: true,
            });
            root = root.child(republisher_spec(
                delays,
                plan,
                self.delivery_timeout,
                Parts {
                    backend: backend.clone(),
                    events: self.events.clone(),
                    outbound: outbound.clone(),
                    connection: connection.clone(),
                    metrics: metrics.clone(),
                    lineage: None,
                    max_message_bytes: self.max_message_bytes,
                    handlers_health: Default::default(),
                },
            ));
        }
        for (sub, make) in self.subscriptions {
            let connection = ChildRef::new();
            consumers.push(Consumer {
                group: sub.group_name().to_string(),
                topics: sub.topics.clone(),
                connection: connection.clone(),
                buckets: false,
            });
            let handlers_health = crate::observe::health::Failing::default();
            handlers.push((
                format!("handlers:{}", sub.group_name()),
                handlers_health.clone(),
            ));
            if let Some(idempotency) = &sub.idempotency {
                dependencies.push((
                    format!("idempotency:{}", sub.group_name()),
                    idempotency.failing.clone(),
                ));
            }
            root = root.child(make(Parts {
                backend: backend.clone(),
                events: self.events.clone(),
                outbound: outbound.clone(),
                connection: connection.clone(),
                metrics: metrics.clone(),
                lineage: tap.clone().filter(|_| sub.lineage),
                max_message_bytes: self.max_message_bytes,
                handlers_health,
            }));
        }
        // The handlers' checks first, then the dependencies'.
        handlers.extend(dependencies);
        let observed = Observed::new(metrics.clone(), backend.clone(), consumers, handlers);
        let mut http_addr = None;
        if let Some(addr) = &self.http {
            let listener = std::net::TcpListener::bind(addr.as_str())
                .map_err(|e| Error::Config(format!("cannot serve HTTP on {addr}: {e}")))?;
            http_addr = listener.local_addr().ok();
            let observed = observed.clone();
            root = root.child(ChildSpec::graceful("http", move || {
                HttpEndpoints::new(
                    listener.try_clone().expect("a socket handle"),
                    observed.clone(),
                )
            }));
        }

        let counting = crate::observe::supervision::count_events(&self.events, &metrics);
        let mut handle = root.start_root();
        if outbound
            .producer
            .ready(Duration::from_secs(10))
            .await
            .is_none()
        {
            let exit = if handle.is_finished() {
                handle.wait().await
            } else {
                Exit::Killed
            };
            return Err(Error::Escalated(format!(
                "the application did not start: {exit}"
            )));
        }
        Ok(App {
            observed,
            http_addr,
            root: handle,
            producer: outbound.producer,
            intake,
            delivery_timeout: self.delivery_timeout,
            broker,
            events: self.events,
            _counting: counting,
        })
    }
}

/// A running application. Publish through [`App::producer`]; stop with
/// [`App::shutdown`], which drains in-flight work and commits.
pub struct App {
    observed: Observed,
    http_addr: Option<std::net::SocketAddr>,
    root: SupervisorHandle,
    producer: ChildRef<Producer>,
    /// Where [`ProducerHandle`]s send.
    intake: IntakeSender,
    delivery_timeout: Duration,
    broker: Broker,
    events: Events,
    /// Counts the supervision events while the application lives.
    _counting: crate::observe::supervision::Counting,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.broker)
            .field("running", &!self.root.is_finished())
            .finish()
    }
}

impl App {
    /// The application's publisher: send it [`Publish`](crate::Publish)
    /// messages. The handle stays valid across restarts of the Producer
    /// actor (see [`ProducerHandle`]): keep it for the life of the service.
    pub fn producer(&self) -> ProducerHandle {
        ProducerHandle::new(
            self.producer.clone(),
            self.intake.clone(),
            self.delivery_timeout,
        )
    }

    /// The partitions this application's consumers (its subscriptions and
    /// its Republisher) own right now, over all of them, sorted. Each
    /// consumer connection answers for itself; one that is restarting owns
    /// nothing.
    pub async fn assigned_partitions(&self) -> Vec<crate::TopicPartition> {
        let asked: Vec<_> = self
            .observed
            .consumers()
            .iter()
            .filter_map(|c| c.connection.get().map(|a| a.send(Owned)))
            .collect();
        let mut all = Vec::new();
        for answer in asked {
            all.extend(answer.await.unwrap_or_default());
        }
        all.sort();
        all
    }

    /// The broker this application runs on.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The registry of the application's metrics: the one given to
    /// [`AppBuilder::metrics_registry`], or one of its own. The metrics
    /// (`kafkactor_*`: published, consumed, acknowledged, retried and
    /// dead-lettered records, handler and publish latency, in-flight
    /// records, consumer lag, delayed backlog, actor restarts) are listed
    /// in the README's Observability section.
    pub fn metrics_registry(&self) -> &prometheus::Registry {
        self.observed.metrics().registry()
    }

    /// The metrics in Prometheus' text format, as `/metrics` serves them
    /// (consumer lag and delayed backlog read from the broker first).
    pub async fn metrics_text(&self) -> String {
        self.observed.render().await
    }

    /// Whether the application is live and ready, as `/health/ready`
    /// answers (see [`Health`](crate::Health)).
    pub async fn health(&self) -> Health {
        self.observed.health(!self.root.is_finished()).await
    }

    /// The address `/metrics` and `/health/*` are served on, with
    /// [`AppBuilder::serve_http`].
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// The supervision tree's lifecycle events.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Makes the actor at `path` fail with `reason`, as a crash would: its
    /// supervisor restarts it by its policy. For fault-injection tests and
    /// operators. Paths are child ids joined by `/`:
    /// `producer-connection`, `producer`, `dead-letter`, with
    /// [`delays`](AppBuilder::delays) `republisher/republisher` and
    /// `republisher/consumer-connection`, and per subscription
    /// `subscription:<group>:<topics>/dispatcher`,
    /// `subscription:<group>:<topics>/consumer-connection` and
    /// `subscription:<group>:<topics>/handlers/handler-<lane>`, where
    /// `<topics>` are the subscription's topics joined by `,`. A path that
    /// names no actor is [`Error::UnknownActor`].
    pub async fn fail_actor(&self, path: &str, reason: &str) -> Result<()> {
        self.root
            .fail_child(path, reason)
            .await
            .map_err(|e| match e {
                FailChildError::NoSuchChild(_) => Error::UnknownActor(path.to_string()),
                other => Error::Unavailable(other.to_string()),
            })
    }

    /// Waits until the application stops on its own: `Err(Error::Escalated)`
    /// when the root supervisor gave up after too many failures.
    pub async fn wait(&mut self) -> Result<()> {
        exit_to_result(self.root.wait().await)
    }

    /// Stops every actor in reverse start order: subscriptions stop polling,
    /// finish their in-flight records (within their drain timeout) and commit;
    /// then the dead-letter actor, the producer and its connection (flushed).
    pub async fn shutdown(self) -> Result<()> {
        exit_to_result(self.root.shutdown().await)
    }
}

fn exit_to_result(exit: Exit) -> Result<()> {
    match exit {
        Exit::Normal => Ok(()),
        other => Err(Error::Escalated(other.to_string())),
    }
}
