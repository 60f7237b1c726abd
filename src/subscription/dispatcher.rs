//! The `Dispatcher` actor: route -> decode -> handler lane -> outcome.
//!
//! Role: receives batches of records from its subscription's
//! ConsumerConnection, picks a lane per record (the key's hash, so records
//! with one key are handled one after the other in offset order; unkeyed
//! records are spread round-robin), routes each record by its type-name
//! header, decodes it and sends it to that lane's handler actor, one record
//! per lane at a time. The outcome decides the record's fate: `Ack` finishes
//! it; `Retry` retries it in place under the subscription's
//! [`RetryPolicy`](crate::RetryPolicy) (blocking only its lane), then
//! dead-letters it; `Reject`, undecodable and unroutable records are
//! dead-lettered at once. A record is reported [`Completed`](crate::connection::protocol::Completed) to the connection
//! only once its fate is final, so the commit watermark never passes an
//! unfinished record.
//!
//! Messages: [`Deliver`] (records to handle), [`Released`] (partitions
//! given up: their queued records are dropped and nothing more is done for
//! them, not even for an attempt already running) and `Shutdown` (reports
//! what is finished, then stops). Completions go back to the connection in
//! batches ([`Completed`](crate::connection::protocol::Completed), one message per up to 64 records, sent at once
//! when no lane has work queued and within 2 ms otherwise).
//!
//! Owns: the lane queues and the handler call under way on each lane, with
//! its deadline (the subscription's handler timeout). One future of its
//! context awaits every lane's answer (no future spawned per record), and
//! one timer waits for the earliest deadline (not one per attempt); a call
//! past it is dropped and fails as a timeout. Handler actors are its siblings under the
//! subscription's supervisor, reached through [`ChildRef`]s.
//!
//! Restarts: a handler that panics (or drops a reply) is re-created from its
//! factory by the supervisor, and the record it had is retried as a failed
//! attempt. When the dispatcher itself is restarted, its queues are lost; the
//! new incarnation announces itself and the connection hands it every
//! unfinished record again, so only the records in flight at that moment are
//! handled twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{self, Poll, Waker};
use std::time::{Duration, Instant};

use actix::dev::channel::AddressSender;
use actix::prelude::*;
use kafkactor_actors::{ChildRef, Shutdown};

use crate::codec::ContentType;
use crate::connection::consumer::ConsumerConnection;
use crate::connection::protocol::{Arrival, Deliver, Feed, Ready, Released, Stamp};
use crate::dead_letter::{self, DeadLetter, DeadLetterRecord, FailureKind};
use crate::delivery::Outcome;
use crate::envelope::Record;
use crate::partitioner::murmur2;
use crate::subscription::dead_letter_topic;
use crate::subscription::retry::RetryPolicy;
use crate::subscription::route::{HandlerCall, Routes};

/// How long to wait for a restarting sibling before looking again.
const SIBLING_WAIT: Duration = Duration::from_secs(5);
/// Completions are reported to the connection in batches of this many (one
/// message, not one per record), at once when no lane has work queued, and
/// otherwise at most [`FLUSH_DELAY`] after the first of a batch.
const FLUSH_BATCH: usize = 64;
/// Longest a completion waits to be reported while lanes are busy (a slow
/// handler must not hold the commit or a revocation back).
const FLUSH_DELAY: Duration = Duration::from_millis(2);

/// What a dispatcher needs to know about its subscription.
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
}

impl DispatchSettings {
    fn dead_letter_topic(&self, record: &Record) -> Arc<str> {
        match &self.dead_letter {
            Some(t) => t.clone(),
            None => Arc::from(dead_letter_topic(None, &record.topic)),
        }
    }
}

/// One record being handled.
#[derive(Debug)]
struct Job {
    record: Arc<Record>,
    /// When and from where it was taken.
    stamp: Stamp,
    /// 1-based attempt about to run (or that just ran).
    attempt: u32,
}

/// Why a record is being dead-lettered, and how many writes failed so far.
#[derive(Debug, Clone)]
struct Failure {
    kind: FailureKind,
    reason: String,
    write_failures: u32,
}

struct Lane<A: Actor> {
    handler: ChildRef<A>,
    /// The handler incarnation last called, while it runs (looked up again
    /// once it stops or fails: no address cloned per record).
    current: Option<(AddressSender<A>, u64)>,
    queue: VecDeque<Job>,
    busy: bool,
    /// The handler call under way, while it runs.
    running: Option<Running>,
}

/// A handler call under way on a lane.
struct Running {
    job: Job,
    /// The handler's answer to come, polled by [`LaneCalls`] (dropped on a timeout).
    call: HandlerCall,
    /// The handler incarnation called.
    incarnation: u64,
    /// When the attempt times out (the handler timeout), if it can.
    deadline: Option<Instant>,
}

pub(crate) struct Dispatcher<A: Actor<Context = Context<A>>> {
    settings: Arc<DispatchSettings>,
    routes: Rc<Routes<A>>,
    lanes: Vec<Lane<A>>,
    dead_letter: ChildRef<DeadLetter>,
    connection: ChildRef<ConsumerConnection>,
    /// The connection feeding us, and the partitions given up.
    feed: Feed,
    /// Records finished and not yet reported to the connection.
    completed: Vec<Arc<Record>>,
    /// Whether a [`FlushCompleted`] is on its way (reports `completed`
    /// while lanes are busy).
    flush_timer: bool,
    next_unkeyed: usize,
    /// When handlers failed recently, oldest first (for the restart limit).
    handler_failures: VecDeque<Instant>,
    /// One timer for the earliest deadline of the calls under way (not one
    /// per attempt), and that deadline. A task of its own that sends
    /// [`Overdue`], not a timer in this context (which would be polled on
    /// every wake-up).
    watchdog: Option<(Instant, tokio::task::JoinHandle<()>)>,
    /// Wakes [`LaneCalls`] when a call starts outside its poll.
    calls_waker: Option<Waker>,
    /// Whether [`LaneCalls`] is polling (a call started meanwhile is polled
    /// before it returns).
    polling_calls: bool,
}

/// The one future in a dispatcher's context that awaits the handlers'
/// answers, for every lane: no boxed future spawned per record. It never
/// completes; it ends with the actor.
struct LaneCalls;

impl<A: Actor<Context = Context<A>>> ActorFuture<Dispatcher<A>> for LaneCalls {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Dispatcher<A>,
        ctx: &mut Context<Dispatcher<A>>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        if !act
            .calls_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(task.waker()))
        {
            act.calls_waker = Some(task.waker().clone());
        }
        act.poll_calls(ctx, task);
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
        routes: Rc<Routes<A>>,
        handlers: Vec<ChildRef<A>>,
        dead_letter: ChildRef<DeadLetter>,
        connection: ChildRef<ConsumerConnection>,
    ) -> Self {
        Dispatcher {
            settings,
            routes,
            lanes: handlers
                .into_iter()
                .map(|handler| Lane {
                    handler,
                    current: None,
                    queue: VecDeque::new(),
                    busy: false,
                    running: None,
                })
                .collect(),
            dead_letter,
            connection,
            feed: Feed::default(),
            completed: Vec::with_capacity(FLUSH_BATCH),
            flush_timer: false,
            next_unkeyed: 0,
            handler_failures: VecDeque::new(),
            watchdog: None,
            calls_waker: None,
            polling_calls: false,
        }
    }

    /// Whether `job` is still this member's to do: read by the connection
    /// incarnation feeding us (records of a dead one are read again by its
    /// successor), of a partition not given up since.
    fn live(&self, job: &Job) -> bool {
        self.feed.is_current(job.stamp, &job.record)
    }

    fn lane_for(&mut self, record: &Record) -> usize {
        if record.key.is_none() {
            self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
        }
        lane_of_key(record.key.as_deref(), self.next_unkeyed, self.lanes.len())
    }

    /// Starts the next job of lane `i` if the lane is free.
    fn pump(&mut self, i: usize, ctx: &mut Context<Self>) {
        if self.lanes[i].busy {
            return;
        }
        if let Some(job) = self.lanes[i].queue.pop_front() {
            self.lanes[i].busy = true;
            self.attempt(i, job, ctx);
        }
    }

    /// Runs one attempt of `job` on lane `i` (the lane is busy with it).
    fn attempt(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        if !self.live(&job) {
            // Read by a connection incarnation that is gone (the current one
            // reads it again from the committed offset), or of a partition
            // given up (its next owner does).
            return self.release_lane(i, ctx);
        }
        let size = job.record.byte_size();
        if size > self.settings.max_record_bytes {
            let reason = format!(
                "record of {size} bytes exceeds the subscription's maximum of {} bytes",
                self.settings.max_record_bytes
            );
            return self.dead_letter(i, job, failure(FailureKind::TooLarge, reason), ctx);
        }
        let routes = self.routes.clone();
        let route = match routes.select(&job.record.headers) {
            Ok(route) => route,
            Err((kind, reason)) => return self.dead_letter(i, job, failure(kind, reason), ctx),
        };
        let lane = &mut self.lanes[i];
        if !lane
            .current
            .as_ref()
            .is_some_and(|(sender, _)| sender.connected())
        {
            lane.current = lane.handler.sender_numbered();
        }
        let Some((sender, incarnation)) = &lane.current else {
            // The handler is being restarted: try again once it is back.
            let handler = lane.handler.clone();
            ctx.spawn(
                async move { handler.ready(SIBLING_WAIT).await }
                    .into_actor(self)
                    .map(move |_, act, ctx| act.attempt(i, job, ctx)),
            );
            return;
        };
        let incarnation = *incarnation;
        let call = route(
            sender,
            job.record.clone(),
            job.attempt,
            self.settings.default_content_type,
        );
        match call {
            Err(e) => self.dead_letter(i, job, failure(FailureKind::Decode, e.to_string()), ctx),
            Ok(call) => {
                let deadline = self.settings.handler_timeout.map(crate::clock::deadline_in);
                self.lanes[i].running = Some(Running {
                    job,
                    call,
                    incarnation,
                    deadline,
                });
                if !self.polling_calls {
                    if let Some(waker) = &self.calls_waker {
                        waker.wake_by_ref();
                    }
                }
                if deadline.is_some() && self.watchdog.is_none() {
                    self.arm_watchdog(ctx);
                }
            }
        }
    }

    /// Polls every lane's call under way and acts on the answers that came
    /// (which may start further calls, polled in the same turn).
    fn poll_calls(&mut self, ctx: &mut Context<Self>, task: &mut task::Context<'_>) {
        self.polling_calls = true;
        let mut answered = true;
        while answered {
            answered = false;
            for i in 0..self.lanes.len() {
                let Some(running) = self.lanes[i].running.as_mut() else {
                    continue;
                };
                let Poll::Ready(result) = Future::poll(Pin::new(&mut running.call), task) else {
                    continue;
                };
                answered = true;
                let Some(Running {
                    job, incarnation, ..
                }) = self.lanes[i].running.take()
                else {
                    continue;
                };
                match result {
                    Ok(outcome) => self.on_outcome(i, job, outcome, ctx),
                    Err(_) => self.on_handler_failure(i, job, incarnation, ctx),
                }
            }
        }
        self.polling_calls = false;
    }

    /// Sets the one timer for the earliest deadline of the calls under way.
    fn arm_watchdog(&mut self, ctx: &mut Context<Self>) {
        let next = self
            .lanes
            .iter()
            .filter_map(|lane| lane.running.as_ref().and_then(|r| r.deadline))
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
        for i in 0..self.lanes.len() {
            let overdue = self.lanes[i]
                .running
                .as_ref()
                .and_then(|r| r.deadline)
                .is_some_and(|deadline| deadline <= now);
            if !overdue {
                continue;
            }
            if let Some(Running {
                job, incarnation, ..
            }) = self.lanes[i].running.take()
            {
                // Dropping the call drops the wait for its answer.
                let limit = self.settings.handler_timeout.unwrap_or_default();
                self.on_handler_timeout(i, job, incarnation, limit, ctx);
            }
        }
        self.arm_watchdog(ctx);
    }

    fn on_outcome(&mut self, i: usize, job: Job, outcome: Outcome, ctx: &mut Context<Self>) {
        match outcome {
            Outcome::Ack => self.finish(i, job, ctx),
            Outcome::Reject(reason) => {
                self.dead_letter(i, job, failure(FailureKind::Rejected, reason), ctx)
            }
            Outcome::Retry(reason) => self.retry_or_dead_letter(
                i,
                job,
                failure(FailureKind::RetriesExhausted, reason),
                ctx,
            ),
        }
    }

    /// The handler died (panic) or dropped its reply while handling `job`.
    fn on_handler_failure(
        &mut self,
        i: usize,
        job: Job,
        incarnation: u64,
        ctx: &mut Context<Self>,
    ) {
        self.lanes[i].current = None;
        let handler = self.lanes[i].handler.clone();
        // Still running: it dropped the reply (a panic inside a response
        // future runs on its own task). Have it re-created all the same.
        handler.fail(
            incarnation,
            "dropped its reply to a delivery (a panic in its response future?)",
        );
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
                    return act.dead_letter(i, job, failure(FailureKind::Panic, reason), ctx);
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
        self.lanes[i].current = None;
        let handler = self.lanes[i].handler.clone();
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
        (self.handler_failures.len() > max)
            .then(|| format!("more than {max} restarts within {window:?}"))
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
            return self.dead_letter(i, job, why, ctx);
        }
        let delay = policy.backoff(job.attempt);
        tracing::debug!(group = %self.settings.group, offset = job.record.offset,
            attempt = job.attempt, ?delay, reason = %why.reason, "retrying in place");
        job.attempt += 1;
        ctx.run_later(delay, move |act, ctx| act.attempt(i, job, ctx));
    }

    /// Writes `job` to the dead-letter topic; finishes it once the write is acknowledged.
    fn dead_letter(&mut self, i: usize, job: Job, why: Failure, ctx: &mut Context<Self>) {
        if !self.live(&job) {
            return self.release_lane(i, ctx);
        }
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
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let error = match result {
                        Ok(()) => return act.finish(i, job, ctx),
                        Err(e) => e,
                    };
                    let mut why = why;
                    why.write_failures += 1;
                    let delay = dead_letter::retry_after(why.write_failures);
                    tracing::error!(group = %act.settings.group, topic = %job.record.topic,
                        offset = job.record.offset, %error, ?delay,
                        "dead-letter write failed; the record stays uncommitted and is tried again");
                    ctx.run_later(delay, move |act, ctx| act.dead_letter(i, job, why, ctx));
                }),
        );
    }

    /// `job`'s fate is final: report it and free the lane.
    fn finish(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        if self.live(&job) {
            self.completed.push(job.record);
        }
        self.release_lane(i, ctx);
        if self.completed.is_empty() {
            return;
        }
        if self.completed.len() >= FLUSH_BATCH || self.lanes.iter().all(|l| l.queue.is_empty()) {
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
        self.feed.complete(done);
    }

    fn release_lane(&mut self, i: usize, ctx: &mut Context<Self>) {
        self.lanes[i].busy = false;
        self.pump(i, ctx);
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
        ctx.spawn(LaneCalls);
        // A restarted dispatcher asks for every unfinished record.
        if let Some(connection) = self.connection.get() {
            connection.do_send(Ready);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some((_, timer)) = self.watchdog.take() {
            timer.abort();
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Deliver> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        match self.feed.arrival(&msg) {
            Arrival::Stale => return,
            Arrival::Current => {}
            Arrival::Fresh => {
                // A new connection incarnation: what the old one read is read again.
                for lane in &mut self.lanes {
                    lane.queue.clear();
                }
                self.completed.clear();
            }
        }
        for record in msg.records {
            let i = self.lane_for(&record);
            let stamp = self.feed.stamp(&record);
            self.lanes[i].queue.push_back(Job {
                record,
                stamp,
                attempt: 1,
            });
        }
        for i in 0..self.lanes.len() {
            self.pump(i, ctx);
        }
    }
}

impl<A: Actor<Context = Context<A>>> Handler<Released> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Released, _: &mut Context<Self>) {
        self.feed.released(&msg.partitions);
        let mut dropped = 0;
        for lane in &mut self.lanes {
            let before = lane.queue.len();
            lane.queue
                .retain(|job| !msg.partitions.contains(&job.record.topic_partition()));
            dropped += before - lane.queue.len();
        }
        self.completed.retain(|r| {
            !msg.partitions
                .iter()
                .any(|tp| tp.partition == r.partition && *tp.topic == *r.topic)
        });
        if dropped > 0 {
            tracing::debug!(group = %self.settings.group, partitions = ?msg.partitions, dropped,
                "partitions given up: their queued records are left to the next owner");
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
        self.flush();
        ctx.stop();
    }
}
