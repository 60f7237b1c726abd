//! The `Dispatcher` actor: fills the lanes, decides the fate of what they
//! hand back, reports what is finished.
//!
//! Role: receives batches of records from its subscription's
//! ConsumerConnection and puts each on a lane's queue (the key's hash, so
//! records with one key are handled one after the other in offset order;
//! unkeyed records are spread round-robin). Each lane's handler actor takes
//! its records from the shared [`Board`] itself (see [`lane`](super::lane):
//! routing by type name, decoding and the handler call happen there, in the
//! handler's context). What a handler acknowledges comes back on the board's
//! `acked` list; anything else comes back as an [`Answer`] and blocks its lane
//! until its fate is settled here: `Retry` is retried under the
//! subscription's [`RetryPolicy`](crate::RetryPolicy), in place (blocking
//! only its lane) or through the group's retry topic (`retries.rs`), then
//! dead-lettered; `Reject`, undecodable, unroutable and
//! oversized records are dead-lettered at once; a handler that failed or
//! timed out is re-created and its record retried. A record is reported
//! [`Completed`](crate::connection::protocol::Completed) to the connection
//! only once its fate is final, so the commit watermark never passes an
//! unfinished record.
//!
//! Messages: [`Deliver`] (records to handle), [`Revoking`] (partitions
//! about to be given up: the records of retry partitions not started are
//! given up at once, `retries.rs`), [`Released`] (partitions
//! given up: their queued records are dropped and nothing more is done for
//! them, not even for an attempt already running) and `Shutdown` (reports
//! what is finished, then stops). Completions go back to the connection in
//! batches ([`Completed`](crate::connection::protocol::Completed), one
//! message per batch: sent at once when 64 have gathered or no lane has
//! work, within 2 ms otherwise).
//!
//! Owns: the board's queues (a new incarnation empties them) and the
//! deadlines of the calls under way (the subscription's handler timeout):
//! one timer waits for the earliest (not one per attempt); a call past it
//! fails as a timeout and its handler is re-created. Calls an earlier
//! incarnation started are watched too: past their deadline their handler
//! is re-created and the lane goes on (their records were handed to this
//! incarnation again). One future of its
//! context collects what the lanes hand back, woken once per runner turn.
//! Handler actors are its siblings under the subscription's supervisor,
//! reached through [`ChildRef`]s.
//!
//! Restarts: a handler that panics (or drops a reply) is re-created from its
//! factory by the supervisor, and the record it had is retried as a failed
//! attempt. When the dispatcher itself is restarted, its queues are lost; the
//! new incarnation announces itself and the connection hands it every
//! unfinished record again, so only the records in flight at that moment are
//! handled twice.
//!
//! Files: `settings.rs` (what it knows of its subscription), `fate.rs` (a
//! record's fate after anything but an acknowledgement), `watchdog.rs`
//! (handler calls past their deadline), `completions.rs` (what is reported
//! to the connection), `gate/` (the idempotency gate), `copies.rs`
//! (copies of a record being handled) and `retries.rs` (retries through
//! the group's retry topic, and the keys parked there).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::connection::consumer::ConsumerConnection;
use crate::connection::protocol::{Feed, Outputs, Ready, Refused, Released, Revoking};
use crate::dead_letter::{DeadLetter, FailureKind};
use crate::envelope::Record;
use crate::observe::metrics::{count_runs, HandleMetrics, PerTopic};
use crate::partitioner::murmur2;
use crate::subscription::lane::{Answer, Job, SharedBoard};

mod completions;
mod copies;
mod fate;
mod gate;
mod intake;
mod retries;
mod settings;
mod watchdog;

use fate::failure;
use gate::Gate;
pub(crate) use retries::{Parking, SharedParking};
pub(crate) use settings::DispatchSettings;

/// How long to wait for a restarting sibling before looking again.
const SIBLING_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Dispatcher<A: Actor<Context = Context<A>>> {
    settings: Arc<DispatchSettings>,
    /// The lanes, shared with the handlers' runners.
    board: SharedBoard,
    /// This incarnation's number on the board.
    incarnation: u64,
    /// Each lane's handler actor.
    handlers: Vec<ChildRef<A>>,
    dead_letter: ChildRef<DeadLetter>,
    connection: ChildRef<ConsumerConnection>,
    /// The connection feeding us, and the partitions given up.
    feed: Feed,
    /// Records finished and not yet reported to the connection.
    completed: Vec<Arc<Record>>,
    /// What the handlers of a transactional subscription published for the
    /// acknowledged records among them.
    outputs: Outputs,
    /// What the lanes handed back, swapped with the board's lists (no
    /// allocation per collection).
    acked: Vec<Job>,
    answers: Vec<(usize, Job, Answer)>,
    /// Whether a [`FlushCompleted`] is on its way (reports `completed`
    /// while lanes are busy).
    flush_timer: bool,
    next_unkeyed: usize,
    /// When handlers failed recently, oldest first (for the restart limit).
    handler_failures: VecDeque<Instant>,
    /// Records dead-lettered since the last acknowledged one.
    dead_streak: u32,
    /// One timer for the earliest deadline of the calls under way (not one
    /// per attempt), and that deadline. A task of its own that sends
    /// [`Overdue`], not a timer in this context (which would be polled on
    /// every wake-up).
    watchdog: Option<(Instant, tokio::task::JoinHandle<()>)>,
    /// The counters of each topic's records.
    counters: PerTopic<Arc<HandleMetrics>>,
    /// An idempotent subscription's gate.
    gate: Option<Gate>,
    /// A subscription retrying through topics: what is in its retry path
    /// (shared by its incarnations, `retries.rs`).
    parking: Option<SharedParking>,
}

/// The one future in a dispatcher's context that collects what the lanes
/// hand back, woken by their runners. It never completes; it ends with the
/// actor.
struct Collect;

impl<A: Actor<Context = Context<A>>> ActorFuture<Dispatcher<A>> for Collect {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Dispatcher<A>,
        ctx: &mut Context<Dispatcher<A>>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        act.board.borrow_mut().watch(task.waker());
        act.collect(ctx);
        Poll::Pending
    }
}

/// The lane of a record among `lanes`: records with a key go to the lane
/// of the key's murmur2 hash (one key, one lane: per-key order); records
/// without one take turns (`turn` counts them).
pub(crate) fn lane_of_key(key: Option<&[u8]>, turn: usize, lanes: usize) -> usize {
    match key {
        Some(key) => (murmur2(key) as usize) % lanes,
        None => turn % lanes,
    }
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    pub(crate) fn new(
        settings: Arc<DispatchSettings>,
        board: SharedBoard,
        handlers: Vec<ChildRef<A>>,
        dead_letter: ChildRef<DeadLetter>,
        connection: ChildRef<ConsumerConnection>,
        parking: Option<SharedParking>,
    ) -> Self {
        let incarnation = board.borrow_mut().new_dispatcher();
        Dispatcher {
            board,
            incarnation,
            handlers,
            dead_letter,
            connection,
            feed: Feed::default(),
            // Allocated once records flow: an idle subscription holds none.
            completed: Vec::new(),
            outputs: Vec::new(),
            acked: Vec::new(),
            answers: Vec::new(),
            flush_timer: false,
            next_unkeyed: 0,
            handler_failures: VecDeque::new(),
            dead_streak: 0,
            watchdog: None,
            counters: PerTopic::default(),
            gate: settings
                .idempotency
                .clone()
                .map(|i| Gate::new(i, settings.member.clone())),
            settings,
            parking,
        }
    }

    /// Whether `job` is still this member's to do: read by the connection
    /// incarnation feeding us (records of a dead one are read again by its
    /// successor), of a partition not given up since.
    fn live(&self, job: &Job) -> bool {
        self.feed.is_current(job.stamp, &job.record)
    }

    /// Takes what the lanes handed back: reports acknowledged records,
    /// settles the fate of the others, watches new deadlines.
    fn collect(&mut self, ctx: &mut Context<Self>) {
        let (deadlines_changed, dropped) = {
            let mut board = self.board.borrow_mut();
            std::mem::swap(&mut board.acked, &mut self.acked);
            std::mem::swap(&mut board.answers, &mut self.answers);
            let dropped = std::mem::take(&mut board.dropped);
            if !board.outputs.is_empty() {
                let outputs = std::mem::take(&mut board.outputs);
                // Those of records still ours (as `live` asks of a job).
                let feed = &self.feed;
                self.outputs.extend(
                    outputs
                        .into_iter()
                        .filter(|(stamp, record, _)| feed.is_current(*stamp, record))
                        .map(|(_, record, written)| (record, written)),
                );
            }
            (
                std::mem::replace(&mut board.deadlines_changed, false),
                dropped,
            )
        };
        for job in dropped {
            self.abandon(&job.record, ctx);
        }
        let mut acked = std::mem::take(&mut self.acked);
        count_runs(acked.iter().map(|job| &job.record.topic), |topic, n| {
            self.count(topic, |c| c.acked.inc_by(n))
        });
        if self.dead_streak > 0 && !acked.is_empty() {
            self.acked_again();
        }
        if self.gate.is_some() {
            self.acked_through_gate(&mut acked, ctx);
        }
        let mut retried = Vec::new();
        {
            let current = self.feed.currency();
            for job in acked.drain(..) {
                if current(job.stamp, &job.record) {
                    if let Some(tap) = &self.settings.lineage {
                        tap.handled(&self.settings.group, &job.record, "acked", None);
                    }
                    if self.is_retry_record(&job.record) {
                        retried.push(job.record.clone());
                    }
                    self.completed.push(job.record);
                }
            }
        }
        self.acked = acked;
        for record in retried {
            self.retry_finished(&record, ctx);
        }
        let mut answers = std::mem::take(&mut self.answers);
        for (i, job, answer) in answers.drain(..) {
            self.settle(i, job, answer, ctx);
        }
        self.answers = answers;
        self.report(ctx);
        if deadlines_changed {
            self.arm_watchdog(ctx);
        }
    }

    /// Counts with the counters of `topic` (unless metrics are off).
    fn count(&mut self, topic: &Arc<str>, f: impl FnOnce(&HandleMetrics)) {
        let settings = &self.settings;
        if !settings.metrics.on() {
            return;
        }
        f(self.counters.get(topic, |t| settings.counters(t)));
    }

    /// Puts `record` on the queue of its key's lane (the lanes are woken
    /// by [`wake_lanes`](Self::wake_lanes)).
    /// A `copy` is settled when its turn comes (`copies.rs`).
    fn enqueue(
        &mut self,
        record: Arc<Record>,
        stamp: crate::connection::protocol::Stamp,
        copy: bool,
    ) {
        let mut board = self.board.borrow_mut();
        if record.key.is_none() {
            self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
        }
        let i = self
            .settings
            .lane_of(&record, self.next_unkeyed, board.lanes.len());
        board.lanes[i].queue.push_back(Job {
            record,
            stamp,
            attempt: 1,
            dispatcher: self.incarnation,
            copy,
        });
    }

    /// Wakes the runners of the lanes with records to start.
    fn wake_lanes(&mut self) {
        for lane in &mut self.board.borrow_mut().lanes {
            if !lane.queue.is_empty() && lane.running.is_none() && !lane.blocked {
                lane.wake();
            }
        }
    }

    /// Lets lane `i` go on with its queue.
    fn release_lane(&mut self, i: usize) {
        let mut board = self.board.borrow_mut();
        let lane = &mut board.lanes[i];
        lane.blocked = false;
        if !lane.queue.is_empty() {
            lane.wake();
        }
    }
}

impl<A: Actor<Context = Context<A>>> Actor for Dispatcher<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(Collect);
        // Calls an earlier incarnation started are watched too: one that
        // hangs would hold its lane for good.
        self.arm_watchdog(ctx);
        // A restarted dispatcher asks for every unfinished record.
        if let Some(connection) = self.connection.get() {
            connection.do_send(Ready);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some((_, timer)) = self.watchdog.take() {
            timer.abort();
        }
        // Nothing queued is handled any more: its records stay uncommitted.
        let mut board = self.board.borrow_mut();
        if board.dispatcher == self.incarnation {
            for lane in &mut board.lanes {
                lane.queue.clear();
            }
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Revoking> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Revoking, _: &mut Context<Self>) {
        self.retries_revoking(&msg.partitions);
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Released> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Released, ctx: &mut Context<Self>) {
        self.feed.released(&msg.partitions);
        self.retries_released(&msg.partitions);
        let mut dropped = 0;
        let gated = self.gate.is_some();
        let mut dropped_records = Vec::new();
        for lane in &mut self.board.borrow_mut().lanes {
            let before = lane.queue.len();
            lane.queue.retain(|job| {
                let gone = msg.partitions.contains(&job.record.topic_partition());
                if gone && gated {
                    let r = &job.record;
                    dropped_records.push((r.topic.clone(), r.partition, r.offset));
                }
                !gone
            });
            dropped += before - lane.queue.len();
        }
        if let Some(gate) = &mut self.gate {
            let keys = gate.release(&msg.partitions, &dropped_records);
            self.drop_parked(&msg.partitions);
            // A copy of a record dropped here, waiting in a partition kept,
            // claims its key now (or when its turn comes).
            self.release_keys(keys, ctx);
        }
        let kept = |r: &Arc<Record>| {
            !msg.partitions
                .iter()
                .any(|tp| tp.partition == r.partition && *tp.topic == *r.topic)
        };
        self.completed.retain(kept);
        self.outputs.retain(|(r, _)| kept(r));
        if dropped > 0 {
            tracing::debug!(group = %self.settings.group, partitions = ?msg.partitions, dropped,
                "partitions given up: their queued records are left to the next owner");
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Refused> for Dispatcher<A> {
    type Result = ();

    /// Records whose outputs the broker refused at commit: dead-lettered
    /// at once with the reason (a refusal is for good: handled again, the
    /// record would publish the same), outside their lanes (which went on
    /// long ago), then reported finished.
    fn handle(&mut self, Refused(records): Refused, ctx: &mut Context<Self>) {
        for (record, reason) in records {
            let job = Job {
                stamp: self.feed.stamp(&record),
                record,
                attempt: 1,
                dispatcher: self.incarnation,
                copy: false,
            };
            self.dead_letter(None, job, failure(FailureKind::OutputRefused, reason), ctx);
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Shutdown> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // What is finished is reported, so the connection commits it.
        self.collect(ctx);
        self.flush();
        ctx.stop();
    }
}
