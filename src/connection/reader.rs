//! The `PartitionReader` connection actor: reads one partition of a topic,
//! assigned (in no group: nothing to rebalance, nothing committed), and
//! hands each record to its [`Sink`]. What the application reads its
//! replies with.
//!
//! Messages: none; it polls its client itself, in a loop spawned in its
//! context.
//!
//! Owns: its reader client. The position it reads from outlives it
//! ([`Position`], shared by its incarnations): the first incarnation
//! resolves it (the partition's end when it starts, so only records
//! written from then on are read) and says so; each later one opens its
//! client where the last record handed on left it.
//!
//! A restart (a poll failed, or the actor was killed): records polled but
//! not handed on are read again by the next incarnation; none is skipped.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::broker::BrokerBackend;
use crate::envelope::Record;
use crate::error::{Error, Result};

/// Most records one poll returns.
const MAX_POLL: usize = 512;
/// How long a poll waits for records before it polls again.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// Where the records read go (the layer above implements it).
pub(crate) trait Sink: Send + Sync {
    /// Takes one record, in offset order.
    fn take(&self, record: Arc<Record>);
}

/// Where a reader stands, shared by its incarnations: the next offset to
/// read, once resolved, and whether it is.
pub(crate) struct Position {
    next: AtomicI64,
    resolved: watch::Sender<Option<Result<()>>>,
}

impl Position {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Position {
            next: AtomicI64::new(-1),
            resolved: watch::Sender::new(None),
        })
    }

    /// Waits up to `timeout` until the position is resolved: `Ok` once it
    /// is, the failure when resolving it failed for good.
    pub(crate) async fn resolved(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.resolved.subscribe();
        let answer = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match answer {
            Ok(Ok(resolved)) => resolved.clone().expect("waited for"),
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::Unavailable(format!(
                "the reply topic's position was not resolved within {timeout:?}"
            ))),
        }
    }

    /// Whether the position is resolved.
    pub(crate) fn is_resolved(&self) -> bool {
        matches!(*self.resolved.borrow(), Some(Ok(())))
    }
}

pub(crate) struct PartitionReader {
    backend: Arc<dyn BrokerBackend>,
    topic: Arc<str>,
    partition: i32,
    position: Arc<Position>,
    sink: Arc<dyn Sink>,
}

impl PartitionReader {
    pub(crate) fn new(
        backend: Arc<dyn BrokerBackend>,
        topic: Arc<str>,
        partition: i32,
        position: Arc<Position>,
        sink: Arc<dyn Sink>,
    ) -> Self {
        PartitionReader {
            backend,
            topic,
            partition,
            position,
            sink,
        }
    }
}

impl Actor for PartitionReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let read = read(
            self.backend.clone(),
            self.topic.clone(),
            self.partition,
            self.position.clone(),
            self.sink.clone(),
        );
        ctx.spawn(read.into_actor(self).map(|failed, act, ctx| {
            tracing::warn!(topic = %act.topic, partition = act.partition, error = %failed,
                "the partition reader failed: restarting it");
            ctx.stop();
        }));
    }
}

/// Resolves the position when it is not yet, then reads on until a poll
/// fails: that failure.
async fn read(
    backend: Arc<dyn BrokerBackend>,
    topic: Arc<str>,
    partition: i32,
    position: Arc<Position>,
    sink: Arc<dyn Sink>,
) -> Error {
    let from = match resolve(&*backend, &topic, partition, &position).await {
        Ok(from) => from,
        Err(e) => {
            if !e.is_retriable() {
                position.resolved.send_replace(Some(Err(e.clone())));
            }
            return e;
        }
    };
    let client = match backend.reader(&topic, partition, from) {
        Ok(client) => client,
        Err(e) => return e,
    };
    // Said once the client reads from there: a record written from now on
    // is read.
    if !position.is_resolved() {
        position.resolved.send_replace(Some(Ok(())));
    }
    loop {
        match client.poll(MAX_POLL, POLL_WAIT).await {
            Ok(records) => {
                for record in records {
                    position.next.store(record.offset + 1, Ordering::Release);
                    sink.take(record);
                }
            }
            Err(e) => return e,
        }
    }
}

/// The offset to read from: where the last incarnation left off, or the
/// partition's end now (the topic made when missing, with the partition).
async fn resolve(
    backend: &dyn BrokerBackend,
    topic: &str,
    partition: i32,
    position: &Position,
) -> Result<i64> {
    let next = position.next.load(Ordering::Acquire);
    if next >= 0 {
        return Ok(next);
    }
    if backend.partitions(topic).await?.is_none() {
        backend.ensure_topic(topic, None).await?;
    }
    let marks = backend.watermarks(topic).await?;
    let Some(&(_, high)) = usize::try_from(partition).ok().and_then(|p| marks.get(p)) else {
        return Err(Error::no_partition_to_read(topic, partition, marks.len()));
    };
    position.next.store(high, Ordering::Release);
    Ok(high)
}
