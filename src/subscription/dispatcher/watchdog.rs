//! The Dispatcher's watchdog: one timer for the earliest deadline of the
//! handler calls under way (those an earlier incarnation started
//! included); a call past it fails as a timeout and its handler is
//! re-created, so a lane never stays blocked.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::fate::failure;
use super::{Dispatcher, SIBLING_WAIT};
use crate::dead_letter::FailureKind;
use crate::subscription::lane::Job;

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

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Sets the one timer for the earliest deadline of the calls under way,
    /// those an earlier incarnation started included.
    pub(super) fn arm_watchdog(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn time_out_overdue(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut overdue = Vec::new();
        {
            let mut board = self.board.borrow_mut();
            for (i, lane) in board.lanes.iter_mut().enumerate() {
                let late = lane
                    .running
                    .as_ref()
                    .is_some_and(|r| r.deadline.is_some_and(|d| d <= now));
                if let Some(running) = lane.take_running(self.incarnation, |_| late) {
                    // The call's answer, should it still come, no longer counts.
                    lane.blocked = true;
                    overdue.push((i, running));
                }
            }
        }
        let limit = self.settings.handler_timeout.unwrap_or_default();
        for (i, running) in overdue {
            if running.job.dispatcher == self.incarnation {
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
    pub(super) fn on_stale_timeout(
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

    /// The handler did not answer within the handler timeout: the attempt
    /// failed, and the handler (maybe stuck) is re-created before the lane
    /// goes on.
    pub(super) fn on_handler_timeout(
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
}
