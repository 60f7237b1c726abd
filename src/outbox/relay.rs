//! The outbox relay: an actor under the root supervisor (child `outbox`,
//! started after the Producer, stopped before it) that moves an outbox
//! table's rows to the broker.
//!
//! **Role.** In a loop: one database transaction takes up to a batch of
//! rows from the shards whose advisory lock it gets (see
//! [`outbox`](super)), publishes them through the application's
//! [`Producer`](crate::Producer) as one [`PublishBatch`], waits for every
//! outcome, deletes the rows the broker acknowledged, records the reason on
//! rows it refused for good, and commits. A batch that took rows is
//! followed by the next at once; after one that found none the relay waits
//! for a notification from the table's trigger (`LISTEN`), or the poll
//! interval.
//!
//! **Messages.** [`Shutdown`] only: the batch under way finishes (its rows
//! acknowledged are deleted), then the relay stops.
//!
//! **Owns** its `LISTEN` connection and, during a batch, one pooled
//! connection with its transaction and shard locks.
//!
//! **Restart.** The future running the loop is dropped with the
//! incarnation: a batch under way is rolled back (its locks released), so
//! the rows it had published are published again by the next batch, with
//! the same message ids. Nothing is lost.
//!
//! **Failures.** A database call that fails is retried, backing off from
//! 50 ms to 5 s; meanwhile the application is not ready (check `outbox:<table>`)
//! and each failure is counted in `kafkactor_outbox_errors_total`. A
//! publish the broker may accept later (retriable) leaves its row for the
//! next batch, after the same backoff.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use kafkactor_actors::{Backoff, Shutdown};
use prometheus::IntCounter;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::Notify;

use super::{database, row, Outbox, SHARDS};
use crate::error::{Error, Result};
use crate::observe::health::Failing;
use crate::observe::metrics::Metrics;
use crate::producer::{ProducerHandle, PublishBatch};
use crate::publish::{Publish, PublishOutcome};

/// Shortest and longest wait after a failed batch.
const BACKOFF: Backoff = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(5));

/// How many shards one batch takes at most: the rest are left to other
/// relays.
const SHARDS_PER_BATCH: i64 = SHARDS as i64 / 4;

/// The relay of one outbox table, for
/// [`AppBuilder::outbox_relay`](crate::AppBuilder::outbox_relay).
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> kafkactor::Result<()> {
/// use kafkactor::outbox::{Outbox, OutboxRelay};
/// use kafkactor::{Broker, Kafkactor};
///
/// let app = Kafkactor::builder()
///     .broker(Broker::memory())
///     .outbox_relay(OutboxRelay::new(pool, Outbox::new()).batch(500))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pub(crate) pool: PgPool,
    pub(crate) outbox: Outbox,
    batch: usize,
    poll: Duration,
}

impl OutboxRelay {
    /// Relays `outbox`'s rows, reading them through `pool`. Batches of 500
    /// rows; without a notification, a look every second.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        OutboxRelay {
            pool,
            outbox,
            batch: 500,
            poll: Duration::from_secs(1),
        }
    }

    /// At most this many rows per batch (one transaction, one
    /// [`PublishBatch`]); 1 to 10,000.
    pub fn batch(mut self, rows: usize) -> Self {
        self.batch = rows;
        self
    }

    /// How long the relay waits for a notification before looking anyway
    /// (rows written with the trigger disabled, shards another relay held).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(1..=10_000).contains(&self.batch) {
            return Err(Error::Config(format!(
                "outbox relay batch of {} rows: must be 1 to 10,000",
                self.batch
            )));
        }
        if self.poll.is_zero() {
            return Err(Error::Config(
                "outbox relay poll interval must not be zero".into(),
            ));
        }
        Ok(())
    }

    /// Whether the database answers and the table exists: a typed error
    /// before the application starts otherwise.
    pub(crate) async fn check(&self) -> Result<()> {
        let sql = &self.outbox.statements().check;
        match sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                Err(Error::Config(format!(
                    "outbox table {} does not exist: run Outbox::migrate (or Outbox::schema in a migration of your own)",
                    self.outbox.table_name()
                )))
            }
            Err(e) => Err(database(e)),
        }
    }
}

/// The relay actor: one incarnation runs one loop.
pub(crate) struct OutboxRelayActor {
    relay: OutboxRelay,
    producer: ProducerHandle,
    metrics: Metrics,
    failing: Failing,
    stop: Rc<Stop>,
}

/// Asks a running loop to stop after its batch.
#[derive(Default)]
struct Stop {
    asked: Cell<bool>,
    wake: Notify,
}

impl OutboxRelayActor {
    pub(crate) fn new(
        relay: OutboxRelay,
        producer: ProducerHandle,
        metrics: Metrics,
        failing: Failing,
    ) -> Self {
        OutboxRelayActor {
            relay,
            producer,
            metrics,
            failing,
            stop: Rc::default(),
        }
    }
}

impl Actor for OutboxRelayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let c = self.metrics.collectors();
        let table = [self.relay.outbox.table_name()];
        let relay = Relay {
            settings: self.relay.clone(),
            producer: self.producer.clone(),
            counters: Counters {
                sent: c.outbox_sent.with_label_values(&table),
                failed: c.outbox_failed.with_label_values(&table),
                errors: c.outbox_errors.with_label_values(&table),
            },
            failing: self.failing.clone(),
            stop: self.stop.clone(),
        };
        ctx.spawn(relay.run().into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

impl Handler<Shutdown> for OutboxRelayActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.stop.asked.set(true);
        self.stop.wake.notify_one();
    }
}

/// What one batch did.
struct Batch {
    /// Rows taken.
    taken: usize,
    /// Rows left for a later batch (the broker may take them then).
    left: usize,
}

/// The loop of one incarnation.
struct Relay {
    settings: OutboxRelay,
    producer: ProducerHandle,
    counters: Counters,
    failing: Failing,
    stop: Rc<Stop>,
}

/// The relay's counters, resolved for its table once.
struct Counters {
    sent: IntCounter,
    failed: IntCounter,
    errors: IntCounter,
}

impl Relay {
    async fn run(self) {
        let channel = self.settings.outbox.table_name().replace('.', "_");
        let mut listener: Option<Bound<PgListener>> = None;
        // Batches in a row that failed or left rows behind.
        let mut failures = 0;
        while !self.stop.asked.get() {
            if listener.is_none() {
                listener = self.listen(&channel).await;
            }
            let wait = match self.batch().await {
                Ok(batch) => {
                    self.failing.clear_for("database");
                    if batch.left > 0 {
                        failures += 1;
                        Some(BACKOFF.delay(failures))
                    } else {
                        failures = 0;
                        // Rows taken: more may wait (in this batch's shards
                        // or others), so the next batch starts at once.
                        (batch.taken == 0).then_some(self.settings.poll)
                    }
                }
                Err(e) => {
                    let wait = BACKOFF.delay(failures);
                    failures += 1;
                    tracing::warn!(table = %self.settings.outbox.table_name(), error = %e, retry_in = ?wait, "outbox relay: database call failed");
                    self.counters.errors.inc();
                    self.failing.set_for("database", e.to_string());
                    Some(wait)
                }
            };
            let Some(wait) = wait else { continue };
            let stopping = self.stop.wake.notified();
            let sleep = tokio::time::sleep(wait);
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    notified = l.recv() => if let Err(e) = notified {
                        tracing::debug!(error = %e, "outbox relay: LISTEN connection lost");
                        listener = None;
                    },
                    () = sleep => {},
                    () = stopping => {},
                },
                None => tokio::select! {
                    () = sleep => {},
                    () = stopping => {},
                },
            }
        }
    }

    /// A connection listening to the table's notifications (None when the
    /// database cannot be reached: the loop polls, and tries again).
    async fn listen(&self, channel: &str) -> Option<Bound<PgListener>> {
        let mut listener = Bound::new(PgListener::connect_with(&self.settings.pool).await.ok()?);
        listener.listen(channel).await.ok()?;
        Some(listener)
    }

    /// One batch, in one transaction.
    async fn batch(&self) -> Result<Batch> {
        let mut tx = Bound::new(self.settings.pool.begin().await.map_err(database)?);
        let rows = self.take(&mut tx).await?;
        let taken = rows.len();
        if taken == 0 {
            tx.into_inner().commit().await.map_err(database)?;
            return Ok(Batch { taken, left: 0 });
        }
        let (ids, publishes, mut failed) = read_rows(&rows);
        let outcomes = self
            .producer
            .send_batch(PublishBatch(publishes))
            .await
            .map_err(|e| Error::Unavailable(format!("the Producer did not answer: {e}")))?;
        let (sent, left) = split_outcomes(ids, outcomes, &mut failed);
        self.settle(&mut tx, &sent, &failed).await?;
        tx.into_inner().commit().await.map_err(database)?;
        self.counters.sent.inc_by(sent.len() as u64);
        self.counters.failed.inc_by(failed.0.len() as u64);
        Ok(Batch { taken, left })
    }

    /// Locks up to [`SHARDS_PER_BATCH`] free shards and takes up to a
    /// batch of their rows (none when no shard is free).
    async fn take(&self, conn: &mut PgConnection) -> Result<Vec<PgRow>> {
        let sql = self.settings.outbox.statements();
        // Every shard, starting at a random one, so relays spread out.
        let first = fastrand::i16(0..SHARDS);
        let shards: Vec<i16> = (0..SHARDS).map(|i| (first + i) % SHARDS).collect();
        let locked: Vec<i16> = sqlx::query_scalar(AssertSqlSafe(sql.lock.clone()))
            .bind(shards)
            .bind(sql.lock_class)
            .bind(SHARDS_PER_BATCH)
            .fetch_all(&mut *conn)
            .await
            .map_err(database)?;
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(AssertSqlSafe(sql.take.clone()))
            .bind(locked)
            .bind(self.settings.batch as i64)
            .fetch_all(conn)
            .await
            .map_err(database)
    }

    /// Deletes the rows `sent`; records why the `failed` ones were refused.
    async fn settle(&self, conn: &mut PgConnection, sent: &[i64], failed: &Refused) -> Result<()> {
        let sql = self.settings.outbox.statements();
        sqlx::query(AssertSqlSafe(sql.delete.clone()))
            .bind(sent)
            .execute(&mut *conn)
            .await
            .map_err(database)?;
        if !failed.0.is_empty() {
            for (id, reason) in failed.0.iter().zip(&failed.1) {
                tracing::warn!(table = %sql.table, id, %reason, "outbox row refused: kept with its error");
            }
            sqlx::query(AssertSqlSafe(sql.fail.clone()))
                .bind(&failed.0)
                .bind(&failed.1)
                .execute(conn)
                .await
                .map_err(database)?;
        }
        Ok(())
    }
}

/// Rows refused for good: their ids, and why (in the same order).
type Refused = (Vec<i64>, Vec<String>);

/// The ids and publishes of the rows read; rows that cannot be read are refused.
fn read_rows(rows: &[PgRow]) -> (Vec<i64>, Vec<Publish>, Refused) {
    let mut ids = Vec::with_capacity(rows.len());
    let mut publishes = Vec::with_capacity(rows.len());
    let mut failed = Refused::default();
    for (id, publish) in rows.iter().map(row::read) {
        match publish {
            Ok(publish) => {
                ids.push(id);
                publishes.push(publish);
            }
            Err(e) => {
                failed.0.push(id);
                failed.1.push(e.to_string());
            }
        }
    }
    (ids, publishes, failed)
}

/// Splits the publishes' outcomes: the ids of the rows sent and how many
/// are left for a later batch; rows refused for good go to `failed`.
fn split_outcomes(
    ids: Vec<i64>,
    outcomes: Vec<Result<PublishOutcome>>,
    failed: &mut Refused,
) -> (Vec<i64>, usize) {
    let mut sent = Vec::with_capacity(ids.len());
    let mut left = 0;
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            Ok(_) => sent.push(id),
            Err(e) if e.is_retriable() => {
                tracing::debug!(id, error = %e, "outbox relay: publish to retry");
                left += 1;
            }
            Err(e) => {
                failed.0.push(id);
                failed.1.push(e.to_string());
            }
        }
    }
    (sent, left)
}

/// A sqlx resource whose drop needs a Tokio runtime (it hands its
/// connection back on a task of its own): forgotten instead when the loop
/// holding it is dropped after its runtime ended (an application dropped
/// after its actix System), where dropping it would panic. The process is
/// ending then; the database closes the session.
struct Bound<T>(Option<T>);

impl<T> Bound<T> {
    fn new(value: T) -> Self {
        Bound(Some(value))
    }

    fn into_inner(mut self) -> T {
        self.0.take().expect("taken once")
    }
}

impl<T> Deref for Bound<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only by into_inner")
    }
}

impl<T> DerefMut for Bound<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("taken only by into_inner")
    }
}

impl<T> Drop for Bound<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(value);
            } else {
                std::mem::forget(value);
            }
        }
    }
}
