//! A batch handler's turn: its runner takes up to the subscription's batch
//! size of its lane's records at once (waiting up to the linger for a
//! batch to fill), calls `Handler<Batch<T>>` with them, and settles each
//! record as a single record's answer would be settled.
//!
//! A record the handler cannot take (too large, unroutable, undecodable)
//! ends the batch before it, and is handed back alone when its turn comes
//! (dead-lettered before any batch holds it). Of a batch's answer
//! ([`BatchOutcome`]): the records before the first one not acknowledged
//! go to the `acked` list, that one is handed back with its outcome (the
//! lane blocked, as for a single record), and the records after it go
//! back to the head of the queue, untouched. A transactional batch that
//! failed part way keeps none of its outputs: its records go back to the
//! queue and are handled one at a time (`singles`), so that what each one
//! publishes joins its own record's transaction.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use actix::prelude::*;

use crate::clock::Stopwatch;
use crate::dead_letter::FailureKind;
use crate::delivery::BatchOutcome;
use crate::envelope::Record;

use super::board::{Answer, Board};
use super::reply::{Later, Reply};
use super::runner::{register, turn_over, Runner, RUN_BUDGET};

/// What a batch handler's runner awaits and lingers on.
pub(crate) struct Batching<A: Actor> {
    /// The answer awaited for the lane's running batch.
    reply: Option<Later<A, BatchOutcome>>,
    /// The wait for a batch to fill, while one lingers.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<A: Actor> Default for Batching<A> {
    fn default() -> Self {
        Batching {
            reply: None,
            linger: None,
        }
    }
}

impl<A: Actor<Context = Context<A>>> Runner<A> {
    /// Runs batches until the lane has none, the budget is spent or a
    /// handler's answer is awaited; returns whether the Dispatcher has
    /// something new.
    #[inline(never)]
    pub(super) fn batch_turn(
        &mut self,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
        spans: bool,
    ) -> (Poll<()>, bool) {
        let mut news = false;
        let mut budget = RUN_BUDGET;
        let timed = self.timed;
        let clock = || timed.map_or(0, Stopwatch::now);
        let result = loop {
            if let Some(reply) = &mut self.batch.reply {
                let polled = {
                    let _entered = self.span.as_ref().map(tracing::Span::enter);
                    reply.poll(act, ctx, task)
                };
                let Poll::Ready(answer) = polled else {
                    self.set_deadline();
                    break Poll::Pending;
                };
                self.batch.reply = None;
                let span = self.span.take();
                let incarnation = self.incarnation;
                news |=
                    self.settle_batch(answer.ok_or(Answer::HandlerFailed { incarnation }), clock());
                drop(span);
            }
            if turn_over(ctx, task, budget) {
                break Poll::Pending;
            }
            let records = match self.next_batch(task) {
                Err(()) => break Poll::Ready(()),
                Ok(None) => break Poll::Pending,
                Ok(Some(records)) => records,
            };
            budget -= 1;
            self.started = clock();
            let span = spans.then(|| self.handle_span(&records[0].0, records[0].1));
            let reply = {
                let _entered = span.as_ref().map(tracing::Span::enter);
                self.call_batch(act, ctx, records)
            };
            let now = clock();
            match reply {
                Ok(Reply::Now(outcome)) => news |= self.settle_batch(Ok(outcome), now),
                Ok(Reply::Later(reply)) => {
                    self.batch.reply = Some(reply);
                    self.span = span;
                }
                Err(answer) => news |= self.settle_batch(Err(answer), now),
            }
        };
        (result, news)
    }

    /// The lane's next batch if this runner may start one, marked running
    /// (its first record as the call's, the others as its `rest`); none
    /// while it lingers for a batch to fill. `Err` when another incarnation
    /// took the lane over.
    #[allow(clippy::type_complexity)]
    fn next_batch(
        &mut self,
        task: &mut task::Context<'_>,
    ) -> Result<Option<Vec<(Arc<Record>, u32)>>, ()> {
        let (max, linger) = self.settings.batch;
        let mut board = self.board.borrow_mut();
        let singles = board.lanes[self.lane].singles > 0;
        let max = if singles { 1 } else { max };
        if !linger.is_zero() && max > 1 {
            let lane = &mut board.lanes[self.lane];
            let queued = lane.queue.iter().take(max).take_while(|j| !j.copy).count();
            // A retried record (in place, or from a retry topic, where
            // records come one at a time) does not wait for company.
            let retried = lane.queue.front().is_some_and(|j| {
                j.attempt > 1
                    || self
                        .settings
                        .retry_topics
                        .source_of(&j.record.topic)
                        .is_some()
            });
            if lane.running.is_none() && !lane.blocked && !retried && queued > 0 && queued < max {
                let wait = self
                    .batch
                    .linger
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(linger)));
                if wait.as_mut().poll(task).is_pending() {
                    // Woken by the timer, or by more records.
                    register(lane, task.waker());
                    return Ok(None);
                }
            }
        }
        self.batch.linger = None;
        let Some(first) = self.startable(&mut board, task.waker())? else {
            return Ok(None);
        };
        self.start(&mut board, first);
        let lane = &mut board.lanes[self.lane];
        let first = &lane.running.as_ref().expect("started").job;
        let mut records = vec![(first.record.clone(), first.attempt)];
        while records.len() < max && lane.queue.front().is_some_and(|j| !j.copy) {
            let job = lane.queue.pop_front().expect("a front");
            records.push((job.record.clone(), job.attempt));
            lane.rest.push(job);
        }
        if singles {
            lane.singles -= 1;
        }
        Ok(Some(records))
    }

    /// Calls the handler with `records` (the running batch's), or with the
    /// ones before the first it cannot take; `Err` when that is the first.
    fn call_batch(
        &self,
        act: &mut A,
        ctx: &mut Context<A>,
        mut records: Vec<(Arc<Record>, u32)>,
    ) -> Result<Reply<A, BatchOutcome>, Answer> {
        let call = self.routes.batch.expect("a batch handler's routes");
        if let Some((i, answer)) = records
            .iter()
            .enumerate()
            .find_map(|(i, (record, _))| self.check(record).err().map(|a| (i, a)))
        {
            self.keep(i.max(1));
            if i == 0 {
                return Err(answer);
            }
            records.truncate(i);
        }
        loop {
            let settings = &self.settings;
            match call(
                act,
                ctx,
                records,
                settings.default_content_type,
                settings.outlet(),
            ) {
                Ok(reply) => return Ok(reply),
                Err((0, e)) => {
                    self.keep(1);
                    return Err(Answer::Unhandled(FailureKind::Decode, e.to_string()));
                }
                // The handler was not called: again, without it and after.
                Err((i, _)) => {
                    self.keep(i);
                    records = self.running_records();
                }
            }
        }
    }

    /// The records of the running batch, in order.
    fn running_records(&self) -> Vec<(Arc<Record>, u32)> {
        let board = self.board.borrow();
        let lane = &board.lanes[self.lane];
        lane.running
            .iter()
            .map(|running| &running.job)
            .chain(&lane.rest)
            .map(|job| (job.record.clone(), job.attempt))
            .collect()
    }

    /// Keeps the first `n` records of the running batch, putting the others
    /// back at the head of the queue.
    fn keep(&self, n: usize) {
        let mut board = self.board.borrow_mut();
        let lane = &mut board.lanes[self.lane];
        if lane.running.is_some() && lane.rest.len() >= n {
            let back = lane.rest.split_off(n.saturating_sub(1));
            lane.requeue(back);
        }
    }

    /// The running batch's call answered (`Err`: it could not be made, or
    /// the handler failed): each record settled as the module documentation
    /// says. Returns whether the Dispatcher has something new.
    fn settle_batch(&mut self, result: Result<BatchOutcome, Answer>, ended: u64) -> bool {
        let mut board = self.board.borrow_mut();
        let (dispatcher, transactional) = (board.dispatcher, board.transactional.is_some());
        let Board {
            lanes,
            acked,
            outputs,
            answers,
            ..
        } = &mut *board;
        let lane = &mut lanes[self.lane];
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
        let mut rest = std::mem::take(&mut lane.rest);
        if running.job.dispatcher != dispatcher {
            return false;
        }
        let job = running.job;
        let n = 1 + rest.len();
        let (acknowledged, failed) = match result {
            Ok(outcome) => outcome.verdict(n),
            Err(answer) => {
                lane.outputs.clear();
                lane.requeue(rest);
                lane.blocked = true;
                answers.push((self.lane, job, answer));
                return true;
            }
        };
        let written = std::mem::take(&mut lane.outputs);
        if failed.is_some() && acknowledged > 0 && transactional {
            rest.insert(0, job);
            lane.requeue(rest);
            lane.singles = n;
            return false;
        }
        let mut jobs = std::iter::once(job).chain(rest);
        acked.extend(jobs.by_ref().take(acknowledged));
        if failed.is_none() && !written.is_empty() {
            // The whole batch: what it published commits with its last record.
            let last = acked.last().expect("the whole batch acknowledged");
            outputs.push((last.stamp, last.record.clone(), written));
        }
        if let Some(outcome) = failed {
            let job = jobs.next().expect("the failed record");
            lane.requeue(jobs.collect());
            lane.blocked = true;
            answers.push((self.lane, job, Answer::Outcome(outcome)));
        }
        true
    }
}
