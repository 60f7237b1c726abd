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
//! `done` list; anything else comes back as an [`Answer`] and blocks its lane
//! until its fate is settled here: `Retry` is retried in place under the
//! subscription's [`RetryPolicy`](crate::RetryPolicy) (blocking only its
//! lane), then dead-lettered; `Reject`, undecodable, unroutable and
//! oversized records are dead-lettered at once; a handler that failed or
//! timed out is re-created and its record retried. A record is reported
//! [`Completed`](crate::connection::protocol::Completed) to the connection
//! only once its fate is final, so the commit watermark never passes an
//! unfinished record.
//!
//! Messages: [`Deliver`] (records to handle), [`Released`] (partitions
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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::codec::ContentType;
use crate::connection::consumer::ConsumerConnection;
use crate::connection::protocol::{Arrival, Deliver, Feed, Outputs, Ready, Refused, Released};
use crate::dead_letter::{self, DeadLetter, DeadLetterRecord, FailureKind};
use crate::delivery::Outcome;
use crate::envelope::Record;
use crate::observe::health::{Failing, DEAD_LETTER_STREAK};
use crate::observe::lineage::Tap;
use crate::observe::metrics::{count_runs, HandleMetrics, Metrics, PerTopic};
use crate::observe::trace::{batch_span, Batch};
use crate::observe::trace::{dead_letter_span, retry_span};
use crate::partitioner::murmur2;
use crate::subscription::lane::{Answer, Job, SharedBoard};
use crate::subscription::retry::RetryPolicy;
use crate::topics;
use tracing::Instrument;

mod copies;
mod gate;
use gate::Gate;

/// How long to wait for a restarting sibling before looking again.
const SIBLING_WAIT: Duration = Duration::from_secs(5);
/// Completions are reported to the connection in one message per batch (not
/// one per record): at once when this many have gathered or no lane has
/// work, otherwise at most [`FLUSH_DELAY`] after the first of a batch.
const FLUSH_BATCH: usize = 64;
/// Longest a completion waits to be reported while lanes are busy (a slow
/// handler must not hold the commit or a revocation back).
const FLUSH_DELAY: Duration = Duration::from_millis(2);

/// What a dispatcher and its lanes need to know about their subscription.
#[derive(Debug, Clone)]
pub(crate) struct DispatchSettings {
    pub(crate) group: Arc<str>,
    pub(crate) retry: RetryPolicy,
    /// Dead-letter topic; `None` means `<record topic>.dlq`.
    pub(crate) dead_letter: Option<Arc<str>>,
    pub(crate) default_content_type: ContentType,
    pub(crate) max_record_bytes: usize,
    /// How long one attempt may take (None: no limit).
    pub(crate) handler_timeout: Option<Duration>,
    /// With `OnRestartLimit::DeadLetter`: the handlers' restart limit, past
    /// which failing records are dead-lettered without further retries.
    pub(crate) handler_restart_limit: Option<(usize, Duration)>,
    pub(crate) metrics: Metrics,
    /// Where lineage events go, when on for this subscription.
    pub(crate) lineage: Option<Tap>,
    /// How it consumes idempotently, when it does.
    pub(crate) idempotency: Option<crate::idempotency::Idempotency>,
    /// This member, as the owner of its idempotency claims.
    pub(crate) member: Arc<str>,
    /// The readiness check of its handlers (`handlers:<group>`): failing
    /// while they are in a crash loop.
    pub(crate) health: Failing,
}

impl DispatchSettings {
    /// The counters of `topic`'s records in this subscription.
    pub(crate) fn counters(&self, topic: &str) -> Arc<HandleMetrics> {
        self.metrics.handle(topic, &self.group)
    }

    fn dead_letter_topic(&self, record: &Record) -> Arc<str> {
        match &self.dead_letter {
            Some(t) => t.clone(),
            None => Arc::from(topics::dead_letter(&record.topic, None)),
        }
    }
}

/// Why a record is being dead-lettered, and how many writes failed so far.
#[derive(Debug, Clone)]
struct Failure {
    kind: FailureKind,
    reason: String,
    write_failures: u32,
}

pub(crate) struct Dispatcher<A: Actor<Context = Context<A>>> {
    settings: Arc<DispatchSettings>,
    /// The lanes, shared with the handlers' runners.
    board: SharedBoard,
    /// This incarnation's epoch on the board.
    epoch: u64,
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
    done: Vec<Job>,
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
    ) -> Self {
        let epoch = board.borrow_mut().new_epoch();
        Dispatcher {
            board,
            epoch,
            handlers,
            dead_letter,
            connection,
            feed: Feed::default(),
            completed: Vec::with_capacity(FLUSH_BATCH),
            outputs: Vec::new(),
            done: Vec::new(),
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
            std::mem::swap(&mut board.done, &mut self.done);
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
        let mut done = std::mem::take(&mut self.done);
        count_runs(done.iter().map(|job| &job.record.topic), |topic, n| {
            self.count(topic, |c| c.acked.inc_by(n))
        });
        if self.dead_streak > 0 && !done.is_empty() {
            self.acked_again();
        }
        if self.gate.is_some() {
            self.acked_through_gate(&mut done, ctx);
        }
        for job in done.drain(..) {
            if self.live(&job) {
                if let Some(tap) = &self.settings.lineage {
                    tap.handled(&self.settings.group, &job.record, "acked", None);
                }
                self.completed.push(job.record);
            }
        }
        self.done = done;
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

    /// Decides the fate of a record its lane handed back.
    fn settle(&mut self, i: usize, job: Job, answer: Answer, ctx: &mut Context<Self>) {
        if !self.live(&job) {
            // Read by a connection incarnation that is gone (the current one
            // reads it again from the committed offset), or of a partition
            // given up (its next owner does).
            self.abandon(&job.record, ctx);
            return self.release_lane(i);
        }
        match answer {
            Answer::Outcome(Outcome::Ack) => self.finish(Some(i), job, ctx),
            Answer::Outcome(Outcome::Reject(reason)) => {
                self.dead_letter(Some(i), job, failure(FailureKind::Rejected, reason), ctx)
            }
            Answer::Outcome(Outcome::Retry(reason)) => self.retry_or_dead_letter(
                i,
                job,
                failure(FailureKind::RetriesExhausted, reason),
                ctx,
            ),
            Answer::Unhandled(kind, reason) => {
                self.dead_letter(Some(i), job, failure(kind, reason), ctx)
            }
            Answer::HandlerFailed { incarnation } => {
                self.on_handler_failure(i, job, incarnation, ctx)
            }
            Answer::Copy => self.copy_turn(i, job, ctx),
        }
    }

    /// Sets the one timer for the earliest deadline of the calls under way,
    /// those an earlier incarnation started included.
    fn arm_watchdog(&mut self, ctx: &mut Context<Self>) {
        let next = self
            .board
            .borrow()
            .lanes
            .iter()
            .filter_map(|lane| lane.running.as_ref())
            .filter_map(|r| r.deadline)
            .min();
        let Some(next) = next else { return };
        if let Some((at, timer)) = &self.watchdog {
            if *at <= next {
                return;
            }
            timer.abort();
        }
        let me = ctx.address();
        let timer = actix_rt::spawn(async move {
            tokio::time::sleep_until(next.into()).await;
            me.do_send(Overdue(next));
        });
        self.watchdog = Some((next, timer));
    }

    /// Fails every call under way past its deadline, then waits for the next.
    fn time_out_overdue(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut overdue = Vec::new();
        {
            let mut board = self.board.borrow_mut();
            for (i, lane) in board.lanes.iter_mut().enumerate() {
                let late = lane
                    .running
                    .as_ref()
                    .is_some_and(|r| r.deadline.is_some_and(|d| d <= now));
                if let Some(running) = lane.running.take_if(|_| late) {
                    // The call's answer, should it still come, no longer counts.
                    lane.blocked = true;
                    overdue.push((i, running));
                }
            }
        }
        let limit = self.settings.handler_timeout.unwrap_or_default();
        for (i, running) in overdue {
            if running.job.epoch == self.epoch {
                self.on_handler_timeout(i, running.job, running.incarnation, limit, ctx);
            } else {
                self.on_stale_timeout(i, running, limit, ctx);
            }
        }
        self.arm_watchdog(ctx);
    }

    /// A call an earlier incarnation started is past its deadline: its
    /// handler (maybe stuck, its lane with it) is re-created and the lane
    /// goes on. Its record is not retried here: the connection handed it
    /// to this incarnation again, and it waits in the lane.
    fn on_stale_timeout(
        &mut self,
        i: usize,
        running: crate::subscription::lane::Running,
        limit: Duration,
        ctx: &mut Context<Self>,
    ) {
        let (job, incarnation) = (running.job, running.incarnation);
        tracing::warn!(group = %self.settings.group, topic = %job.record.topic,
            partition = job.record.partition, offset = job.record.offset,
            "a handler call from before the dispatcher's restart did not answer within {limit:?}; restarting its handler");
        let handler = self.handlers[i].clone();
        handler.fail(
            incarnation,
            format!("the handler did not answer within {limit:?}"),
        );
        ctx.spawn(
            async move { handler.ready_after(incarnation, SIBLING_WAIT).await }
                .into_actor(self)
                .map(move |_, act, _| act.release_lane(i)),
        );
    }

    /// The handler died (panic) or dropped its reply while handling `job`.
    fn on_handler_failure(
        &mut self,
        i: usize,
        job: Job,
        incarnation: u64,
        ctx: &mut Context<Self>,
    ) {
        let handler = self.handlers[i].clone();
        // Still running: it dropped the reply. Have it re-created all the same.
        handler.fail(incarnation, "dropped its reply to a delivery");
        ctx.spawn(
            async move {
                handler.ready_after(incarnation, SIBLING_WAIT).await;
                handler.last_exit()
            }
            .into_actor(self)
            .map(move |last, act, ctx| {
                let mut reason = match last {
                    Some((n, exit)) if n == incarnation => format!("handler {exit}"),
                    _ => "handler stopped without answering".to_string(),
                };
                tracing::warn!(group = %act.settings.group, topic = %job.record.topic,
                    partition = job.record.partition, offset = job.record.offset,
                    attempt = job.attempt, %reason, "handler failed");
                if let Some(limit) = act.handler_limit_exceeded() {
                    reason.push_str(&format!(
                        "; handler restart limit exceeded ({limit}), not retried"
                    ));
                    let why = failure(FailureKind::Panic, reason);
                    return act.dead_letter(Some(i), job, why, ctx);
                }
                act.retry_or_dead_letter(i, job, failure(FailureKind::Panic, reason), ctx);
            }),
        );
    }

    /// The handler did not answer within the handler timeout: the attempt
    /// failed, and the handler (maybe stuck) is re-created before the lane
    /// goes on.
    fn on_handler_timeout(
        &mut self,
        i: usize,
        job: Job,
        incarnation: u64,
        limit: Duration,
        ctx: &mut Context<Self>,
    ) {
        let reason = format!("the handler did not answer within {limit:?}");
        tracing::warn!(group = %self.settings.group, topic = %job.record.topic,
            partition = job.record.partition, offset = job.record.offset,
            attempt = job.attempt, %reason, "handler timed out; restarting it");
        let handler = self.handlers[i].clone();
        handler.fail(incarnation, reason.clone());
        ctx.spawn(
            async move { handler.ready_after(incarnation, SIBLING_WAIT).await }
                .into_actor(self)
                .map(move |_, act, ctx| {
                    act.retry_or_dead_letter(i, job, failure(FailureKind::Timeout, reason), ctx)
                }),
        );
    }

    /// Notes a handler failure; with `OnRestartLimit::DeadLetter`, describes
    /// the limit when failures within its window exceed it.
    fn handler_limit_exceeded(&mut self) -> Option<String> {
        let (max, window) = self.settings.handler_restart_limit?;
        let now = Instant::now();
        self.handler_failures.push_back(now);
        while self
            .handler_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.handler_failures.pop_front();
        }
        if self.handler_failures.len() > max.saturating_add(1) {
            self.handler_failures.pop_front();
        }
        let exceeded = (self.handler_failures.len() > max)
            .then(|| format!("more than {max} restarts within {window:?}"))?;
        // Not ready until the window passes without it.
        self.settings.health.set_until(
            "restarts",
            format!("handler restart limit exceeded ({exceeded}): failing records are dead-lettered without retries"),
            now + window,
        );
        Some(exceeded)
    }

    /// A record was dead-lettered: past [`DEAD_LETTER_STREAK`] in a row,
    /// the subscription reports not ready.
    fn dead_lettered(&mut self) {
        self.dead_streak = self.dead_streak.saturating_add(1);
        if self.dead_streak == DEAD_LETTER_STREAK {
            self.settings.health.set_for(
                "dead-letters",
                format!("the last {DEAD_LETTER_STREAK} records finished were all dead-lettered"),
            );
        }
    }

    /// A record was acknowledged after dead letters.
    #[cold]
    fn acked_again(&mut self) {
        if self.dead_streak >= DEAD_LETTER_STREAK {
            self.settings.health.clear_for("dead-letters");
        }
        self.dead_streak = 0;
    }

    fn retry_or_dead_letter(
        &mut self,
        i: usize,
        mut job: Job,
        why: Failure,
        ctx: &mut Context<Self>,
    ) {
        let policy = self.settings.retry;
        if !policy.allows_another(job.attempt) {
            return self.dead_letter(Some(i), job, why, ctx);
        }
        let delay = policy.backoff(job.attempt);
        self.count(&job.record.topic, |c| c.retried.inc());
        retry_span(&job.record, &self.settings.group, job.attempt).in_scope(|| {
            tracing::debug!(target: "kafkactor", ?delay, reason = %why.reason, "retrying in place")
        });
        job.attempt += 1;
        ctx.run_later(delay, move |act, ctx| act.requeue(i, job, ctx));
    }

    /// Puts `job` back at the head of its lane (its next attempt) and
    /// releases the lane.
    fn requeue(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        if self.live(&job) {
            self.board.borrow_mut().lanes[i].queue.push_front(job);
        } else {
            self.abandon(&job.record, ctx);
        }
        self.release_lane(i);
    }

    /// Writes `job` to the dead-letter topic; finishes it once the write is
    /// acknowledged. `lane`: the lane it blocks, if it blocks one.
    fn dead_letter(
        &mut self,
        lane: Option<usize>,
        job: Job,
        why: Failure,
        ctx: &mut Context<Self>,
    ) {
        if !self.live(&job) {
            self.abandon(&job.record, ctx);
            if let Some(i) = lane {
                self.release_lane(i);
            }
            return;
        }
        let span = dead_letter_span(
            &job.record,
            &self.settings.group,
            job.attempt,
            why.kind.as_str(),
        );
        let request = DeadLetterRecord {
            record: job.record.clone(),
            topic: self.settings.dead_letter_topic(&job.record),
            group: self.settings.group.clone(),
            kind: why.kind,
            reason: why.reason.clone(),
            attempts: job.attempt,
        };
        ctx.spawn(
            dead_letter::send(&self.dead_letter, request, SIBLING_WAIT)
                .instrument(span)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let error = match result {
                        Ok(()) => {
                            let kind = why.kind.as_str();
                            act.dead_lettered();
                            act.count(&job.record.topic, |c| c.dead_lettered(kind));
                            if let Some(tap) = &act.settings.lineage {
                                let group = &act.settings.group;
                                tap.handled(group, &job.record, "dead_lettered", Some(kind));
                            }
                            return act.finish(lane, job, ctx);
                        }
                        Err(e) => e,
                    };
                    let mut why = why;
                    why.write_failures += 1;
                    let delay = dead_letter::retry_after(why.write_failures);
                    tracing::error!(group = %act.settings.group, topic = %job.record.topic,
                        offset = job.record.offset, %error, ?delay,
                        "dead-letter write failed; the record stays uncommitted and is tried again");
                    ctx.run_later(delay, move |act, ctx| act.dead_letter(lane, job, why, ctx));
                }),
        );
    }

    /// `job`'s fate is final: report it and release its lane (if it
    /// blocks one).
    fn finish(&mut self, lane: Option<usize>, job: Job, ctx: &mut Context<Self>) {
        let live = self.live(&job);
        self.final_fate(job.record, live, ctx);
        if let Some(i) = lane {
            self.release_lane(i);
        }
        self.report(ctx);
    }

    /// Reports the completions gathered so far: at once when a batch is
    /// full or no lane has work, otherwise within [`FLUSH_DELAY`].
    fn report(&mut self, ctx: &mut Context<Self>) {
        if self.completed.is_empty() {
            return;
        }
        let idle = || self.board.borrow().lanes.iter().all(|l| l.is_idle());
        if self.completed.len() >= FLUSH_BATCH || idle() {
            self.flush();
        } else if !self.flush_timer {
            // A task of its own, not a timer in this context (which would
            // be polled on every wake-up).
            self.flush_timer = true;
            let me = ctx.address();
            actix_rt::spawn(async move {
                tokio::time::sleep(FLUSH_DELAY).await;
                me.do_send(FlushCompleted);
            });
        }
    }

    /// Reports the completions gathered so far to the connection, in one message.
    fn flush(&mut self) {
        if self.completed.is_empty() {
            return;
        }
        let done = std::mem::replace(&mut self.completed, Vec::with_capacity(FLUSH_BATCH));
        self.feed.complete(done, std::mem::take(&mut self.outputs));
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
        let i = lane_of_key(record.key.as_deref(), self.next_unkeyed, board.lanes.len());
        board.lanes[i].queue.push_back(Job {
            record,
            stamp,
            attempt: 1,
            epoch: self.epoch,
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

fn failure(kind: FailureKind, reason: impl Into<String>) -> Failure {
    Failure {
        kind,
        reason: reason.into(),
        write_failures: 0,
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
        if board.epoch == self.epoch {
            for lane in &mut board.lanes {
                lane.queue.clear();
            }
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Deliver> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let fresh = match self.feed.arrival(&msg) {
            Arrival::Stale => return,
            Arrival::Current => false,
            Arrival::Fresh => true,
        };
        let span = batch_span(
            Batch::Dispatch,
            Some(&self.settings.group),
            msg.records.len(),
        );
        let _entered = span.enter();
        let shared = self.board.clone();
        let mut board = shared.borrow_mut();
        if fresh {
            // A new connection incarnation: what the old one read is read again.
            board.feeding = Some(msg.from.clone());
            let mut abandoned = Vec::new();
            for lane in &mut board.lanes {
                if self.gate.is_some() {
                    abandoned.extend(lane.queue.drain(..).map(|job| job.record));
                }
                lane.queue.clear();
            }
            self.completed.clear();
            self.outputs.clear();
            if let Some(gate) = &mut self.gate {
                // The lanes of copies that waited go on (empty).
                for i in gate.clear() {
                    board.lanes[i].blocked = false;
                }
            }
            if !abandoned.is_empty() {
                drop(board);
                for record in &abandoned {
                    self.abandon(record, ctx);
                }
                board = shared.borrow_mut();
            }
        }
        let lanes = board.lanes.len();
        count_runs(msg.records.iter().map(|r| &r.topic), |topic, n| {
            self.count(topic, |c| c.consumed.inc_by(n))
        });
        if let Some(gate) = &mut self.gate {
            // Through the gate: the lanes get them once their keys are claimed.
            drop(board);
            for record in msg.records {
                let stamp = self.feed.stamp(&record);
                gate.admit(&self.settings.group, record, stamp);
            }
            return self.claim_waiting(ctx);
        }
        for record in msg.records {
            if record.key.is_none() {
                self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
            }
            let i = lane_of_key(record.key.as_deref(), self.next_unkeyed, lanes);
            let stamp = self.feed.stamp(&record);
            board.lanes[i].queue.push_back(Job {
                record,
                stamp,
                attempt: 1,
                epoch: self.epoch,
                copy: false,
            });
        }
        for lane in &mut board.lanes {
            if !lane.queue.is_empty() && lane.running.is_none() && !lane.blocked {
                lane.wake();
            }
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Released> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Released, ctx: &mut Context<Self>) {
        self.feed.released(&msg.partitions);
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
                epoch: self.epoch,
                copy: false,
            };
            self.dead_letter(None, job, failure(FailureKind::OutputRefused, reason), ctx);
        }
    }
}

/// The watchdog set for this deadline fired: time out the overdue calls.
#[derive(Message)]
#[rtype(result = "()")]
struct Overdue(Instant);

impl<A: Actor<Context = Context<A>>> Handler<Overdue> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, Overdue(at): Overdue, ctx: &mut Context<Self>) {
        // One replaced by an earlier watchdog may still come: ignored.
        if self
            .watchdog
            .as_ref()
            .is_some_and(|(armed, _)| *armed == at)
        {
            self.watchdog = None;
            self.time_out_overdue(ctx);
        }
    }
}

/// Reports the completions gathered so far ([`FLUSH_DELAY`] after the
/// first of them, while lanes are busy).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushCompleted;

impl<A: Actor<Context = Context<A>>> Handler<FlushCompleted> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, _: FlushCompleted, _: &mut Context<Self>) {
        self.flush_timer = false;
        self.flush();
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
