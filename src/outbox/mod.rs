//! The transactional outbox (feature `postgres`): records published in the
//! same PostgreSQL transaction as the business rows they describe, and
//! moved to the broker by the [`OutboxRelay`] once that transaction commits.
//!
//! ```no_run
//! # async fn example(pool: sqlx::PgPool) -> kafkactor::Result<()> {
//! use kafkactor::outbox::Outbox;
//! use kafkactor::Publish;
//!
//! let outbox = Outbox::new();
//! outbox.migrate(&pool).await?; // once, at deployment
//!
//! let mut tx = pool.begin().await.map_err(kafkactor::outbox::database)?;
//! sqlx::query("INSERT INTO orders (id) VALUES (42)")
//!     .execute(&mut *tx)
//!     .await
//!     .map_err(kafkactor::outbox::database)?;
//! outbox
//!     .publish(&mut *tx, Publish::to("orders").key("42").payload("placed"))
//!     .await?;
//! tx.commit().await.map_err(kafkactor::outbox::database)?; // both or neither
//! # Ok(()) }
//! ```
//!
//! **What is guaranteed.** A record is in the outbox exactly when the
//! transaction that wrote it committed; the relay deletes its row only
//! after the broker acknowledged it, so every committed record reaches the
//! broker at least once. Rows of one key (keyless rows: of one topic) are
//! sent in the order they were written; the one exception is a publish the
//! broker failed retriably while a later one of its key in the same batch
//! succeeded (the failed row goes out with a later batch). A relay that dies between the
//! broker's acknowledgement and its own commit sends the rows of that batch
//! again (with the same message id, which an idempotent subscription drops):
//! duplicates only for rows in flight at the kill. A row the broker refuses
//! for good (too large, a topic it will not create) stays in the table with
//! the reason in its `error` column and is counted in
//! `kafkactor_outbox_failed_total`; rows after it are sent.
//!
//! **Several relays** (one per instance of a service) share one table:
//! every row belongs to one of [`SHARDS`] shards by the hash of its key,
//! and a relay takes a shard's rows only while it holds that shard's
//! advisory lock (`pg_try_advisory_xact_lock`, for the length of one batch
//! transaction) and reads them in a statement after taking it (whose
//! snapshot holds the deletions of the relay that held the shard before),
//! so two relays never send the same row, nor rows of one key at once.
//!
//! **Delays.** A publish with [`Publish::delay`] or [`Publish::at`] keeps its
//! due time in the row; the relay publishes it delayed (the application
//! needs [`AppBuilder::delays`](crate::AppBuilder::delays)), due at the time
//! the transaction asked for, not the time the relay sent it.

mod relay;
pub(crate) mod row;
pub(crate) mod tree;

use std::sync::Arc;
use std::time::SystemTime;

use sqlx::postgres::PgExecutor;
use sqlx::{AssertSqlSafe, PgPool};

use crate::envelope::{header, new_message_id};
use crate::error::{Error, Result};
use crate::publish::{epoch_ms_rounded_up, Publish};

pub use relay::OutboxRelay;
pub(crate) use relay::OutboxRelayActor;

/// How many shards the rows of an outbox are spread over: how many relays
/// can send at once.
pub const SHARDS: i16 = 32;

/// The table rows are written to when none is named.
pub const DEFAULT_TABLE: &str = "kafkactor_outbox";

/// A database error as kafkactor's typed error ([`Error::Unavailable`],
/// retriable): for `?` on the sqlx calls around [`Outbox::publish`].
pub fn database(e: sqlx::Error) -> Error {
    Error::Unavailable(format!("postgres: {e}"))
}

/// An outbox table: where [`publish`](Outbox::publish) writes, and what an
/// [`OutboxRelay`] reads.
#[derive(Debug, Clone)]
pub struct Outbox {
    sql: Arc<Statements>,
}

/// The statements of one table, written once.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) table: String,
    pub(crate) schema: String,
    pub(crate) insert: Arc<str>,
    pub(crate) check: Arc<str>,
    pub(crate) lock: Arc<str>,
    pub(crate) take: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) fail: Arc<str>,
    /// The first key of the shards' advisory locks: the table's own.
    pub(crate) lock_class: i32,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// The outbox in table `kafkactor_outbox`.
    pub fn new() -> Self {
        Outbox::build(DEFAULT_TABLE)
    }

    /// The outbox in table `name` (lower-case letters, digits and `_`, at
    /// most 48 characters, not starting with a digit; optionally
    /// `schema.table`): [`Error::Config`] otherwise.
    pub fn table(name: &str) -> Result<Self> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part.len() <= 48
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(Error::Config(format!(
                "outbox table {name:?}: lower-case letters, digits and _ (at most 48), optionally schema.table"
            )));
        }
        Ok(Outbox::build(name))
    }

    fn build(table: &str) -> Self {
        let schema = schema_sql(table);
        let sql = Statements {
            insert: insert_sql(table),
            check: format!("SELECT 1 FROM {table} LIMIT 0").into(),
            lock: lock_sql(table),
            take: take_sql(table),
            delete: format!("DELETE FROM {table} WHERE id = ANY($1)").into(),
            fail: format!(
                "UPDATE {table} AS o SET error = f.error
                 FROM unnest($1::int8[], $2::text[]) AS f(id, error) WHERE o.id = f.id"
            )
            .into(),
            lock_class: lock_class(table),
            table: table.to_string(),
            schema,
        };
        Outbox { sql: Arc::new(sql) }
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.sql.table
    }

    /// The SQL [`migrate`](Outbox::migrate) runs (idempotent: `IF NOT
    /// EXISTS` and `OR REPLACE` throughout), for a migration tool of your
    /// own. PostgreSQL 14 or later.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// Creates the table, its index and the trigger that wakes relays, if
    /// missing. Safe to run from several processes at once.
    pub async fn migrate(&self, pool: &PgPool) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(self.sql.schema.clone()))
            .execute(pool)
            .await
            .map_err(database)?;
        Ok(())
    }

    /// Writes `publish` to the outbox through `executor`: the caller's
    /// transaction (`&mut *tx`), so the record is sent exactly when that
    /// transaction commits. Returns the row's id.
    ///
    /// The record gets its message id now (a relay sending it again after
    /// a crash sends the same id), and, inside a handler, the tenant,
    /// correlation id and trace of the record being handled, as
    /// [`Producer`](crate::Producer) publishes do. An invalid topic or
    /// partition is refused here ([`Error::InvalidTopic`],
    /// [`Error::Config`]), before anything is written.
    pub async fn publish<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        publish: Publish,
    ) -> Result<i64> {
        let ids = self.publish_all(executor, [publish]).await?;
        ids.first()
            .copied()
            .ok_or_else(|| Error::Unavailable("postgres: the insert returned no id".into()))
    }

    /// Writes every record of `publishes`, in order, with one statement:
    /// as [`publish`](Outbox::publish) does one (the whole batch is refused
    /// if one record is). Returns the rows' ids, in order.
    pub async fn publish_all<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        publishes: impl IntoIterator<Item = Publish>,
    ) -> Result<Vec<i64>> {
        let now = SystemTime::now();
        let mut columns = Columns::default();
        for publish in publishes {
            let (publish, row) = prepared(publish, now)?;
            columns.push(publish, row);
        }
        if columns.shard.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(AssertSqlSafe(self.sql.insert.clone()))
            .bind(columns.shard)
            .bind(columns.topic)
            .bind(columns.partition)
            .bind(columns.key)
            .bind(columns.headers)
            .bind(columns.payload)
            .bind(columns.deliver_at_ms)
            .fetch_all(executor)
            .await
            .map_err(database)
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.sql
    }
}

/// The SQL that creates `table` (its index, and the trigger that wakes
/// relays), as [`Outbox::schema`] gives it.
fn schema_sql(table: &str) -> String {
    // Index, function and trigger names: the table's, dots made underscores.
    let base = table.replace('.', "_");
    format!(
        "SELECT pg_advisory_xact_lock({lock}, -1);
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    shard SMALLINT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER,
    key BYTEA,
    headers BYTEA NOT NULL,
    payload BYTEA,
    deliver_at_ms BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    error TEXT
);
CREATE INDEX IF NOT EXISTS {base}_pending ON {table} (shard, id) WHERE error IS NULL;
CREATE OR REPLACE FUNCTION {base}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{base}', '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER {base}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {base}_notify();",
        lock = lock_class(table),
    )
}

/// The insert of [`Outbox::publish_all`]: rows from the columns bound as
/// arrays, in the arrays' order (ids follow it).
fn insert_sql(table: &str) -> Arc<str> {
    format!(
        "INSERT INTO {table} (shard, topic, partition, key, headers, payload, deliver_at_ms)
                 SELECT s, t, p, k, h, v, d
                 FROM unnest($1::int2[], $2::text[], $3::int4[], $4::bytea[], $5::bytea[], $6::bytea[], $7::int8[])
                      WITH ORDINALITY AS r(s, t, p, k, h, v, d, n)
                 ORDER BY n RETURNING id"
    )
    .into()
}

/// The shards, in the order given, that have rows to send and whose lock
/// this transaction gets (at most $3 of them; the CASE keeps a shard
/// without rows from being locked).
fn lock_sql(table: &str) -> Arc<str> {
    format!(
        "SELECT u.s FROM unnest($1::int2[]) AS u(s)
                 WHERE CASE WHEN EXISTS (SELECT 1 FROM {table} p WHERE p.shard = u.s AND p.error IS NULL)
                            THEN pg_try_advisory_xact_lock($2, u.s) ELSE false END
                 LIMIT $3"
    )
    .into()
}

/// The first $2 rows of the shards locked, by id. A statement of its own,
/// after the locks: its snapshot holds what the relay that held a shard
/// before committed (deleted rows included).
fn take_sql(table: &str) -> Arc<str> {
    format!(
        "SELECT o.id, o.topic, o.partition, o.key, o.headers, o.payload, o.deliver_at_ms
                 FROM unnest($1::int2[]) AS m(s)
                 CROSS JOIN LATERAL (SELECT * FROM {table} r WHERE r.shard = m.s AND r.error IS NULL
                                     ORDER BY r.id LIMIT $2) AS o
                 ORDER BY o.id LIMIT $2"
    )
    .into()
}

/// `publish` ready for its row: validated, with its message id and, inside
/// a handler, the handled record's context.
fn prepared(mut publish: Publish, now: SystemTime) -> Result<(Publish, row::Row)> {
    publish.validate()?;
    if !publish.headers.contains(header::MESSAGE_ID) {
        let id = new_message_id(epoch_ms_rounded_up(now));
        publish.headers.insert_known_copy(header::MESSAGE_ID, &id);
    }
    crate::delivery::current::with_current(|record, parent| {
        crate::observe::trace::inherit(&mut publish.headers, record, parent)
    });
    let row = row::Row::of(&publish, now);
    Ok((publish, row))
}

/// Rows as the columns [`Outbox::publish_all`] binds as arrays.
#[derive(Default)]
struct Columns {
    shard: Vec<i16>,
    topic: Vec<String>,
    partition: Vec<Option<i32>>,
    key: Vec<Option<Vec<u8>>>,
    headers: Vec<Vec<u8>>,
    payload: Vec<Option<Vec<u8>>>,
    deliver_at_ms: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, publish: Publish, row: row::Row) {
        self.shard.push(row.shard);
        self.topic.push(publish.topic().to_string());
        self.partition.push(publish.partition);
        self.key.push(publish.key.map(|k| k.to_vec()));
        self.headers.push(row.headers);
        self.payload.push(publish.payload.map(|p| p.to_vec()));
        self.deliver_at_ms.push(row.deliver_at_ms);
    }
}

/// The first key of a table's advisory locks: its name's hash, so that two
/// outbox tables of one database lock apart.
fn lock_class(table: &str) -> i32 {
    crate::partitioner::murmur2(table.as_bytes()) as i32
}
