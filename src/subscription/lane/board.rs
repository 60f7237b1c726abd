//! The board a subscription's Dispatcher and its lanes' runners share:
//! each lane's queue, its running record and its state.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use crate::connection::protocol::Stamp;
use crate::dead_letter::FailureKind;
use crate::delivery::Outcome;
use crate::envelope::{OutgoingRecord, Record};
use crate::observe::trace::TraceContext;
use crate::subscription::transaction::Transactional;

/// One record on a lane.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) record: Arc<Record>,
    /// When and from where it was taken.
    pub(crate) stamp: Stamp,
    /// 1-based attempt about to run (or that just ran).
    pub(crate) attempt: u32,
    /// The Dispatcher incarnation that queued it.
    pub(crate) dispatcher: u64,
    /// A copy of a record this member handles (an idempotent
    /// subscription's: the same idempotency key): not handled when its
    /// turn comes but handed back ([`Answer::Copy`]), its lane blocked
    /// until the Dispatcher knows the original's fate.
    pub(crate) copy: bool,
}

/// Why a record was handed back to the Dispatcher.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The handler answered `Retry` or `Reject`.
    Outcome(Outcome),
    /// The record could not be handled: too large, unroutable, undecodable.
    Unhandled(FailureKind, String),
    /// The handler incarnation stopped (a panic) or dropped its reply while
    /// handling it.
    HandlerFailed { incarnation: u64 },
    /// Its turn came, and it is a copy ([`Job::copy`]): not handled here.
    Copy,
}

/// A handler call under way on a lane.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) job: Job,
    /// The handler incarnation handling it.
    pub(crate) incarnation: u64,
    /// When it times out, once it did not answer at once.
    pub(crate) deadline: Option<Instant>,
    /// Its `handle` span's trace context, when the span is on: what the
    /// handler's publishes are children of (boxed: a pointer's width on
    /// every lane whether spans are on or not).
    pub(crate) trace: Option<Box<TraceContext>>,
}

/// One lane's state.
#[derive(Debug, Default)]
pub(crate) struct LaneState {
    /// Records waiting, in the order they are handled.
    pub(crate) queue: VecDeque<Job>,
    /// The record its handler is on.
    pub(crate) running: Option<Running>,
    /// The Dispatcher holds a record of this lane (retrying it or writing
    /// its dead letter): nothing else starts until it releases the lane.
    pub(crate) blocked: bool,
    /// The handler incarnation whose runner takes this lane's records, and
    /// its waker while it waits for some.
    pub(super) runner: Option<(u64, Option<Waker>)>,
    /// What the running record's handler published in its transaction (a
    /// transactional subscription's): moved to the board's `outputs` when
    /// it acknowledges, dropped otherwise.
    pub(crate) outputs: Vec<OutgoingRecord>,
    /// The other records of the batch under way (its first is `running`'s),
    /// in order; empty for a single record's handler.
    pub(crate) rest: Vec<Job>,
    /// How many of its next records a batch handler takes one at a time
    /// (a transactional batch that failed part way: what each record
    /// published must be told apart).
    pub(crate) singles: usize,
}

impl LaneState {
    /// Puts `jobs` back at the head of the queue, in their order: a batch's
    /// records that were not handled.
    pub(crate) fn requeue(&mut self, jobs: Vec<Job>) {
        for job in jobs.into_iter().rev() {
            self.queue.push_front(job);
        }
    }

    /// Takes the call under way when `take` says so, its batch's other
    /// records put back at the head of the queue when Dispatcher
    /// incarnation `dispatcher` queued them (an older one's are dropped:
    /// the connection hands them to the new one again).
    pub(crate) fn take_running(
        &mut self,
        dispatcher: u64,
        take: impl FnOnce(&Running) -> bool,
    ) -> Option<Running> {
        let running = self.running.take_if(|r| take(r))?;
        if !self.rest.is_empty() {
            let mut rest = std::mem::take(&mut self.rest);
            rest.retain(|job| job.dispatcher == dispatcher);
            self.requeue(rest);
        }
        Some(running)
    }

    /// Whether the lane has nothing to do or under way.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_none()
    }

    /// Wakes the lane's runner, if one waits.
    pub(crate) fn wake(&mut self) {
        if let Some((_, Some(waker))) = &mut self.runner {
            waker.wake_by_ref();
        }
    }
}

/// The lanes of one subscription, shared by its Dispatcher and runners.
#[derive(Debug, Default)]
pub(crate) struct Board {
    pub(crate) lanes: Vec<LaneState>,
    /// Records acknowledged by their handlers, for the Dispatcher to report.
    pub(crate) acked: Vec<Job>,
    /// What the handlers of acknowledged records published in their
    /// transaction (a transactional subscription's), with the records.
    pub(crate) outputs: Vec<(Stamp, Arc<Record>, Vec<OutgoingRecord>)>,
    /// What a handler's publish joining its record's transaction is
    /// checked against, when the subscription is transactional.
    pub(crate) transactional: Option<Transactional>,
    /// Records handed back to the Dispatcher, with their lane and why.
    pub(crate) answers: Vec<(usize, Job, Answer)>,
    /// The connection incarnation that read the queued records (set by the
    /// Dispatcher when a new one feeds it).
    pub(crate) feeding: Option<actix::Recipient<crate::connection::protocol::Completed>>,
    /// Queued records dropped because the connection that read them is
    /// gone (its successor reads them again): the Dispatcher abandons them.
    pub(crate) dropped: Vec<Job>,
    /// A call got a deadline since the Dispatcher last looked.
    pub(crate) deadlines_changed: bool,
    /// The Dispatcher incarnation filling the queues.
    pub(crate) dispatcher: u64,
    /// The Dispatcher's waker, taken when it is woken.
    waker: Option<Waker>,
}

/// A subscription's board, shared on its actor thread.
pub(crate) type SharedBoard = Rc<RefCell<Board>>;

impl Board {
    /// A board of `lanes` empty lanes.
    pub(crate) fn shared(lanes: usize) -> SharedBoard {
        Rc::new(RefCell::new(Board {
            lanes: (0..lanes).map(|_| LaneState::default()).collect(),
            ..Board::default()
        }))
    }

    /// A new Dispatcher incarnation fills the queues: queues, answers and
    /// reports of the old one are dropped, calls under way finish and their
    /// answers are ignored. Returns the new incarnation's number.
    pub(crate) fn new_dispatcher(&mut self) -> u64 {
        self.dispatcher += 1;
        for lane in &mut self.lanes {
            lane.queue.clear();
            lane.blocked = false;
        }
        self.acked.clear();
        self.answers.clear();
        self.dispatcher
    }

    /// Registers the Dispatcher's waker.
    pub(crate) fn watch(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    pub(super) fn wake_dispatcher(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}
