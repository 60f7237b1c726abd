//! What the application observes of itself: health and the metrics read
//! on demand, as [`App::health`](crate::App::health),
//! [`App::metrics_text`](crate::App::metrics_text) and the HTTP endpoints
//! answer them.
//!
//! Ready means: the broker answers a metadata request (asked at most once
//! per [`PROBE_EVERY`], within [`PROBE_TIMEOUT`]), and every consumer (each
//! subscription and the Republisher) is running and owns at least one
//! partition. A member of a group with more members than partitions owns
//! none and so reports not ready: it stands by. Neither is a subscription
//! in a crash loop: its handlers past their restart limit (for the limit's
//! window after it was last exceeded), or the last
//! [`DEAD_LETTER_STREAK`](crate::observe::health::DEAD_LETTER_STREAK)
//! records it finished all dead-lettered (until one is acknowledged). Nor
//! an application one of whose dependencies (an idempotency store, the
//! outbox's database) fails.
//!
//! Consumer lag and the delayed backlog are read from the broker when the
//! metrics are gathered: the high watermark and the group's committed
//! offset of each partition (within [`SCRAPE_TIMEOUT`]; past it the gauges
//! keep their last values).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafkactor_actors::ChildRef;

use crate::broker::BrokerBackend;
use crate::connection::consumer::{ConsumerConnection, Owned};
use crate::observe::health::{Check, Failing, Health};
use crate::observe::metrics::Metrics;

/// How long a broker probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a probe's answer is kept.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long reading lag from the broker may take at a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// One consumer of the application: a subscription or the Republisher.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) connection: ChildRef<ConsumerConnection>,
    /// The broker it reads from.
    pub(crate) backend: Arc<dyn BrokerBackend>,
    /// The Republisher's: its topics are delay buckets, and its lag is
    /// their backlog.
    pub(crate) buckets: bool,
}

/// What health and on-demand metrics are read from; shared by the
/// application and its HTTP endpoints.
#[derive(Clone)]
pub(crate) struct Observed(Arc<Inner>);

struct Inner {
    metrics: Metrics,
    backend: Arc<dyn BrokerBackend>,
    members: Vec<Member>,
    /// The other dependencies' checks: name and failure.
    dependencies: Vec<(String, Failing)>,
    /// The last probe's answer and when it was asked.
    probed: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Observed {
    pub(crate) fn new(
        metrics: Metrics,
        backend: Arc<dyn BrokerBackend>,
        members: Vec<Member>,
        dependencies: Vec<(String, Failing)>,
    ) -> Self {
        Observed(Arc::new(Inner {
            metrics,
            backend,
            members,
            dependencies,
            probed: Mutex::new(None),
        }))
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn members(&self) -> &[Member] {
        &self.0.members
    }

    /// Whether the broker answers, asked at most once per [`PROBE_EVERY`].
    async fn broker(&self) -> Result<(), String> {
        let cached = self
            .0
            .probed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((at, answer)) = cached {
            if at.elapsed() < PROBE_EVERY {
                return answer;
            }
        }
        let probe = self.0.backend.probe(PROBE_TIMEOUT);
        let answer = match tokio::time::timeout(PROBE_TIMEOUT * 2, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", PROBE_TIMEOUT * 2)),
        };
        *self.0.probed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), answer.clone()));
        answer
    }

    /// The readiness checks, with `live` as given.
    pub(crate) async fn health(&self, live: bool) -> Health {
        let mut checks = Vec::with_capacity(1 + self.0.members.len());
        let broker = self.broker().await;
        checks.push(Check {
            name: "broker".into(),
            ok: broker.is_ok(),
            detail: match broker {
                Ok(()) => "answers".into(),
                Err(e) => e,
            },
        });
        let owned = join_all(self.0.members.iter().map(|c| async move {
            match c.connection.get() {
                None => Err("not running (starting or restarting)".to_string()),
                Some(addr) => match addr.send(Owned).await {
                    Ok(owned) if owned.is_empty() => Err("owns no partition".to_string()),
                    Ok(owned) => Ok(owned.len()),
                    Err(_) => Err("not running (restarting)".to_string()),
                },
            }
        }))
        .await;
        for (c, owned) in self.0.members.iter().zip(owned) {
            checks.push(Check {
                name: format!("consumer:{}", c.group),
                ok: owned.is_ok(),
                detail: match owned {
                    Ok(n) => format!("owns {n} partitions"),
                    Err(e) => e,
                },
            });
        }
        for (name, failing) in &self.0.dependencies {
            let failing = failing.get();
            checks.push(Check {
                name: name.clone(),
                ok: failing.is_none(),
                detail: failing.unwrap_or_else(|| "answers".into()),
            });
        }
        let ready = live && checks.iter().all(|c| c.ok);
        Health {
            live,
            ready,
            checks,
        }
    }

    /// Reads every consumer's lag from the broker into the gauges.
    pub(crate) async fn refresh_lag(&self) {
        let work = join_all(self.0.members.iter().map(|c| self.refresh(c)));
        if tokio::time::timeout(SCRAPE_TIMEOUT, work).await.is_err() {
            tracing::debug!("consumer lag not read within {SCRAPE_TIMEOUT:?}: last values kept");
        }
    }

    async fn refresh(&self, c: &Member) {
        let collectors = self.0.metrics.collectors();
        for topic in &c.topics {
            let marks = c.backend.watermarks(topic);
            let committed = c.backend.committed(&c.group, topic);
            let (Ok(marks), Ok(committed)) = futures_util::future::join(marks, committed).await
            else {
                continue;
            };
            let mut backlog = 0;
            for (p, (low, high)) in marks.iter().enumerate() {
                let from = committed.get(p).copied().flatten().unwrap_or(*low);
                let lag = (high - from).max(0);
                backlog += lag;
                collectors
                    .consumer_lag
                    .with_label_values(&[c.group.as_str(), topic, &p.to_string()])
                    .set(lag);
            }
            if c.buckets {
                collectors
                    .delayed_backlog
                    .with_label_values(&[topic])
                    .set(backlog);
            }
        }
    }

    /// The metrics in Prometheus' text format, lag read first (when
    /// kafkactor's metrics are on).
    pub(crate) async fn render(&self) -> String {
        if self.0.metrics.on() {
            self.refresh_lag().await;
        }
        let families = self.0.metrics.registry().gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
    }
}
