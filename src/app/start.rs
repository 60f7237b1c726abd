//! [`AppBuilder::start`]: checks the settings, creates the topics, then
//! adds the subtrees to the root in start order (the order of the tree in
//! `app/mod.rs`) and starts it.

use std::sync::Arc;
use std::time::Duration;

use kafkactor_actors::{ChildRef, ChildSpec, Exit, Restart, Supervisor};
use tokio::sync::Mutex;

use super::builder::AppBuilder;
use super::health::{Member, Observed};
use super::http::HttpEndpoints;
use super::lineage::LineagePublisher;
use super::outbound::{Outbound, OutboundSettings};
use super::running::App;
use crate::broker::{Broker, BrokerBackend};
use crate::buckets::{Delays, Plan};
use crate::connection::producer::WRITE_MAILBOX;
use crate::error::{Error, Result};
use crate::observe::health::Failing;
use crate::observe::lineage::Tap;
use crate::observe::metrics::Metrics;
use crate::producer::handle::IntakeSender;
use crate::producer::ProducerHandle;
use crate::subscription::Subscription;

/// What every subtree is built from, made once by `start`.
struct Shared {
    backend: Arc<dyn BrokerBackend>,
    metrics: Metrics,
    outbound: Outbound,
    /// Where [`ProducerHandle`]s send.
    intake: IntakeSender,
    delivery_timeout: Duration,
    /// Where lineage events go, when on.
    tap: Option<Tap>,
    /// The other brokers, by name.
    named: Vec<Named>,
}

/// A named broker's client and outbound actors.
struct Named {
    name: Arc<str>,
    broker: Broker,
    backend: Arc<dyn BrokerBackend>,
    outbound: Outbound,
    intake: IntakeSender,
}

impl Named {
    fn producer(&self, delivery_timeout: Duration) -> ProducerHandle {
        ProducerHandle::new(
            self.outbound.producer.clone(),
            self.outbound.connection.clone(),
            self.intake.clone(),
            delivery_timeout,
        )
    }
}

/// What the default broker is called where brokers are named
/// ([`Delivery::publish_on`](crate::Delivery::publish_on)).
pub(crate) const DEFAULT_BROKER: &str = "default";

impl Shared {
    /// The producers of every broker but `own` (None: the default one),
    /// by name.
    fn others(&self, own: Option<&str>) -> crate::delivery::outlet::Publishers {
        let mut others: Vec<(Arc<str>, Arc<dyn crate::delivery::outlet::Publisher>)> = Vec::new();
        if own.is_some() {
            others.push((DEFAULT_BROKER.into(), Arc::new(self.producer())));
        }
        for named in &self.named {
            if own != Some(&*named.name) {
                others.push((
                    named.name.clone(),
                    Arc::new(named.producer(self.delivery_timeout)),
                ));
            }
        }
        others.into()
    }

    /// A handle on the application's Producer.
    fn producer(&self) -> ProducerHandle {
        ProducerHandle::new(
            self.outbound.producer.clone(),
            self.outbound.connection.clone(),
            self.intake.clone(),
            self.delivery_timeout,
        )
    }
}

/// What the application observes of the subtrees it starts.
#[derive(Default)]
struct Observing {
    /// The consumer connection of every consumer subtree.
    members: Vec<Member>,
    /// Each subscription's handlers' check.
    handlers: Vec<(String, Failing)>,
    /// Each dependency's check (idempotency stores, outbox databases).
    dependencies: Vec<(String, Failing)>,
}

impl Observing {
    /// What health and the metrics read: the handlers' checks first, then
    /// the dependencies'.
    fn observed(self, shared: &Shared) -> Observed {
        let Observing {
            members,
            mut handlers,
            dependencies,
        } = self;
        handlers.extend(dependencies);
        Observed::new(
            shared.metrics.clone(),
            shared.backend.clone(),
            members,
            handlers,
        )
    }
}

/// The lineage taps' queue and topic, for the `lineage` child.
type LineageQueue = (
    Arc<str>,
    tokio::sync::mpsc::Receiver<crate::observe::lineage::Event>,
);

impl AppBuilder {
    /// Validates the configuration, starts the supervision tree in order and
    /// returns the running application. Must run inside an actix system.
    pub async fn start(mut self) -> Result<App> {
        let broker = self.checked().await?;
        let asyncapi = Arc::new(crate::asyncapi::document(&self.asyncapi, &self.described)?);
        let plan = self.delays.as_ref().map(Delays::plan).transpose()?;
        let metrics = Metrics::register(self.registry.take().unwrap_or_default(), self.metrics)?;
        // Once per process (a few ms): not on the first record timed.
        crate::clock::warm();
        let backend = broker.backend()?;
        connected(&backend, self.connect_timeout).await?;
        let mut named = Vec::new();
        let mut named_intakes = Vec::new();
        for (name, broker) in &self.named {
            let backend = broker.backend()?;
            connected(&backend, self.connect_timeout).await?;
            self.create_topics(&backend, None, Some(name)).await?;
            let (intake, intake_rx) = crate::producer::handle::intake(WRITE_MAILBOX);
            named.push(Named {
                name: name.as_str().into(),
                broker: broker.clone(),
                backend,
                outbound: Outbound::default(),
                intake,
            });
            named_intakes.push(intake_rx);
        }
        // The Republisher of this application, when it runs one.
        let republishing = self.republisher(plan.clone());
        let buckets = republishing.as_ref().map(|(_, plan)| &**plan);
        self.create_topics(&backend, buckets, None).await?;

        let (intake, intake_rx) = crate::producer::handle::intake(WRITE_MAILBOX);
        let (tap, lineage) = self.lineage_tap(&metrics);
        let shared = Shared {
            backend,
            metrics,
            outbound: Outbound::default(),
            intake,
            delivery_timeout: self.delivery_timeout,
            tap,
            named,
        };
        let mut observing = Observing::default();
        // The root's children, in start order (app/mod.rs draws the tree).
        let mut root = self.outbound(self.root(), &shared, plan.clone(), intake_rx);
        for (named, intake) in shared.named.iter().zip(named_intakes) {
            root = named.outbound.children(
                root,
                OutboundSettings {
                    backend: named.backend.clone(),
                    max_record_bytes: self.max_record_bytes,
                    delivery_timeout: self.delivery_timeout,
                    delays: None,
                    events: self.events.clone(),
                    intake,
                    metrics: shared.metrics.clone(),
                    lineage: shared.tap.clone(),
                    broker: Some(named.name.clone()),
                },
            );
        }
        if let Some((topic, events)) = lineage {
            root = root.child(lineage_spec(topic, events, shared.producer()));
        }
        let mut requests = None;
        if let Some(replies) = self.replies.clone() {
            let pending =
                crate::request::Pending::new(shared.metrics.collectors().replies_unmatched.clone());
            let (spec, shared_requests) =
                crate::request::tree::replies_spec(shared.backend.clone(), replies, pending);
            root = root.child(spec);
            requests = Some(shared_requests);
        }
        root = self.outbox_relays(root, &shared, &mut observing);
        if let Some((delays, plan)) = republishing {
            root = root.child(republisher(&shared, &self, delays, plan, &mut observing));
        }
        root = self.subscriptions(root, &shared, &mut observing);
        let observed = observing.observed(&shared);
        let mut http_addr = None;
        if let Some(addr) = &self.http {
            let (spec, bound) = http_spec(addr, observed.clone(), asyncapi.clone())?;
            http_addr = Some(bound);
            root = root.child(spec);
        }
        let described = Described {
            http_addr,
            asyncapi,
        };
        self.run(root, shared, observed, described, broker, requests)
            .await
    }

    /// The root supervisor, without children yet.
    fn root(&self) -> Supervisor {
        Supervisor::new("kafkactor")
            .events(self.events.clone())
            .restart_limit(self.restart_limit.0, self.restart_limit.1)
            .backoff(self.backoff)
    }

    /// The lineage tap every subtree is given, and the queue it fills, when
    /// lineage is on.
    fn lineage_tap(&self, metrics: &Metrics) -> (Option<Tap>, Option<LineageQueue>) {
        match &self.lineage {
            None => (None, None),
            Some(lineage) => {
                let (tap, events) = Tap::new(lineage, metrics.collectors().lineage_dropped.clone());
                (Some(tap), Some((Arc::from(lineage.topic.as_str()), events)))
            }
        }
    }

    /// `producer-connection`, `producer`, `dead-letter`.
    fn outbound(
        &self,
        root: Supervisor,
        shared: &Shared,
        delays: Option<Arc<Plan>>,
        intake: crate::producer::handle::IntakeReceiver,
    ) -> Supervisor {
        shared.outbound.children(
            root,
            OutboundSettings {
                backend: shared.backend.clone(),
                max_record_bytes: self.max_record_bytes,
                delivery_timeout: self.delivery_timeout,
                delays,
                events: self.events.clone(),
                intake,
                metrics: shared.metrics.clone(),
                lineage: shared.tap.clone(),
                broker: None,
            },
        )
    }

    /// `outbox:<table>`, one per relay, each database's check observed.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables, unused_mut))]
    fn outbox_relays(
        &mut self,
        mut root: Supervisor,
        shared: &Shared,
        observing: &mut Observing,
    ) -> Supervisor {
        #[cfg(feature = "postgres")]
        for relay in std::mem::take(&mut self.outbox_relays) {
            let failing = Failing::default();
            let name = crate::outbox::tree::relay_name(&relay);
            observing.dependencies.push((name, failing.clone()));
            root = root.child(crate::outbox::tree::relay_spec(
                relay,
                shared.producer(),
                shared.metrics.clone(),
                failing,
            ));
        }
        root
    }

    /// `subscription:<group>:<topics>`, one per subscription, each member,
    /// handlers' check and store observed.
    fn subscriptions(
        &mut self,
        mut root: Supervisor,
        shared: &Shared,
        observing: &mut Observing,
    ) -> Supervisor {
        for (sub, make) in std::mem::take(&mut self.subscriptions) {
            let connection = ChildRef::new();
            // Its broker's client, outbound actors and producer.
            let (backend, outbound, producer) = match sub.broker.as_deref() {
                None => (shared.backend.clone(), &shared.outbound, shared.producer()),
                Some(name) => {
                    let named = shared
                        .named
                        .iter()
                        .find(|n| &*n.name == name)
                        .expect("checked at start");
                    (
                        named.backend.clone(),
                        &named.outbound,
                        named.producer(self.delivery_timeout),
                    )
                }
            };
            observing.members.push(Member {
                group: sub.group_name().to_string(),
                topics: sub.topics.clone(),
                connection: connection.clone(),
                backend: backend.clone(),
                buckets: false,
            });
            let handlers_health = Failing::default();
            observing.handlers.push((
                format!("handlers:{}", sub.group_name()),
                handlers_health.clone(),
            ));
            if let Some(idempotency) = &sub.idempotency {
                observing.dependencies.push((
                    format!("idempotency:{}", sub.group_name()),
                    idempotency.failing.clone(),
                ));
            }
            let others = shared.others(sub.broker.as_deref());
            root = root.child(make(crate::subscription::tree::Parts {
                backend,
                events: self.events.clone(),
                dead_letter: outbound.dead_letter.clone(),
                connection,
                metrics: shared.metrics.clone(),
                lineage: shared.tap.clone().filter(|_| sub.lineage),
                max_record_bytes: self.max_record_bytes,
                handlers_health,
                writer: crate::connection::producer::Writer::to(outbound.connection.clone()),
                delivery_timeout: self.delivery_timeout,
                producer,
                others,
            }));
        }
        root
    }

    /// Starts `root` and waits for the Producer: the running application.
    async fn run(
        self,
        root: Supervisor,
        shared: Shared,
        observed: Observed,
        described: Described,
        broker: Broker,
        requests: Option<Arc<crate::request::Requests>>,
    ) -> Result<App> {
        let counting = crate::observe::supervision::count_events(&self.events, &shared.metrics);
        let mut handle = root.start_root();
        if shared
            .outbound
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
        if let Some(requests) = &requests {
            // No request before its reply can be read.
            if let Err(e) = requests.position.resolved(self.connect_timeout).await {
                handle.shutdown().await;
                return Err(e);
            }
        }
        Ok(App {
            observed,
            http_addr: described.http_addr,
            root: handle,
            producer: shared.outbound.producer,
            connection: shared.outbound.connection,
            intake: shared.intake,
            delivery_timeout: self.delivery_timeout,
            broker,
            events: self.events,
            requests,
            named: shared
                .named
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        n.broker.clone(),
                        n.producer(self.delivery_timeout),
                    )
                })
                .collect(),
            asyncapi: described.asyncapi,
            _counting: counting,
        })
    }

    /// The broker, once every setting is checked.
    async fn checked(&mut self) -> Result<Broker> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let broker = self.broker.take().ok_or_else(|| {
            Error::Config("no broker: call .broker(Broker::memory()) or another broker".into())
        })?;
        if self.max_record_bytes == 0 {
            return Err(Error::Config("max_record_bytes must be at least 1".into()));
        }
        let mut names: Vec<&str> = vec![DEFAULT_BROKER];
        for (name, _) in &self.named {
            if name.is_empty() || names.contains(&name.as_str()) {
                return Err(Error::Config(format!(
                    "a named broker needs a name of its own: {name:?} is {}",
                    if name.is_empty() { "empty" } else { "taken" }
                )));
            }
            names.push(name);
        }
        for (sub, _) in &self.subscriptions {
            sub.validate()?;
            if let Some(name) = sub.broker.as_deref().filter(|n| !names[1..].contains(n)) {
                return Err(Error::Config(format!(
                    "subscription of group {:?} to {:?} reads from broker {name:?}, which the \
                     application does not name (named: {}); add it with \
                     AppBuilder::named_broker",
                    sub.group_name(),
                    sub.topics,
                    if names.len() == 1 {
                        "none".to_string()
                    } else {
                        names[1..].join(", ")
                    }
                )));
            }
        }
        if let Some(replies) = &self.replies {
            replies.validate()?;
        }
        #[cfg(feature = "postgres")]
        for relay in &self.outbox_relays {
            relay.validate()?;
            relay.check().await?;
        }
        Ok(broker)
    }

    /// The delay settings and their plan, when this application runs a
    /// Republisher.
    fn republisher(&self, plan: Option<Arc<Plan>>) -> Option<(Delays, Arc<Plan>)> {
        self.delays.clone().filter(Delays::republishes).zip(plan)
    }

    /// Creates the topics the application reads and writes before anything
    /// polls or writes them: subscribed, dead-letter, the `buckets` the
    /// Republisher reads (when it runs) and lineage topics.
    async fn create_topics(
        &self,
        backend: &Arc<dyn BrokerBackend>,
        buckets: Option<&Plan>,
        broker: Option<&str>,
    ) -> Result<()> {
        let mut topics: Vec<String> = Vec::new();
        let on_it = |sub: &&Subscription| sub.broker.as_deref() == broker;
        for (sub, _) in self.subscriptions.iter().filter(|(s, _)| on_it(&s)) {
            for topic in &sub.topics {
                topics.push(topic.clone());
                topics.push(sub.dead_letter_topic(topic));
            }
        }
        if let Some(plan) = buckets {
            topics.extend(plan.topics());
        }
        if let Some(lineage) = self.lineage.as_ref().filter(|_| broker.is_none()) {
            topics.push(lineage.topic.clone());
        }
        topics.sort();
        topics.dedup();
        for topic in &topics {
            backend.ensure_topic(topic, None).await?;
        }
        // A retry topic has as many partitions as its topic: partition p's
        // retries are in its partition p, read by the same member.
        for (sub, _) in self.subscriptions.iter().filter(|(s, _)| on_it(&s)) {
            for (topic, retry) in sub.retry_topics().pairs() {
                let partitions = backend.partitions(topic).await?;
                backend.ensure_topic(retry, partitions).await?;
                let made = backend.partitions(retry).await?;
                if made != partitions {
                    return Err(Error::Config(format!(
                        "retry topic `{retry}` has {made:?} partitions, `{topic}` {partitions:?}: \
                         they must have as many (partition p's retries are in its partition p)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Waits until the broker answers, within `timeout`, saying in the log what
/// it waits for; fails naming where it looked and what to check.
async fn connected(backend: &Arc<dyn BrokerBackend>, timeout: Duration) -> Result<()> {
    /// How long one try may take, and the pause between tries.
    const TRY: Duration = Duration::from_secs(1);
    const PAUSE: Duration = Duration::from_millis(500);
    let deadline = crate::clock::deadline_in(timeout);
    let mut tries = 0u32;
    loop {
        let error = match backend.probe(TRY.min(timeout)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        tries += 1;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let code = match &error {
                Error::Broker { code, .. } => code.clone(),
                _ => None,
            };
            return Err(Error::Broker {
                operation: format!("connect to {}", backend.describe()),
                reason: format!(
                    "no answer within {timeout:?} ({tries} tries; the last: {error}). Check that \
                     the broker runs and listens there, that this host can reach it, and that \
                     the address is one of its advertised listeners"
                ),
                code,
                retriable: true,
            });
        }
        tracing::warn!(broker = %backend.describe(), error = %error, tries, ?left,
            "waiting for the broker to answer before starting");
        tokio::time::sleep(PAUSE.min(left)).await;
    }
}

/// The `republisher` subtree, its consumer observed.
fn republisher(
    shared: &Shared,
    builder: &AppBuilder,
    delays: Delays,
    plan: Arc<Plan>,
    observing: &mut Observing,
) -> ChildSpec {
    let connection = ChildRef::new();
    observing.members.push(Member {
        group: delays.group_name().to_string(),
        topics: plan.topics(),
        connection: connection.clone(),
        backend: shared.backend.clone(),
        buckets: true,
    });
    crate::delay::tree::republisher_spec(
        &delays,
        plan,
        builder.delivery_timeout,
        crate::delay::tree::Parts {
            backend: shared.backend.clone(),
            events: builder.events.clone(),
            dead_letter: shared.outbound.dead_letter.clone(),
            connection,
            metrics: shared.metrics.clone(),
        },
    )
}

/// The `lineage` child: publishes the taps' events to `topic`. A normal
/// stop (the application's Producer gone) is not restarted.
fn lineage_spec(
    topic: Arc<str>,
    events: tokio::sync::mpsc::Receiver<crate::observe::lineage::Event>,
    producer: ProducerHandle,
) -> ChildSpec {
    let events = Arc::new(Mutex::new(events));
    ChildSpec::graceful("lineage", move || {
        LineagePublisher::new(topic.clone(), events.clone(), producer.clone())
    })
    .restart(Restart::Transient)
}

/// Where the application is described: its HTTP address, when it serves
/// one, and its AsyncAPI document.
struct Described {
    http_addr: Option<std::net::SocketAddr>,
    asyncapi: Arc<serde_json::Value>,
}

/// The `http` child serving `addr`, and the address it is bound to.
fn http_spec(
    addr: &str,
    observed: Observed,
    asyncapi: Arc<serde_json::Value>,
) -> Result<(ChildSpec, std::net::SocketAddr)> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("cannot serve HTTP on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("cannot serve HTTP on {addr}: {e}")))?;
    let spec = ChildSpec::graceful("http", move || {
        HttpEndpoints::new(
            listener.try_clone().expect("a socket handle"),
            observed.clone(),
            asyncapi.clone(),
        )
    });
    Ok((spec, bound))
}
