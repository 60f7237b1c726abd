//! Dead-letter replay: a dead-letter topic's records sent back to the
//! topics they failed on, selected, at a rate, loop-safe, resumable.
//!
//! A run ([`Replay`]) reads the dead-letter topic under a group of its own
//! (`kafkactor.replay.<topic>.<name>`), from what that group committed:
//! - it takes only records below the end offsets the topic had when the
//!   run started, so a record dead-lettered again during the run is not
//!   replayed by it (no loop);
//! - each record sent back carries `x-replay-count`, one more than it had;
//!   a record replayed [`max_replays`](Replay::max_replays) times already
//!   goes to the parking topic (`<topic>.parked`) instead, as does one
//!   whose payload was dropped or that names no valid `x-original-topic`;
//! - the replayed record keeps the first failure's provenance
//!   (`x-original-topic`, `-partition`, `-offset`, `x-group`) and loses the
//!   failure's kind, reason, attempt and time: when it fails again, its
//!   new dead letter has exactly one reason, the latest;
//! - a record is committed under the run's group once its write is
//!   acknowledged (or at once when the selection passes it over), so a
//!   run cancelled or cut off resumes where it stopped, and a second run
//!   under the same name over the same range sends nothing. Only records
//!   whose write was under way at a crash may be sent twice.
//!
//! Writes leave in the dead-letter topic's offset order, keyed as they
//! were, so records of one key reach their topic's partition in order.
//!
//! The run is its own supervision subtree (`tree.rs`), a root beside any
//! application: it needs an actix system, nothing else.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kafkactor_actors::{ChildRef, SupervisorHandle};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::envelope::Record;
use crate::error::{check_topic, Error, Result};
use crate::topics;
use progress::{Partition, Run, State};
use replayer::{Cancel, Replayer};
use select::Selection;

mod progress;
mod replayer;
mod select;
mod tree;

/// A dead-letter replay, built then [`run`](Replay::run) or
/// [`start`](Replay::start)ed:
///
/// ```no_run
/// # use std::time::Duration;
/// # use kafkactor::{Broker, Replay, header};
/// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
/// let broker = Broker::kafka("127.0.0.1:9092");
/// let report = Replay::from("orders.dlq")
///     .filter(|r| r.headers.get_str(header::ERROR_KIND) == Some("rejected"))
///     .rate(200.0)
///     .run(&broker)
///     .await?;
/// println!("sent {} parked {}", report.sent, report.parked);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Replay {
    topic: String,
    name: String,
    selection: Selection,
    rate: Option<f64>,
    limit: Option<u64>,
    dry_run: bool,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("topic", &self.topic)
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("limit", &self.limit)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// What a replay run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The group the run committed its progress under.
    pub group: String,
    /// Records the selection took (sent or parked; for a dry run, would be).
    pub matched: u64,
    /// Records sent back (for a dry run, that would be).
    pub sent: u64,
    /// Records written to the parking topic (for a dry run, that would be).
    pub parked: u64,
    /// Records the selection passed over.
    pub skipped: u64,
    /// Records below the run's end offsets not finished: what a run of the
    /// same name takes next (0 when the run went to the end).
    pub remaining: u64,
    /// Nothing was written or committed: the counts are what a run would do.
    pub dry_run: bool,
    /// The run was cancelled ([`ReplayRun::cancel`]).
    pub cancelled: bool,
    /// The run stopped at its limit.
    pub limit_reached: bool,
}

impl Replay {
    /// A replay of the dead-letter topic `topic`, every record sent back to
    /// its `x-original-topic`, as fast as the broker takes them, under the
    /// run name `default`.
    pub fn from(topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Replay {
            selection: Selection {
                filter: None,
                failed_from: None,
                failed_until: None,
                to: None,
                max_replays: 3,
                parking: Arc::from(topics::parking(&topic, None)),
            },
            topic,
            name: "default".to_string(),
            rate: None,
            limit: None,
            dry_run: false,
            delivery_timeout: Duration::from_secs(30),
        }
    }

    /// Names the run: its progress is committed under
    /// `kafkactor.replay.<topic>.<name>`. A run of the same name resumes
    /// where the last one stopped; records a run passed over (outside its
    /// selection) are committed too, so give another selection another name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replays only the records `filter` takes (it sees key and headers:
    /// `x-error-kind`, `x-error-reason`, `x-original-topic`, ..).
    pub fn filter(mut self, filter: impl Fn(&Record) -> bool + Send + Sync + 'static) -> Self {
        self.selection.filter = Some(Arc::new(filter));
        self
    }

    /// Replays only records that failed (`x-failed-at`, else their
    /// timestamp) at or after `from` and before `until`.
    pub fn failed_between(mut self, from: Option<SystemTime>, until: Option<SystemTime>) -> Self {
        let ms = crate::publish::epoch_ms_rounded_up;
        self.selection.failed_from = from.map(ms);
        self.selection.failed_until = until.map(ms);
        self
    }

    /// Sends the records to `topic` instead of their `x-original-topic`.
    pub fn to(mut self, topic: impl Into<String>) -> Self {
        self.selection.to = Some(Arc::from(topic.into()));
        self
    }

    /// At most `per_second` records a second.
    pub fn rate(mut self, per_second: f64) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// At most `records` sent or parked by this run.
    pub fn limit(mut self, records: u64) -> Self {
        self.limit = Some(records);
        self
    }

    /// Counts what the run would do, writing and committing nothing.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Parks a record replayed `times` already instead of sending it
    /// again (default 3).
    pub fn max_replays(mut self, times: u32) -> Self {
        self.selection.max_replays = times;
        self
    }

    /// Where records replayed too often go (default `<topic>.parked`).
    pub fn parking_topic(mut self, topic: impl Into<String>) -> Self {
        self.selection.parking = Arc::from(topic.into());
        self
    }

    /// How long a write may take before the run stops with its error
    /// (default 30 s).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// The group this run commits its progress under.
    pub fn group(&self) -> String {
        topics::replay_group(&self.topic, &self.name)
    }

    /// Runs the replay to its end (or its limit).
    pub async fn run(self, broker: &Broker) -> Result<ReplayReport> {
        self.start(broker).await?.finished().await
    }

    /// Starts the replay: the dead-letter topic's end offsets are taken
    /// now. Must be called inside an actix system.
    pub async fn start(self, broker: &Broker) -> Result<ReplayRun> {
        self.check()?;
        let backend = broker.backend()?;
        let group = self.group();
        if backend.partitions(&self.topic).await?.is_none() {
            return Err(Error::Config(format!(
                "replay: no topic `{}` on {}",
                self.topic,
                backend.describe()
            )));
        }
        let marks = backend.watermarks(&self.topic).await?;
        let committed = backend.committed(&group, &self.topic).await?;
        let partitions = marks
            .iter()
            .enumerate()
            .map(|(p, &(low, high))| {
                let start = crate::broker::position(&committed, p, low);
                (p as i32, Partition::new(start, high))
            })
            .collect();
        if !self.dry_run {
            backend.ensure_topic(&self.selection.parking, None).await?;
        }
        let state = State {
            partitions,
            report: ReplayReport {
                group: group.clone(),
                dry_run: self.dry_run,
                ..ReplayReport::default()
            },
            ..State::default()
        };
        let (over, finished) = oneshot::channel();
        let run = Arc::new(Run::new(
            self.selection,
            self.rate,
            self.limit,
            self.dry_run,
            self.delivery_timeout,
            state,
            over,
        ));
        let (supervisor, replayer) = tree::start(backend, run.clone(), &self.topic, &group);
        Ok(ReplayRun {
            run,
            supervisor: Some(supervisor),
            replayer,
            finished,
        })
    }

    /// Refuses what cannot run.
    fn check(&self) -> Result<()> {
        check_topic(&self.topic)?;
        check_topic(&self.selection.parking)?;
        if let Some(to) = &self.selection.to {
            check_topic(to)?;
        }
        if self.name.is_empty() {
            return Err(Error::Config("replay: the run's name is empty".into()));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::Config(format!(
                    "replay: the rate must be a positive number of records a second, not {rate}"
                )));
            }
        }
        Ok(())
    }
}

/// A replay under way. Dropped before it is [`finished`](Self::finished),
/// it is cancelled and stopped (its progress committed) in the background.
pub struct ReplayRun {
    run: Arc<Run>,
    /// Taken when the run is finished.
    supervisor: Option<SupervisorHandle>,
    replayer: ChildRef<Replayer>,
    finished: oneshot::Receiver<()>,
}

impl std::fmt::Debug for ReplayRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayRun").finish_non_exhaustive()
    }
}

/// Cancels a replay run or reads its progress while another task awaits
/// it ([`ReplayRun::control`]).
#[derive(Clone)]
pub struct ReplayControl {
    run: Arc<Run>,
    replayer: ChildRef<Replayer>,
}

impl std::fmt::Debug for ReplayControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayControl").finish_non_exhaustive()
    }
}

impl ReplayControl {
    /// Stops the run at the next record boundary: the writes under way
    /// finish and are committed, nothing more is sent; a run of the same
    /// name resumes from there.
    pub fn cancel(&self) {
        self.run.cancel();
        if let Some(replayer) = self.replayer.get() {
            replayer.do_send(Cancel);
        }
    }

    /// What the run did so far.
    pub fn progress(&self) -> ReplayReport {
        let state = self.run.state();
        ReplayReport {
            remaining: state.remaining(),
            ..state.report.clone()
        }
    }
}

impl ReplayRun {
    /// Cancels the run or reads its progress from elsewhere.
    pub fn control(&self) -> ReplayControl {
        ReplayControl {
            run: self.run.clone(),
            replayer: self.replayer.clone(),
        }
    }

    /// See [`ReplayControl::cancel`].
    pub fn cancel(&self) {
        self.control().cancel()
    }

    /// See [`ReplayControl::progress`].
    pub fn progress(&self) -> ReplayReport {
        self.control().progress()
    }

    /// Waits for the run's end, commits its progress and stops it; its
    /// report, or why it stopped early (a write that failed: the record and
    /// everything after it stay uncommitted).
    pub async fn finished(mut self) -> Result<ReplayReport> {
        let Some(mut supervisor) = self.supervisor.take() else {
            return Err(Error::Shutdown);
        };
        let gave_up = tokio::select! {
            _ = &mut self.finished => None,
            exit = supervisor.wait() => Some(exit),
        };
        if let Some(exit) = gave_up {
            return Err(Error::Escalated(format!(
                "the replay run stopped: {exit:?}"
            )));
        }
        supervisor.shutdown().await;
        let mut state = self.run.state();
        if let Some(error) = state.error.take() {
            return Err(error);
        }
        Ok(ReplayReport {
            remaining: state.remaining(),
            ..state.report.clone()
        })
    }
}

impl Drop for ReplayRun {
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            self.cancel();
            actix::spawn(async move {
                supervisor.shutdown().await;
            });
        }
    }
}
