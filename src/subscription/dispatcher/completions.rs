//! Completions: what the Dispatcher reports to the consumer connection
//! once a record's fate is final, gathered into one message per batch (at
//! once when [`FLUSH_BATCH`] have gathered or no lane has work, within
//! [`FLUSH_DELAY`] otherwise).

use std::time::Duration;

use actix::prelude::*;

use super::Dispatcher;
use crate::subscription::lane::Job;

/// Completions are reported to the connection in one message per batch (not
/// one per record): at once when this many have gathered or no lane has
/// work, otherwise at most [`FLUSH_DELAY`] after the first of a batch.
pub(super) const FLUSH_BATCH: usize = 64;
/// Longest a completion waits to be reported while lanes are busy (a slow
/// handler must not hold the commit or a revocation back).
const FLUSH_DELAY: Duration = Duration::from_millis(2);
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

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// `job`'s fate is final: report it and release its lane (if it
    /// blocks one).
    pub(super) fn complete(&mut self, lane: Option<usize>, job: Job, ctx: &mut Context<Self>) {
        let live = self.live(&job);
        // Of a stale record (read by a connection that is gone, or of a
        // partition given up) nothing counts any more.
        let retried = (live && self.is_retry_record(&job.record)).then(|| job.record.clone());
        self.final_fate(job.record, live, ctx);
        if let Some(record) = retried {
            self.retry_finished(&record, ctx);
        }
        if let Some(i) = lane {
            self.release_lane(i);
        }
        self.report(ctx);
    }

    /// Reports the completions gathered so far: at once when a batch is
    /// full or no lane has work, otherwise within [`FLUSH_DELAY`].
    pub(super) fn report(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn flush(&mut self) {
        if self.completed.is_empty() {
            return;
        }
        let done = std::mem::replace(&mut self.completed, Vec::with_capacity(FLUSH_BATCH));
        self.feed.complete(done, std::mem::take(&mut self.outputs));
    }
}
