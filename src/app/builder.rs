//! [`Kafkactor::builder`] and the [`AppBuilder`] settings: what an
//! application is made of, before anything runs (`start.rs` starts it).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Decode;
use actix::{Actor, Context, Handler};
use kafkactor_actors::{Backoff, ChildSpec, Events};

use crate::broker::Broker;
use crate::buckets::Delays;
use crate::delivery::{Batch, BatchOutcome, Delivery, Outcome};
use crate::error::Error;
use crate::observe::lineage::Lineage;
use crate::subscription::closure::FnHandler;
use crate::subscription::route::Routes;
use crate::subscription::tree::{subscription_spec, Parts};
use crate::subscription::{Subscription, DEFAULT_MAX_RECORD_BYTES};

/// Entry point: `Kafkactor::builder()`.
#[derive(Debug, Clone, Copy)]
pub struct Kafkactor;

impl Kafkactor {
    /// A builder for an application.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            broker: None,
            named: Vec::new(),
            subscriptions: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            delivery_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            restart_limit: (10, Duration::from_secs(10)),
            backoff: Backoff::exponential(Duration::from_millis(10), Duration::from_secs(2)),
            events: Events::new(),
            delays: None,
            registry: None,
            metrics: true,
            http: None,
            lineage: None,
            replies: None,
            asyncapi: crate::asyncapi::AsyncApi::default(),
            described: Vec::new(),
            #[cfg(feature = "postgres")]
            outbox_relays: Vec::new(),
            error: None,
        }
    }
}

/// Builds a subscription's subtree from the parts the application gives it.
pub(super) type MakeSpec = Box<dyn FnOnce(Parts) -> ChildSpec>;

/// Assembles an application: the broker, the subscriptions and their
/// handlers, and the supervision settings. Nothing runs until [`start`](AppBuilder::start).
pub struct AppBuilder {
    pub(super) broker: Option<Broker>,
    /// The other brokers, by name.
    pub(super) named: Vec<(String, Broker)>,
    pub(super) subscriptions: Vec<(Subscription, MakeSpec)>,
    pub(super) max_record_bytes: usize,
    pub(super) delivery_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) restart_limit: (usize, Duration),
    pub(super) backoff: Backoff,
    pub(super) events: Events,
    pub(super) delays: Option<Delays>,
    pub(super) registry: Option<prometheus::Registry>,
    pub(super) metrics: bool,
    pub(super) http: Option<String>,
    pub(super) lineage: Option<Lineage>,
    pub(super) replies: Option<crate::request::Replies>,
    /// What the AsyncAPI document says beyond the subscriptions.
    pub(super) asyncapi: crate::asyncapi::AsyncApi,
    /// The subscriptions as the AsyncAPI document shows them.
    pub(super) described: Vec<crate::asyncapi::Received>,
    #[cfg(feature = "postgres")]
    pub(super) outbox_relays: Vec<crate::outbox::OutboxRelay>,
    pub(super) error: Option<Error>,
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
            .field("max_record_bytes", &self.max_record_bytes)
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

    /// Every broker of `config` (`kafkactor.toml` and the environment):
    /// the one named `default` as the application's broker, the others as
    /// [named brokers](AppBuilder::named_broker), by their names. A name
    /// `config` does not define fails the start with [`Error::Config`]
    /// naming the file.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), kafkactor::Error> {
    /// let config = kafkactor::Config::load()?; // [default.brokers.main], [default.brokers.analytics]
    /// let builder = kafkactor::Kafkactor::builder().brokers(&config, "main");
    /// # let _ = builder; Ok(()) }
    /// ```
    pub fn brokers(mut self, config: &crate::Config, default: &str) -> Self {
        match config.broker(default) {
            Ok(broker) => self.broker = Some(broker),
            Err(e) => {
                self.fail(e);
                return self;
            }
        }
        for name in config.broker_names().filter(|n| *n != default) {
            match config.broker(name) {
                Ok(broker) => self.named.push((name.to_string(), broker)),
                Err(e) => {
                    self.fail(e);
                    return self;
                }
            }
        }
        self
    }

    /// Another broker, named `name`, beside the default one
    /// ([`broker`](AppBuilder::broker)): a subscription reads from it with
    /// [`Subscription::broker`], a handler publishes to it with
    /// [`Delivery::publish_on`](crate::Delivery::publish_on), and
    /// [`App::producer_on`](crate::App::producer_on) publishes to it. It has
    /// a producer, producer connection and dead-letter actor of its own
    /// (`producer@<name>`, ...). Delayed publishing, request-reply, lineage
    /// and the outbox use the default broker.
    ///
    /// ```
    /// use kafkactor::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Click { page: String }
    /// let builder = Kafkactor::builder()
    ///     .broker(Broker::memory())                       // "default"
    ///     .named_broker("analytics", Broker::memory())    // another cluster
    ///     .handle(
    ///         Subscription::to("clicks").group("counter").broker("analytics"),
    ///         |d: Delivery<Click>| async move {
    ///             // Counted on the analytics cluster, reported on the default one.
    ///             d.publish_on("default", Publish::to("page-views").message(d.message())?)
    ///                 .await?;
    ///             Ok::<(), Failure>(())
    ///         },
    ///     );
    /// ```
    pub fn named_broker(mut self, name: impl Into<String>, broker: Broker) -> Self {
        self.named.push((name.into(), broker));
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
        T: Decode,
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
        if sub.batch.is_some() && routes.batch.is_none() {
            self.fail(Error::Config(format!(
                "subscription to {:?} sets a batch size, but its handler takes one record at a \
                 time: subscribe a batch handler (subscribe_batch, handle_batch)",
                sub.topics
            )));
            return self;
        }
        self.described.push(crate::asyncapi::Received {
            group: sub.group_name().to_string(),
            topics: sub.topics.clone(),
            types: routes.described(),
            dead_letter: sub.dead_letter.clone(),
            retry_topics: sub.retry.retry_topic().is_some(),
            content_type: sub.default_content_type,
        });
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
        T: Decode,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: Future<Output = O> + 'static,
        O: Into<Outcome> + 'static,
    {
        let handler = Arc::new(handler);
        self.subscribe::<FnHandler<T, F, Fut>, T, _>(sub, move || FnHandler::new(handler.clone()))
    }

    /// The title, version and message schemas of the application's
    /// AsyncAPI document (see [`AsyncApi`](crate::AsyncApi)); without it
    /// the document shows the subscriptions' channels, groups and message
    /// names, with no schemas.
    pub fn asyncapi(mut self, spec: crate::asyncapi::AsyncApi) -> Self {
        self.asyncapi = spec;
        self
    }

    /// Subscribes a handler that declares its own subscription: an async
    /// function under [`#[kafkactor::handler(..)]`](crate::handler).
    ///
    /// ```
    /// use kafkactor::prelude::*;
    /// # #[derive(serde::Deserialize)] struct Order { id: u64 }
    ///
    /// #[kafkactor::handler(topic = "orders", group = "billing", concurrency = 4)]
    /// async fn on_order(d: Delivery<Order>) -> Result<(), Failure> {
    ///     println!("order {}", d.message().id);
    ///     Ok(())
    /// }
    ///
    /// let builder = Kafkactor::builder().broker(Broker::memory()).handler(on_order);
    /// ```
    pub fn handler(self, handler: impl super::DeclaredHandler) -> Self {
        let subscription = handler.subscription();
        handler.register(self, subscription)
    }

    /// Subscribes the batch handler actor built by `factory` to `sub`
    /// (`A: Handler<Batch<T>>`): it gets up to the subscription's
    /// [batch size](Subscription::batch) of a lane's records at a time and
    /// answers a [`BatchOutcome`](crate::BatchOutcome). Records are
    /// retried, dead-lettered, checked for duplicates and committed one by
    /// one, as for a single record's handler.
    pub fn subscribe_batch<A, T, F>(self, sub: Subscription, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Batch<T>>,
        <A as Handler<Batch<T>>>::Result: 'static,
        T: Decode,
        F: Fn() -> A + 'static,
    {
        let sub = match sub.batch {
            Some(_) => sub,
            None => {
                let (max, linger) = crate::subscription::tree::DEFAULT_BATCH;
                sub.batch(max, linger)
            }
        };
        self.subscribe_routes(sub, Routes::batch_of::<T>(), factory)
    }

    /// Subscribes an async closure taking batches: `|b: Batch<T>| async
    /// move { .. }`, answering a [`BatchOutcome`](crate::BatchOutcome), an
    /// [`Outcome`] for the batch as a whole, or a `Result<(), Failure>`.
    pub fn handle_batch<T, F, Fut, O>(self, sub: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Batch<T>) -> Fut + 'static,
        Fut: Future<Output = O> + 'static,
        O: Into<BatchOutcome> + 'static,
    {
        let handler = Arc::new(handler);
        self.subscribe_batch::<FnHandler<T, F, Fut>, T, _>(sub, move || {
            FnHandler::new(handler.clone())
        })
    }

    /// The largest record the producer accepts (key, headers and payload;
    /// default 1 MiB); larger ones fail with [`Error::RecordTooLarge`]. The
    /// same word as [`Subscription::max_record_bytes`], the largest record
    /// a subscription handles.
    pub fn max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// The old name of [`max_record_bytes`](AppBuilder::max_record_bytes).
    #[deprecated(
        since = "0.2.0",
        note = "renamed max_record_bytes (one word for records)"
    )]
    pub fn max_message_bytes(self, max: usize) -> Self {
        self.max_record_bytes(max)
    }

    /// How long [`start`](AppBuilder::start) waits for the broker to answer
    /// (default 10 s), saying what it waits for in the log meanwhile; past
    /// it, `start` fails with an [`Error::Broker`] naming the addresses it
    /// tried and what to check.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
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
    /// the application stops and [`App::wait`](crate::App::wait) returns [`Error::Escalated`].
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

    /// Registers the application's metrics (see [`App::metrics_registry`](crate::App::metrics_registry)
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
    /// `"127.0.0.1:9464"` (port 0: any free port, see [`App::http_addr`](crate::App::http_addr)).
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

    /// Reads replies to this application's requests on `replies` (see
    /// [`Requester`](crate::Requester)): its partition is read without a
    /// consumer group by the `replies` child, from its end when the
    /// application starts ([`start`](AppBuilder::start) returns once that
    /// position is resolved, so no reply can come before it is read).
    pub fn replies(mut self, replies: crate::request::Replies) -> Self {
        self.replies = Some(replies);
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
}

impl super::Subscriber for AppBuilder {
    fn handle<T, F, Fut, O>(self, sub: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: Future<Output = O> + 'static,
        O: Into<Outcome> + 'static,
    {
        AppBuilder::handle(self, sub, handler)
    }
}
