//! The `Replayer` actor: sends a dead-letter topic's records back, one
//! replay run's worth.
//!
//! Role: it is the reader of the dead-letter topic's ConsumerConnection
//! (the run's own group). For each record below the end offset its
//! partition had when the run started, it asks the run's selection what to
//! do ([`Fate`]): pass it over, send it back to its topic, or park it; the
//! writes leave in offset order, at most the run's rate, through the run's
//! producer connection. A record is reported completed to the connection
//! (and so committed under the run's group) only once its write is
//! acknowledged, or at once when it is passed over; a dry run writes and
//! completes nothing and only counts. A record at or past its partition's
//! end was dead-lettered during the run: its partition is held and the
//! record left uncommitted for the next run. The run is over once every
//! partition is finished up to its end, the limit is reached, a write
//! failed, or it was cancelled; then it tells the run's handle.
//!
//! Messages: `Deliver`, `Released`, `Refused` (the connection's protocol),
//! [`Cancel`] (stop at a record boundary) and `Shutdown` (wait for the
//! writes under way, within the delivery timeout).
//!
//! Owns: the records read and waiting for their turn under the rate. The
//! run's counts and where each partition stands live in the run, shared
//! with the next incarnation. A restarted Replayer gets every unfinished
//! record from the connection again (`Ready`): a record whose write was
//! under way may be sent twice (at-least-once); nothing is lost.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};
use tokio::sync::oneshot;

use super::progress::Run;
use super::select::Fate;
use crate::broker::WriteResult;
use crate::connection::consumer::{ConsumerConnection, Hold};
use crate::connection::producer::Writer;
use crate::connection::protocol::{
    Arrival, Deliver, Feed, Ready, Refused, Released, Revoking, Stamp,
};
use crate::envelope::{OutgoingRecord, Record, TopicPartition};

/// Most writes under way at once.
const MAX_WRITING: usize = 256;

/// How long a partition past its snapshot end is held: for the rest of
/// the run.
const HOLD: Duration = Duration::from_secs(24 * 3600);

/// Stop at the next record boundary: nothing more is written; the writes
/// under way finish and are committed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Cancel;

/// A record on its way out: read, its write not yet answered.
struct Outgoing {
    record: Arc<Record>,
    stamp: Stamp,
    write: OutgoingRecord,
    parked: bool,
}

pub(crate) struct Replayer {
    run: Arc<Run>,
    connection: ChildRef<ConsumerConnection>,
    writer: Writer,
    feed: Feed,
    /// Records read and waiting for their turn under the rate, in order.
    waiting: VecDeque<Outgoing>,
    writing: usize,
    /// The wake-up for the next write under the rate.
    paced: Option<SpawnHandle>,
    /// Partitions past their snapshot end (held).
    held: HashSet<TopicPartition>,
    /// No more records are taken: cancelled, limit reached, failed, or
    /// shutting down.
    stopping: bool,
    /// Answers `Shutdown` once no write is under way.
    drained: Option<oneshot::Sender<()>>,
}

impl Replayer {
    pub(crate) fn new(
        run: Arc<Run>,
        connection: ChildRef<ConsumerConnection>,
        writer: Writer,
    ) -> Self {
        Replayer {
            run,
            connection,
            writer,
            feed: Feed::default(),
            waiting: VecDeque::new(),
            writing: 0,
            paced: None,
            held: HashSet::new(),
            stopping: false,
            drained: None,
        }
    }

    /// Takes `record`: passed over at once, or queued for its write.
    fn take(&mut self, record: Arc<Record>, stamp: Stamp, ctx: &mut Context<Self>) {
        let run = self.run.clone();
        let mut guard = run.state();
        let state = &mut *guard;
        let Some(partition) = state
            .partitions
            .get_mut(&record.partition)
            .filter(|p| record.offset < p.end)
        else {
            // Dead-lettered since the run started, or of a partition added
            // since: not this run's.
            drop(guard);
            return self.hold(record.topic_partition());
        };
        if self.stopping {
            return;
        }
        let (write, parked) = match run.selection.fate(&record) {
            Fate::Skip => {
                partition.take(record.offset);
                partition.finish(record.offset);
                state.report.skipped += 1;
                drop(guard);
                if !run.dry_run {
                    self.feed.complete(vec![record], Vec::new());
                }
                return;
            }
            Fate::Send(write) => (write, false),
            Fate::Park(write, why) => {
                tracing::info!(topic = %record.topic, partition = record.partition,
                    offset = record.offset, reason = why, "parking a dead letter");
                (write, true)
            }
        };
        if run.limit.is_some_and(|limit| state.chosen >= limit) {
            state.report.limit_reached = true;
            drop(guard);
            return self.stop(ctx);
        }
        state.chosen += 1;
        state.report.matched += 1;
        partition.take(record.offset);
        if run.dry_run {
            partition.finish(record.offset);
            let count = if parked {
                &mut state.report.parked
            } else {
                &mut state.report.sent
            };
            *count += 1;
            return;
        }
        drop(guard);
        self.waiting.push_back(Outgoing {
            record,
            stamp,
            write,
            parked,
        });
    }

    /// Holds `partition` for the rest of the run: what it reads from now
    /// on is not this run's.
    fn hold(&mut self, partition: TopicPartition) {
        if !self.held.insert(partition.clone()) {
            return;
        }
        if let Some(connection) = self.connection.get() {
            connection.do_send(Hold {
                partition,
                until: Instant::now() + HOLD,
            });
        }
    }

    /// Writes what the rate allows now, and sets a wake-up for the rest.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.paced.take() {
            ctx.cancel_future(handle);
        }
        while !self.stopping && !self.waiting.is_empty() && self.writing < MAX_WRITING {
            let wait = self.run.state().pace(self.run.rate, Instant::now());
            if !wait.is_zero() {
                self.paced = Some(ctx.run_later(wait, |act, ctx| {
                    act.paced = None;
                    act.pump(ctx);
                }));
                break;
            }
            let Some(out) = self.waiting.pop_front() else {
                break;
            };
            self.writing += 1;
            let write = self.writer.write(out.write, self.run.delivery_timeout);
            let (record, stamp, parked) = (out.record, out.stamp, out.parked);
            ctx.spawn(
                write
                    .into_actor(self)
                    .map(move |written, act, ctx| act.written(record, stamp, parked, written, ctx)),
            );
        }
        self.check_over();
    }

    /// The write of `record` answered.
    fn written(
        &mut self,
        record: Arc<Record>,
        stamp: Stamp,
        parked: bool,
        written: WriteResult,
        ctx: &mut Context<Self>,
    ) {
        self.writing -= 1;
        if self.feed.is_current(stamp, &record) {
            match written {
                Ok(_) => {
                    let mut state = self.run.state();
                    if let Some(partition) = state.partitions.get_mut(&record.partition) {
                        partition.finish(record.offset);
                    }
                    if parked {
                        state.report.parked += 1;
                    } else {
                        state.report.sent += 1;
                    }
                    drop(state);
                    self.feed.complete(vec![record], Vec::new());
                }
                Err(failed) => {
                    tracing::error!(topic = %record.topic, partition = record.partition,
                        offset = record.offset, error = %failed.error,
                        "a replayed record could not be written: the run stops, the record stays uncommitted");
                    self.run.state().error.get_or_insert(failed.error);
                    self.stop(ctx);
                }
            }
        }
        if self.writing == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
        self.pump(ctx);
    }

    /// Takes no more records: those waiting stay uncommitted.
    fn stop(&mut self, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.waiting.clear();
        if let Some(handle) = self.paced.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Tells the run's handle when the run is over.
    fn check_over(&self) {
        if self.writing > 0 {
            return;
        }
        let state = self.run.state();
        let over = self.stopping || (self.waiting.is_empty() && state.all_done());
        drop(state);
        if over {
            self.run.over();
        }
    }
}

impl Actor for Replayer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.run.is_cancelled() {
            self.stop(ctx);
        }
        // A restarted Replayer asks for every unfinished record.
        if let Some(connection) = self.connection.get() {
            connection.do_send(Ready);
        }
        self.check_over();
    }
}

impl Handler<Deliver> for Replayer {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let arrival = self.feed.arrival(&msg);
        if arrival == Arrival::Stale {
            return;
        }
        if arrival == Arrival::Fresh {
            // A new connection incarnation reads everything unfinished again.
            self.waiting.clear();
            self.held.clear();
            for partition in self.run.state().partitions.values_mut() {
                partition.forget_taken();
            }
        }
        // One stamp for the batch: nothing is released while it is taken.
        let Some(first) = msg.records.first() else {
            return;
        };
        let stamp = self.feed.stamp(first);
        for record in msg.records {
            self.take(record, stamp, ctx);
        }
        self.pump(ctx);
    }
}

/// A replay has nothing waiting to give up: what it took is sent at once.
impl Handler<Revoking> for Replayer {
    type Result = ();

    fn handle(&mut self, _: Revoking, _: &mut Context<Self>) {}
}

impl Handler<Released> for Replayer {
    type Result = ();

    fn handle(&mut self, msg: Released, _: &mut Context<Self>) {
        self.feed.released(&msg.partitions);
        self.waiting
            .retain(|out| !msg.partitions.contains(&out.record.topic_partition()));
        let mut state = self.run.state();
        for tp in &msg.partitions {
            self.held.remove(tp);
            if let Some(partition) = state.partitions.get_mut(&tp.partition) {
                partition.forget_taken();
            }
        }
    }
}

impl Handler<Refused> for Replayer {
    type Result = ();

    /// Never sent: the run's connection commits no transactions.
    fn handle(&mut self, Refused(records): Refused, _: &mut Context<Self>) {
        tracing::error!(
            records = records.len(),
            "dead letters refused as a transaction's: left uncommitted"
        );
    }
}

impl Handler<Cancel> for Replayer {
    type Result = ();

    fn handle(&mut self, _: Cancel, ctx: &mut Context<Self>) {
        self.run.state().report.cancelled = true;
        self.stop(ctx);
        self.check_over();
    }
}

impl Handler<Shutdown> for Replayer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stop(ctx);
        if self.writing == 0 {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let wait = self.run.delivery_timeout;
        Box::pin(
            async move {
                let _ = tokio::time::timeout(wait, rx).await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
