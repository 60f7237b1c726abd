//! A writer's intake: writes that reach the connection without a mailbox
//! message each. The writer above the connection (the Producer's
//! [`ProducerHandle`](crate::ProducerHandle)s) fills it from any thread;
//! each connection incarnation in turn drains it in its own turns, so a
//! direct publish costs one queue push and the connection's wake-up, with
//! no actor hop in between.
//!
//! What a request becomes (prepared, stamped, with the reply that answers
//! its publisher) is the writer's business: it implements [`Intake`].
//! Requests still in the intake when an incarnation stops are taken by the
//! next one; writes an incarnation took and did not hand to the client
//! answer "connection stopped" with their record when dropped, as every
//! write does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{self, Poll};

use actix::prelude::*;

use super::{ProducerConnection, Write, WriteReply};

/// Most writes taken from the intake at once, and rounds of that per turn
/// before the connection lets its thread's other tasks run.
const TAKE_BATCH: usize = 256;
const TAKE_ROUNDS: usize = 16;

/// Where a connection takes the writes of its intake from.
pub(crate) trait Intake<R: WriteReply>: 'static {
    /// Moves up to `max` waiting requests into `writes` as writes (a
    /// request that fails before it is one is answered here).
    /// `Ready(0)`: closed, nothing will come; `Pending`: nothing waits,
    /// and the task is woken when something does.
    fn poll_take(
        &mut self,
        task: &mut task::Context<'_>,
        writes: &mut VecDeque<Write<R>>,
        max: usize,
    ) -> Poll<usize>;
}

/// An intake shared by the incarnations of one connection, on the
/// application's actor thread.
pub(crate) type SharedIntake<R> = Rc<RefCell<dyn Intake<R>>>;

/// Takes what waits in the intake into the connection's queue and hands
/// it to the client: a future of the connection's context, woken when the
/// intake gets something. Not polled while the connection waits (a topic
/// being created, a full client queue), so writes keep their order.
pub(super) struct Drain;

impl<R: WriteReply> ActorFuture<ProducerConnection<R>> for Drain {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ProducerConnection<R>,
        ctx: &mut Context<ProducerConnection<R>>,
        task: &mut task::Context<'_>,
    ) -> Poll<()> {
        let Some(intake) = act.intake.clone() else {
            return Poll::Ready(());
        };
        for _ in 0..TAKE_ROUNDS {
            let before = act.queue.len();
            let taken = intake
                .borrow_mut()
                .poll_take(task, &mut act.queue, TAKE_BATCH);
            match taken {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => return Poll::Ready(()),
                Poll::Ready(_) => {
                    // The writes just taken.
                    let span = super::write_span(act.queue.range(before..));
                    let _entered = span.enter();
                    act.drain(ctx);
                    if ctx.waiting() {
                        // Polled again once the wait is over: the context
                        // polls its futures after its wait ends.
                        return Poll::Pending;
                    }
                }
            }
        }
        task.waker().wake_by_ref();
        Poll::Pending
    }
}
