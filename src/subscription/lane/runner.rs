//! The [`Runner`]: a future in a handler actor's context that takes its
//! lane's records one after the other and calls the handler.

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{self, Poll, Waker};

use actix::prelude::*;

use crate::clock::Stopwatch;
use crate::dead_letter::FailureKind;
use crate::delivery::current::{Current, Handling};
use crate::delivery::Outcome;
use crate::envelope::Record;
use crate::observe::histogram::LocalSeries;
use crate::observe::metrics::PerTopic;
use crate::observe::trace::{in_trace, spans_on, TraceContext};
use crate::subscription::dispatcher::DispatchSettings;
use crate::subscription::route::{RouteFn, Routes};
use crate::subscription::transaction::LaneHandling;

use super::board::{Answer, Board, Job, LaneState, Running, SharedBoard};
use super::reply::{Later, Reply};

/// Most records a runner handles in one turn before it lets its thread's
/// other tasks run.
pub(super) const RUN_BUDGET: usize = 256;

/// Takes a lane's records in the context of one handler incarnation and
/// calls the handler with each; see the module documentation.
pub(crate) struct Runner<A: Actor> {
    pub(super) board: SharedBoard,
    pub(super) lane: usize,
    /// The lane as publishes made from its handler see it (set for each turn).
    handling: Rc<dyn Handling>,
    pub(super) incarnation: u64,
    pub(super) routes: Rc<Routes<A>>,
    pub(super) settings: Arc<DispatchSettings>,
    /// The answer awaited for the lane's running record.
    reply: Option<Later<A>>,
    /// What a batch handler's runner awaits and lingers on (`batch.rs`).
    pub(super) batch: super::batch::Batching<A>,
    /// The running record's `handle` span (when spans are on), entered
    /// while its answer is polled.
    pub(super) span: Option<tracing::Span>,
    /// When the running record's call started ([`now_ticks`](crate::clock::now_ticks)).
    pub(super) started: u64,
    /// What handler calls are timed with, when they are (metrics on).
    pub(super) timed: Option<Stopwatch>,
    pub(super) durations: Durations,
}

/// A runner's handler durations per topic, gathered in histograms of its
/// own and added to the shared ones once per turn.
#[derive(Default)]
pub(super) struct Durations {
    topics: PerTopic<LocalSeries>,
    observed: bool,
}

impl Durations {
    #[inline]
    pub(super) fn observe(&mut self, topic: &Arc<str>, settings: &DispatchSettings, took_ns: u64) {
        self.topics
            .get(topic, |t| settings.counters(t).duration.local())
            .observe(took_ns);
        self.observed = true;
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.observed) {
            self.topics.values_mut().for_each(LocalSeries::flush);
        }
    }
}

impl<A: Actor<Context = Context<A>>> Runner<A> {
    pub(crate) fn new(
        board: SharedBoard,
        lane: usize,
        incarnation: u64,
        routes: Rc<Routes<A>>,
        settings: Arc<DispatchSettings>,
    ) -> Self {
        let handling = Rc::new(LaneHandling {
            board: board.clone(),
            lane,
        });
        Runner {
            board,
            lane,
            handling,
            incarnation,
            routes,
            timed: settings.metrics.on().then(Stopwatch::new),
            settings,
            reply: None,
            batch: Default::default(),
            span: None,
            started: 0,
            durations: Durations::default(),
        }
    }

    /// The lane's next record if this runner may start it (it is attached,
    /// nothing runs, the lane is not blocked), marked running; otherwise
    /// registers `waker` to be woken when there is one. `Err` when another
    /// incarnation took the lane over.
    fn next(&self, waker: &Waker) -> Result<Option<(Arc<Record>, u32)>, ()> {
        let mut board = self.board.borrow_mut();
        let Some(job) = self.startable(&mut board, waker)? else {
            return Ok(None);
        };
        let next = (job.record.clone(), job.attempt);
        self.start(&mut board, job);
        Ok(Some(next))
    }

    /// The lane's next record if this runner may start it (it is attached,
    /// nothing runs, the lane is not blocked, the record is not a copy,
    /// which is handed back to the Dispatcher); otherwise registers `waker`
    /// to be woken when there is one. `Err` when another incarnation took
    /// the lane over.
    #[inline(always)]
    pub(super) fn startable(&self, board: &mut Board, waker: &Waker) -> Result<Option<Job>, ()> {
        let lane = &mut board.lanes[self.lane];
        match &lane.runner {
            Some((n, _)) if *n > self.incarnation => return Err(()),
            Some((n, _)) if *n == self.incarnation => {}
            // The first turn of this incarnation: it takes the lane over.
            _ => lane.runner = Some((self.incarnation, None)),
        }
        if lane.running.is_none() && !lane.blocked {
            if let Some(job) = lane.queue.pop_front() {
                if !job.copy {
                    return Ok(Some(job));
                }
                // Not handled here: the Dispatcher decides what becomes
                // of it, and releases the lane.
                lane.blocked = true;
                register(lane, waker);
                board.answers.push((self.lane, job, Answer::Copy));
                board.wake_dispatcher();
                return Ok(None);
            }
        }
        register(lane, waker);
        Ok(None)
    }

    /// Marks `job` running on the lane (a batch's first record: the
    /// others go to the lane's `rest`).
    #[inline(always)]
    pub(super) fn start(&self, board: &mut Board, job: Job) {
        let lane = &mut board.lanes[self.lane];
        // An earlier attempt's, or a record taken away, publishes.
        lane.outputs.clear();
        lane.running = Some(Running {
            job,
            incarnation: self.incarnation,
            deadline: None,
            trace: None,
        });
    }

    /// Drops the lane's queue when the connection that read it is gone
    /// (restarted or stopped: its successor, maybe on another member, reads
    /// those records again from the committed offsets); the Dispatcher
    /// abandons them. Once per turn: the connection runs on this thread,
    /// so it cannot go in the middle of one.
    fn drop_if_stale(&self) {
        let mut board = self.board.borrow_mut();
        let gone = board.feeding.as_ref().is_some_and(|c| !c.connected());
        if !gone || board.lanes[self.lane].queue.is_empty() {
            return;
        }
        let Board { lanes, dropped, .. } = &mut *board;
        dropped.extend(lanes[self.lane].queue.drain(..));
        board.wake_dispatcher();
    }

    /// The route of `record`, or why it cannot be handled: too large, or
    /// of no type the handler takes.
    #[inline(always)]
    pub(super) fn check(&self, record: &Record) -> Result<&RouteFn<A>, Answer> {
        let size = record.byte_size();
        if size > self.settings.max_record_bytes {
            let reason = format!(
                "record of {size} bytes exceeds the subscription's maximum of {} bytes",
                self.settings.max_record_bytes
            );
            return Err(Answer::Unhandled(FailureKind::TooLarge, reason));
        }
        self.routes
            .select(&record.headers)
            .map_err(|(kind, reason)| Answer::Unhandled(kind, reason))
    }

    /// Starts the handler call for `record`: `Err` when it cannot be handled.
    fn call(
        &self,
        act: &mut A,
        ctx: &mut Context<A>,
        record: Arc<Record>,
        attempt: u32,
    ) -> Result<Reply<A>, Answer> {
        let route = self.check(&record)?;
        route(
            act,
            ctx,
            record,
            attempt,
            self.settings.default_content_type,
            self.settings.outlet(),
        )
        .map_err(|e| Answer::Unhandled(FailureKind::Decode, e.to_string()))
    }

    /// The running record's call answered (`Err`: it could not be made or
    /// the handler failed): an acknowledged record goes to the `acked` list, any other is
    /// handed back to the Dispatcher and blocks the lane. `ended`: when the
    /// call ended. Returns whether the Dispatcher has something new.
    pub(super) fn settle(&mut self, result: Result<Outcome, Answer>, ended: u64) -> bool {
        let mut board = self.board.borrow_mut();
        let dispatcher = board.dispatcher;
        let lane = &mut board.lanes[self.lane];
        // Taken by the Dispatcher meanwhile (the call timed out): its answer
        // no longer counts.
        let Some(running) = lane.running.take_if(|r| r.incarnation == self.incarnation) else {
            return false;
        };
        if let Some(stopwatch) = self.timed {
            self.durations.observe(
                &running.job.record.topic,
                &self.settings,
                stopwatch.elapsed_ns(self.started, ended),
            );
        }
        if running.job.dispatcher != dispatcher {
            return false;
        }
        match result {
            Ok(Outcome::Ack) => {
                if !lane.outputs.is_empty() {
                    let written = std::mem::take(&mut lane.outputs);
                    let job = &running.job;
                    board.outputs.push((job.stamp, job.record.clone(), written));
                }
                board.acked.push(running.job)
            }
            Ok(outcome) => {
                lane.outputs.clear();
                lane.blocked = true;
                board
                    .answers
                    .push((self.lane, running.job, Answer::Outcome(outcome)));
            }
            Err(answer) => {
                lane.outputs.clear();
                lane.blocked = true;
                board.answers.push((self.lane, running.job, answer));
            }
        }
        true
    }

    /// The `handle` span of the running `record` (disabled unless a
    /// subscriber takes it; then its trace context is the running
    /// record's, for the handler's publishes).
    pub(super) fn handle_span(&self, record: &Record, attempt: u32) -> tracing::Span {
        use tracing::field::Empty;
        let span = tracing::info_span!(target: "kafkactor", "handle",
            topic = %record.topic, partition = record.partition, offset = record.offset,
            group = %self.settings.group, attempt, message_id = Empty,
            trace_id = Empty, span_id = Empty, parent_span_id = Empty);
        if span.is_disabled() {
            return span;
        }
        let state = record.headers.get(crate::envelope::header::TRACESTATE);
        let trace = in_trace(&span, TraceContext::of(record), state);
        if let Some(id) = record.headers.get_str(crate::envelope::header::MESSAGE_ID) {
            span.record("message_id", id);
        }
        let mut board = self.board.borrow_mut();
        if let Some(running) = board.lanes[self.lane].running.as_mut() {
            running.trace = Some(Box::new(trace));
        }
        span
    }

    /// Gives the running record a deadline: it did not answer at once.
    pub(super) fn set_deadline(&self) {
        let Some(timeout) = self.settings.handler_timeout else {
            return;
        };
        let mut board = self.board.borrow_mut();
        let lane = &mut board.lanes[self.lane];
        if let Some(running) = lane
            .running
            .as_mut()
            .filter(|r| r.incarnation == self.incarnation && r.deadline.is_none())
        {
            running.deadline = Some(crate::clock::deadline_in(timeout));
            board.deadlines_changed = true;
            board.wake_dispatcher();
        }
    }
}

impl<A: Actor<Context = Context<A>>> ActorFuture<A> for Runner<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        this.drop_if_stale();
        // Publishes made by the handler during this turn inherit the
        // running record's context.
        let _current = Current::enter(&this.handling);
        // Looked up once per turn, not per record.
        let spans = spans_on();
        let (result, news) = if this.routes.batch.is_some() {
            this.batch_turn(act, ctx, task, spans)
        } else {
            this.turn(act, ctx, task, spans)
        };
        this.durations.flush();
        if news {
            this.board.borrow_mut().wake_dispatcher();
        }
        result
    }
}

impl<A: Actor<Context = Context<A>>> Runner<A> {
    /// Runs records until the lane has none, the budget is spent or a
    /// handler's answer is awaited; returns whether the Dispatcher has
    /// something new. Apart from the turn's set-up and end, which hold
    /// guards a panicking handler must drop: the loop is compiled on its
    /// own, without them.
    #[inline(never)]
    fn turn(
        &mut self,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
        spans: bool,
    ) -> (Poll<()>, bool) {
        let this = self;
        let mut news = false;
        let mut budget = RUN_BUDGET;
        // When the last call of this turn ended: the next one starts then.
        // One clock reading per record, none when calls are not timed.
        let timed = this.timed;
        let clock = || timed.map_or(0, Stopwatch::now);
        let mut ended: Option<u64> = None;
        let result = loop {
            if let Some(reply) = &mut this.reply {
                let polled = {
                    let _entered = this.span.as_ref().map(tracing::Span::enter);
                    reply.poll(act, ctx, task)
                };
                let Poll::Ready(answer) = polled else {
                    this.set_deadline();
                    break Poll::Pending;
                };
                this.reply = None;
                // The `handle` span ends with its record's answer.
                let span = this.span.take();
                let incarnation = this.incarnation;
                let now = clock();
                ended = Some(now);
                news |= this.settle(answer.ok_or(Answer::HandlerFailed { incarnation }), now);
                drop(span);
            }
            if turn_over(ctx, task, budget) {
                break Poll::Pending;
            }
            let (record, attempt) = match this.next(task.waker()) {
                Err(()) => break Poll::Ready(()),
                Ok(None) => break Poll::Pending,
                Ok(Some(next)) => next,
            };
            budget -= 1;
            this.started = ended.unwrap_or_else(clock);
            let span = spans.then(|| this.handle_span(&record, attempt));
            let reply = {
                let _entered = span.as_ref().map(tracing::Span::enter);
                this.call(act, ctx, record, attempt)
            };
            let now = clock();
            match reply {
                Ok(Reply::Now(outcome)) => news |= this.settle(Ok(outcome), now),
                // Polled at the top of the loop.
                Ok(Reply::Later(reply)) => {
                    this.reply = Some(reply);
                    this.span = span;
                }
                Err(answer) => news |= this.settle(Err(answer), now),
            }
            ended = Some(now);
        };
        (result, news)
    }
}

impl<A: Actor> Drop for Runner<A> {
    fn drop(&mut self) {
        let (board, lane, incarnation) = (self.board.clone(), self.lane, self.incarnation);
        // The board is never borrowed while a handler stops; should it be,
        // the lane is handed back once it is not, rather than left wedged.
        if board.try_borrow_mut().is_ok() {
            detach(&board, lane, incarnation);
        } else {
            actix_rt::spawn(async move { detach(&board, lane, incarnation) });
        }
    }
}

/// Whether a turn ends before its next call: the actor waits for a future
/// of its own or stops (no new record then), or the turn's `budget` is
/// spent (the runner is woken at once, to let the thread's other tasks
/// run first).
#[inline(always)]
pub(super) fn turn_over<A: Actor<Context = Context<A>>>(
    ctx: &Context<A>,
    task: &task::Context<'_>,
    budget: usize,
) -> bool {
    if ctx.waiting() || ctx.state() != ActorState::Running {
        return true;
    }
    if budget == 0 {
        task.waker().wake_by_ref();
        return true;
    }
    false
}

/// Registers `waker` as the lane runner's, to be woken when it has records.
pub(super) fn register(lane: &mut LaneState, waker: &Waker) {
    if let Some((_, registered)) = &mut lane.runner {
        if !registered.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *registered = Some(waker.clone());
        }
    }
}

/// Handler incarnation `incarnation` of `lane` is gone: the lane waits for
/// the next, and a record it was handling is handed back to the Dispatcher
/// (to retry or dead-letter).
fn detach(board: &SharedBoard, lane: usize, incarnation: u64) {
    let mut board = board.borrow_mut();
    let dispatcher = board.dispatcher;
    let state = &mut board.lanes[lane];
    if state
        .runner
        .as_ref()
        .is_some_and(|(n, _)| *n == incarnation)
    {
        state.runner = None;
    }
    let Some(running) = state.take_running(dispatcher, |r| r.incarnation == incarnation) else {
        return;
    };
    if running.job.dispatcher == dispatcher {
        state.blocked = true;
        board
            .answers
            .push((lane, running.job, Answer::HandlerFailed { incarnation }));
        board.wake_dispatcher();
    }
}
