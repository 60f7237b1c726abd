//! [`App`]: the running application, what [`AppBuilder::start`](crate::AppBuilder::start)
//! returns: its publisher, what it observes of itself, fault injection,
//! and its stop.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafkactor_actors::{ChildRef, Events, Exit, FailChildError, SupervisorHandle};

use super::health::Observed;
use crate::broker::Broker;
use crate::connection::consumer::Owned;
use crate::error::{Error, Result};
use crate::observe::health::Health;
use crate::producer::handle::IntakeSender;
use crate::producer::{Producer, ProducerHandle};
use crate::request::Requester;

/// A running application. Publish through [`App::producer`]; stop with
/// [`App::shutdown`], which drains in-flight work and commits.
pub struct App {
    pub(super) observed: Observed,
    pub(super) http_addr: Option<std::net::SocketAddr>,
    pub(super) root: SupervisorHandle,
    pub(super) producer: ChildRef<Producer>,
    pub(super) connection:
        ChildRef<crate::connection::producer::ProducerConnection<crate::producer::PublishReply>>,
    /// Where [`ProducerHandle`]s send.
    pub(super) intake: IntakeSender,
    pub(super) delivery_timeout: Duration,
    pub(super) broker: Broker,
    pub(super) events: Events,
    /// What its requesters share, when it reads replies.
    pub(super) requests: Option<Arc<crate::request::Requests>>,
    /// The other brokers, by name, with their producers.
    pub(super) named: Vec<(Arc<str>, Broker, ProducerHandle)>,
    /// Its AsyncAPI document.
    pub(super) asyncapi: Arc<serde_json::Value>,
    /// Counts the supervision events while the application lives.
    pub(super) _counting: crate::observe::supervision::Counting,
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
            self.connection.clone(),
            self.intake.clone(),
            self.delivery_timeout,
        )
    }

    /// The producer of the broker named `name`
    /// ([`AppBuilder::named_broker`](crate::AppBuilder::named_broker));
    /// [`Error::Config`] when the application names no such broker.
    pub fn producer_on(&self, name: &str) -> Result<ProducerHandle> {
        if name == super::start::DEFAULT_BROKER {
            return Ok(self.producer());
        }
        self.named
            .iter()
            .find(|(n, ..)| &**n == name)
            .map(|(_, _, producer)| producer.clone())
            .ok_or_else(|| Error::Config(format!("the application names no broker {name:?}")))
    }

    /// The broker named `name`, or [`Error::Config`] when the application
    /// names no such broker.
    pub fn broker_named(&self, name: &str) -> Result<&Broker> {
        if name == super::start::DEFAULT_BROKER {
            return Ok(&self.broker);
        }
        self.named
            .iter()
            .find(|(n, ..)| &**n == name)
            .map(|(_, broker, _)| broker)
            .ok_or_else(|| Error::Config(format!("the application names no broker {name:?}")))
    }

    /// Sends requests and awaits their replies (see [`Requester`]); the
    /// application reads its replies where
    /// [`AppBuilder::replies`](crate::AppBuilder::replies) says (without
    /// it, every request fails with [`Error::Config`](crate::Error::Config)).
    pub fn requester(&self) -> Requester {
        Requester::new(self.requests.clone(), self.producer())
    }

    /// The application's AsyncAPI 3.0 document (see
    /// [`AsyncApi`](crate::AsyncApi)), as served at `/asyncapi`.
    pub fn asyncapi(&self) -> &serde_json::Value {
        &self.asyncapi
    }

    /// The partitions this application's members (its subscriptions and
    /// its Republisher) own right now, over all of them, sorted. Each
    /// consumer connection answers for itself; one that is restarting owns
    /// nothing.
    pub async fn assigned_partitions(&self) -> Vec<crate::TopicPartition> {
        let asked: Vec<_> = self
            .observed
            .members()
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
    /// [`AppBuilder::metrics_registry`](crate::AppBuilder::metrics_registry), or one of its own. The metrics
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
    /// [`AppBuilder::serve_http`](crate::AppBuilder::serve_http).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// The supervision tree's lifecycle events.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Makes the actor at `path` fail with `reason`, as a crash would: its
    /// supervisor restarts it by its policy. For fault-injection tests and
    /// operators. Paths are child ids joined by `/`, as the tree in the
    /// README draws them: `producer-connection`, `producer`, `dead-letter`;
    /// with [`lineage`](crate::AppBuilder::lineage) `lineage`; per outbox
    /// relay `outbox:<table>`; with [`delays`](crate::AppBuilder::delays)
    /// `republisher/producer-connection`, `republisher/consumer-connection`
    /// and `republisher/republisher`; per subscription
    /// `subscription:<group>:<topics>/handlers/handler-<lane>`,
    /// `subscription:<group>:<topics>/dispatcher` and
    /// `subscription:<group>:<topics>/consumer-connection`, where
    /// `<topics>` are the subscription's topics joined by `,`; with
    /// [`serve_http`](crate::AppBuilder::serve_http) `http`. A path that
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
