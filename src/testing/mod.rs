//! Testing a service (feature `testing`): [`TestApp`] starts an
//! application on the embedded broker in one line, or on Apache Kafka by
//! one switch, and answers what a test asks of it: what a handler was
//! called with and what it answered ([`TestApp::calls`]), what was
//! published to a topic ([`TestApp::published`]), what was dead-lettered
//! and why ([`TestApp::dead_letters`]), what is committed
//! ([`TestApp::committed`]). [`TestApp::quiet`] waits, without sleeping a
//! fixed time, until every record's fate is final.
//!
//! ```no_run
//! use kafkactor::prelude::*;
//! use kafkactor::testing::TestApp;
//! # #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! # struct Order { id: u64 }
//!
//! # async fn test() -> kafkactor::Result<()> {
//! // The embedded broker; Apache Kafka when KAFKACTOR_TEST_KAFKA names one.
//! let t = TestApp::builder();
//! let orders = t.topic("orders");
//! let t = t
//!     .handle(Subscription::to(&orders).group("billing"), |d: Delivery<Order>| async move {
//!         if d.message().id == 0 { Outcome::reject("no order 0") } else { Outcome::Ack }
//!     })
//!     .start()
//!     .await?;
//! t.publish(Publish::to(&orders).key("c-1").message(&Order { id: 1 })?).await?;
//! t.publish(Publish::to(&orders).key("c-1").message(&Order { id: 0 })?).await?;
//! t.quiet().await?;
//! assert_eq!(t.messages::<Order>(&orders)?, vec![Order { id: 1 }, Order { id: 0 }]);
//! assert_eq!(t.dead_letters(&orders).await?[0].why.reason, "no order 0");
//! # Ok(()) }
//! ```
//!
//! **The same test on Kafka.** `TestApp::builder()` runs on Apache Kafka
//! when the environment variable `KAFKACTOR_TEST_KAFKA` holds its
//! bootstrap servers (`KAFKACTOR_TEST_KAFKA=127.0.0.1:9092 cargo test`), and
//! `TestApp::kafka(addr)` says so in code. There, topic names made by
//! [`TestAppBuilder::topic`] and every subscription's group get a suffix
//! unique to the test run, so tests sharing a broker, and a second run of
//! the same test, never see each other's records. Names given as they are
//! (`Subscription::to("orders")`) are shared with every other user of the
//! broker.
//!
//! **Scripted failures.** [`fail_first`] and [`fail_attempts`] make a
//! handler fail on purpose; [`TestApp::fail_actor`] crashes any actor;
//! [`TestApp::revoke`] takes a subscription's partitions away (its
//! consumer connection fails and rejoins the group).
//!
//! **Delays without waiting.** On the embedded broker, [`TestApp::clock`]
//! moves the wall clock that records are stamped and delays are measured
//! with ahead: `t.clock()?.advance(Duration::from_secs(3600))` delivers at once what
//! was published with `.delay(1 h)` or scheduled `.at(..)` within the hour.
//! The clock is the process's: tests that advance it should run in a
//! process of their own (as `cargo nextest` runs every test) or alone.
//!
//! What a handler answered is recorded for closure handlers
//! ([`TestAppBuilder::handle`]); an actor handler's records are seen by
//! their fates (committed, published, dead-lettered).

mod calls;
mod script;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Context, Handler};

use crate::app::{App, AppBuilder, Kafkactor};
use crate::broker::{behind, Broker};
use crate::codec::Decode;
use crate::dead_letter::DeadLettered;
use crate::delivery::{Batch, BatchOutcome, Delivery, Outcome};
use crate::envelope::Record;
use crate::error::{Error, Result};
use crate::publish::{Publish, PublishOutcome};
use crate::subscription::Subscription;
use crate::topics;

pub use calls::Call;
use calls::Calls;
pub use script::{fail_attempts, fail_first, Scripted};

/// The environment variable that switches [`TestApp::builder`] to Apache
/// Kafka: its bootstrap servers (`127.0.0.1:9092`).
pub const KAFKA_ENV: &str = "KAFKACTOR_TEST_KAFKA";

/// Where a test application runs.
#[derive(Debug, Clone)]
enum Target {
    /// A new embedded broker of its own, with this many partitions per topic.
    Memory(i32),
    /// Apache Kafka at these bootstrap servers, with this many partitions
    /// per topic it creates.
    Kafka(String, i32),
    /// A broker the test made.
    Given(Broker),
}

/// A subscription the harness watches: its group and the topics it reads.
#[derive(Debug, Clone)]
struct Watched {
    /// The group as the test named it.
    named: String,
    /// The group as the broker knows it.
    group: String,
    /// The topics it subscribed to.
    topics: Vec<String>,
    /// The topics it reads: its own, and its retry topics.
    reads: Vec<String>,
    /// Its dead-letter topic.
    dead_letters: String,
}

/// Builds a [`TestApp`]: the same calls as [`AppBuilder`] for
/// subscriptions, and [`with`](TestAppBuilder::with) for every other
/// setting.
pub struct TestAppBuilder {
    app: AppBuilder,
    target: Target,
    /// The suffix of this run's names, when names are made unique.
    run: Option<String>,
    watched: Vec<Watched>,
    calls: Calls,
    patience: Option<Duration>,
}

/// A running application under test (see the [module](self)).
pub struct TestApp {
    app: App,
    broker: Broker,
    watched: Vec<Watched>,
    calls: Calls,
    patience: Duration,
    on_kafka: bool,
}

impl TestApp {
    /// A test application on the embedded broker, or on Apache Kafka when
    /// `KAFKACTOR_TEST_KAFKA` holds its bootstrap servers.
    pub fn builder() -> TestAppBuilder {
        match std::env::var(KAFKA_ENV) {
            Ok(addr) if !addr.trim().is_empty() => Self::kafka(addr.trim()),
            _ => Self::memory(),
        }
    }

    /// A test application on a new embedded broker of its own.
    pub fn memory() -> TestAppBuilder {
        TestAppBuilder::new(Target::Memory(3), None)
    }

    /// A test application on Apache Kafka at `bootstrap_servers`, with
    /// group settings for tests (a 6 s session) and names unique to the run.
    /// (Without kafkactor's `kafka` feature, starting it fails with
    /// [`Error::Config`].)
    pub fn kafka(bootstrap_servers: impl Into<String>) -> TestAppBuilder {
        TestAppBuilder::new(
            Target::Kafka(bootstrap_servers.into(), 3),
            Some(run_suffix()),
        )
    }

    /// A test application on `broker` as it is (names unique to the run
    /// when it is Apache Kafka).
    pub fn on(broker: Broker) -> TestAppBuilder {
        let run = broker.as_memory().is_none().then(run_suffix);
        TestAppBuilder::new(Target::Given(broker), run)
    }
}

/// A suffix no other run shares: the time, the process and a count.
fn run_suffix() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "t{ms:x}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestAppBuilder {
    fn new(target: Target, run: Option<String>) -> Self {
        TestAppBuilder {
            app: Kafkactor::builder(),
            target,
            run,
            watched: Vec::new(),
            calls: Calls::default(),
            patience: None,
        }
    }

    /// Whether the application runs on Apache Kafka.
    pub fn is_kafka(&self) -> bool {
        match &self.target {
            Target::Memory(_) => false,
            Target::Kafka(..) => true,
            Target::Given(broker) => broker.as_memory().is_none(),
        }
    }

    /// A topic name for this test: `name` on the embedded broker (each
    /// test has a broker of its own), `name` with the run's suffix on
    /// Kafka. Call it with the same `name` for the same topic.
    pub fn topic(&self, name: &str) -> String {
        self.unique(name)
    }

    fn unique(&self, name: &str) -> String {
        match &self.run {
            Some(run) => format!("{name}-{run}"),
            None => name.to_string(),
        }
    }

    /// Topics created with `partitions` partitions (default 3), for a
    /// broker the harness makes.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.target = match self.target {
            Target::Memory(_) => Target::Memory(partitions),
            Target::Kafka(addr, _) => Target::Kafka(addr, partitions),
            given => given,
        };
        self
    }

    /// How long [`TestApp::quiet`] and the other waits wait at most
    /// (default 10 s on the embedded broker, 60 s on Kafka, where groups
    /// take seconds to form).
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = Some(patience);
        self
    }

    /// Any other setting of the application: `.with(|b| b.replies(..))`.
    /// Subscriptions made here are not watched by [`TestApp::quiet`] and
    /// their groups keep their names.
    pub fn with(mut self, settings: impl FnOnce(AppBuilder) -> AppBuilder) -> Self {
        self.app = settings(self.app);
        self
    }

    /// Watches `sub` and gives its group the run's name.
    fn watch(&mut self, sub: Subscription) -> Subscription {
        let named = sub.group_name().to_string();
        let group = if named.is_empty() {
            named.clone()
        } else {
            self.unique(&named)
        };
        let sub = sub.group(group.clone());
        let mut reads = sub.topics.clone();
        if sub.retry.retry_topic().is_some() {
            reads.extend(sub.topics.iter().map(|t| topics::retry(t, &group)));
        }
        let dead_letters = topics::dead_letter(
            sub.topics.first().map(String::as_str).unwrap_or_default(),
            sub.dead_letter.as_deref(),
        );
        self.watched.push(Watched {
            named,
            group,
            topics: sub.topics.clone(),
            reads,
            dead_letters,
        });
        sub
    }

    /// [`AppBuilder::handle`], recording each call and its answer
    /// ([`TestApp::calls`]).
    pub fn handle<T, F, Fut, O>(mut self, sub: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: std::future::Future<Output = O> + 'static,
        O: Into<Outcome> + 'static,
    {
        let sub = self.watch(sub);
        let calls = self.calls.clone();
        self.app = self.app.handle(sub, move |d: Delivery<T>| {
            let (record, attempt) = (d.record_arc().clone(), d.attempt());
            let answer = handler(d);
            let calls = calls.clone();
            async move {
                let outcome: Outcome = answer.await.into();
                calls.push(Call::new(record, attempt, outcome.clone()));
                outcome
            }
        });
        self
    }

    /// [`AppBuilder::handler`]: a handler declaring its subscription
    /// ([`#[kafkactor::handler]`](crate::handler)), its calls recorded as
    /// [`handle`](TestAppBuilder::handle)'s are.
    pub fn handler(self, handler: impl crate::DeclaredHandler) -> Self {
        let subscription = handler.subscription();
        handler.register(self, subscription)
    }

    /// [`AppBuilder::subscribe`]: the handler actor's records are seen by
    /// their fates.
    pub fn subscribe<A, T, F>(mut self, sub: Subscription, factory: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Delivery<T>>,
        <A as Handler<Delivery<T>>>::Result: 'static,
        T: Decode,
        F: Fn() -> A + 'static,
    {
        let sub = self.watch(sub);
        self.app = self.app.subscribe(sub, factory);
        self
    }

    /// [`AppBuilder::subscribe_routes`].
    pub fn subscribe_routes<A, F>(
        mut self,
        sub: Subscription,
        routes: crate::Routes<A>,
        factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: Fn() -> A + 'static,
    {
        let sub = self.watch(sub);
        self.app = self.app.subscribe_routes(sub, routes, factory);
        self
    }

    /// [`AppBuilder::handle_batch`].
    pub fn handle_batch<T, F, Fut, O>(mut self, sub: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Batch<T>) -> Fut + 'static,
        Fut: std::future::Future<Output = O> + 'static,
        O: Into<BatchOutcome> + 'static,
    {
        let sub = self.watch(sub);
        self.app = self.app.handle_batch(sub, handler);
        self
    }

    /// Starts the application.
    pub async fn start(self) -> Result<TestApp> {
        let on_kafka = self.is_kafka();
        let broker = match self.target {
            Target::Memory(partitions) => Broker::memory_with_partitions(partitions)?,
            #[cfg(feature = "kafka")]
            Target::Kafka(addr, partitions) => Broker::kafka(addr)
                .topic_partitions(partitions)
                // Groups that form and notice a member gone in seconds.
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .set("topic.metadata.refresh.interval.ms", "1000"),
            #[cfg(not(feature = "kafka"))]
            Target::Kafka(..) => {
                return Err(Error::Config(
                    "Apache Kafka needs kafkactor's `kafka` feature".into(),
                ))
            }
            Target::Given(broker) => broker,
        };
        let app = self.app.broker(broker.clone()).start().await?;
        let patience = self.patience.unwrap_or(if on_kafka {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(10)
        });
        Ok(TestApp {
            app,
            broker,
            watched: self.watched,
            calls: self.calls,
            patience,
            on_kafka,
        })
    }
}

/// The wall clock records are stamped and delays measured with, as a test
/// moves it ([`TestApp::clock`]): only forward, for the whole process.
#[derive(Debug, Clone, Copy)]
pub struct TestClock(());

impl TestClock {
    /// Moves the clock `by` ahead: what was delayed until then is
    /// delivered at once (the Republisher looks again as the clock moves),
    /// and records published from now on are stamped that much later.
    pub fn advance(&self, by: Duration) {
        crate::clock::skew::advance(by);
    }

    /// How far ahead of the system's the clock is.
    pub fn ahead(&self) -> Duration {
        Duration::from_millis(crate::clock::skew::get().max(0) as u64)
    }
}

/// A dead letter: the record as written to the dead-letter topic, and
/// what it says of its failure.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record in the dead-letter topic (its original payload, key
    /// and headers, and the failure's headers).
    pub record: Record,
    /// Why it was dead-lettered, and where it came from.
    pub why: DeadLettered,
}

impl DeadLetter {
    /// The dead-lettered message, decoded.
    pub fn message<T: Decode>(&self) -> Result<T> {
        self.record.decode()
    }
}

impl TestApp {
    /// The running application.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The broker it runs on.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Whether it runs on Apache Kafka.
    pub fn is_kafka(&self) -> bool {
        self.on_kafka
    }

    /// Publishes `publish` through the application's producer and waits
    /// until it is written.
    pub async fn publish(&self, publish: Publish) -> Result<PublishOutcome> {
        self.app
            .producer()
            .send(publish)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    }

    /// Publishes each of `publishes` in order, at most 1,000 in flight at
    /// once, and waits until all are written.
    pub async fn publish_all(&self, publishes: impl IntoIterator<Item = Publish>) -> Result<()> {
        let producer = self.app.producer();
        let mut sent = Vec::new();
        for publish in publishes {
            sent.push(producer.send(publish));
            if sent.len() == 1_000 {
                for s in sent.drain(..) {
                    s.await.map_err(|e| Error::Unavailable(e.to_string()))??;
                }
            }
        }
        for s in sent {
            s.await.map_err(|e| Error::Unavailable(e.to_string()))??;
        }
        Ok(())
    }

    /// Waits until the application is quiet: every record of every topic
    /// its subscriptions read (their retry topics included) committed by
    /// their groups, and nothing written to any of them, over two looks
    /// in a row. A record being handled is not committed, so a handler
    /// still at work (or a retry waiting its backoff) keeps it from quiet;
    /// what a handler publishes before it answers is seen. Fails with
    /// [`Error::Unavailable`] naming what is not done after the patience.
    pub async fn quiet(&self) -> Result<()> {
        let deadline = Instant::now() + self.patience;
        let mut last: Option<Vec<i64>> = None;
        loop {
            let (pending, ends) = self.look().await?;
            if pending.is_empty() && last.as_ref() == Some(&ends) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "not quiet after {:?}: {}",
                    self.patience,
                    if pending.is_empty() {
                        "records keep coming".to_string()
                    } else {
                        pending.join("; ")
                    }
                )));
            }
            last = pending.is_empty().then_some(ends);
            tokio::time::sleep(self.poll()).await;
        }
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(if self.on_kafka { 50 } else { 5 })
    }

    /// What is not committed yet, and every watched partition's end.
    async fn look(&self) -> Result<(Vec<String>, Vec<i64>)> {
        let backend = self.broker.backend()?;
        let (mut pending, mut ends) = (Vec::new(), Vec::new());
        for w in &self.watched {
            for topic in &w.reads {
                let marks = backend.watermarks(topic).await?;
                let committed = backend.committed(&w.group, topic).await?;
                let lag = behind(&marks, &committed);
                if lag > 0 {
                    pending.push(format!("group {} has {lag} of {topic} to commit", w.named));
                }
                ends.extend(marks.iter().map(|&(_, high)| high));
            }
        }
        Ok((pending, ends))
    }

    /// Waits until `condition` holds, looking again every few
    /// milliseconds; fails with [`Error::Unavailable`] naming `what` after
    /// the patience.
    pub async fn until<F, Fut>(&self, what: &str, mut condition: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + self.patience;
        loop {
            if condition().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "waited {:?} for: {what}",
                    self.patience
                )));
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    /// Every call of a [`handle`](TestAppBuilder::handle) handler on
    /// records of `topic` that answered, in the order they answered (a
    /// retried record once per attempt).
    pub fn calls(&self, topic: &str) -> Vec<Call> {
        self.calls.of(topic)
    }

    /// The messages of [`calls`](TestApp::calls), decoded as `T`.
    pub fn messages<T: Decode>(&self, topic: &str) -> Result<Vec<T>> {
        self.calls(topic).iter().map(Call::message).collect()
    }

    /// Every record of `topic` now, partition by partition in offset order.
    pub async fn records(&self, topic: &str) -> Result<Vec<Record>> {
        self.broker.read_topic(topic).await
    }

    /// Every message of `topic` now, decoded as `T`, partition by
    /// partition in offset order.
    pub async fn published<T: Decode>(&self, topic: &str) -> Result<Vec<T>> {
        self.records(topic)
            .await?
            .iter()
            .map(Record::decode)
            .collect()
    }

    /// The dead letters of records from `topic`: those in the dead-letter
    /// topic of the subscription to `topic` (`<topic>.dlq` unless it set
    /// another) whose original topic is `topic`.
    pub async fn dead_letters(&self, topic: &str) -> Result<Vec<DeadLetter>> {
        let dlq = self
            .watched
            .iter()
            .find(|w| w.topics.iter().any(|t| t == topic))
            .map(|w| w.dead_letters.clone())
            .unwrap_or_else(|| topics::dead_letter(topic, None));
        Ok(self
            .records(&dlq)
            .await?
            .into_iter()
            .filter_map(|record| {
                let why = record.dead_lettered()?;
                (why.original_topic.as_deref() == Some(topic)).then_some(DeadLetter { record, why })
            })
            .collect())
    }

    /// The offsets `group` (as the test named it) committed in `topic`, by
    /// partition.
    pub async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<i64>>> {
        self.broker
            .committed_offsets(&self.group(group), topic)
            .await
    }

    /// The records of `topic` that `group` (as the test named it) has not
    /// committed.
    pub async fn lag(&self, group: &str, topic: &str) -> Result<i64> {
        self.broker.lag(&self.group(group), topic).await
    }

    /// The group the broker knows for `group` as the test named it.
    pub fn group(&self, group: &str) -> String {
        self.watched
            .iter()
            .find(|w| w.named == group)
            .map(|w| w.group.clone())
            .unwrap_or_else(|| group.to_string())
    }

    /// The wall clock, to advance (see [`TestClock`]): on the embedded
    /// broker only. Apache Kafka refuses records stamped ahead of its own
    /// clock (past `message.timestamp.after.max.ms`, an hour by default),
    /// so there it is [`Error::Config`].
    pub fn clock(&self) -> Result<TestClock> {
        if self.on_kafka {
            return Err(Error::Config(
                "the test clock moves the embedded broker's time only: Apache Kafka refuses \
                 records stamped ahead of its own clock (message.timestamp.after.max.ms)"
                    .into(),
            ));
        }
        Ok(TestClock(()))
    }

    /// Crashes the actor at `path` (see [`App::fail_actor`]).
    pub async fn fail_actor(&self, path: &str, reason: &str) -> Result<()> {
        self.app.fail_actor(path, reason).await
    }

    /// The path of the subscription of `group` (as the test named it), for
    /// [`fail_actor`](TestApp::fail_actor): `subscription:<group>:<topics>`.
    pub fn subscription_path(&self, group: &str) -> Result<String> {
        let w = self
            .watched
            .iter()
            .find(|w| w.named == group)
            .ok_or_else(|| Error::UnknownActor(format!("subscription of group {group}")))?;
        Ok(format!("subscription:{}:{}", w.group, w.topics.join(",")))
    }

    /// Takes the partitions of `group`'s subscription away: its consumer
    /// connection fails, leaves the group and joins it again, and its
    /// records in flight are handled again.
    pub async fn revoke(&self, group: &str) -> Result<()> {
        let path = format!("{}/consumer-connection", self.subscription_path(group)?);
        self.app.fail_actor(&path, "revoked by the test").await
    }

    /// Waits until the application's members own `partitions` partitions
    /// in all.
    pub async fn until_owned(&self, partitions: usize) -> Result<()> {
        self.until(&format!("{partitions} partitions owned"), || async {
            self.app.assigned_partitions().await.len() >= partitions
        })
        .await
    }

    /// Stops the application as [`App::shutdown`] does.
    pub async fn shutdown(self) -> Result<()> {
        self.app.shutdown().await
    }
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("app", &self.app)
            .field(
                "groups",
                &self.watched.iter().map(|w| &w.group).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for TestAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAppBuilder")
            .field("target", &self.target)
            .field("run", &self.run)
            .finish()
    }
}

impl crate::Subscriber for TestAppBuilder {
    fn handle<T, F, Fut, O>(self, sub: Subscription, handler: F) -> Self
    where
        T: Decode,
        F: Fn(Delivery<T>) -> Fut + 'static,
        Fut: std::future::Future<Output = O> + 'static,
        O: Into<Outcome> + 'static,
    {
        TestAppBuilder::handle(self, sub, handler)
    }
}
