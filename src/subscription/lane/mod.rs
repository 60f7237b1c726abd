//! Lanes: a lane is one handler actor and its queue of records, handled one
//! at a time in queue order (so records of one key, which always share a
//! lane, are handled in offset order).
//!
//! Role: the [`Dispatcher`](super::dispatcher) fills the lanes' queues on a
//! shared [`Board`]; each handler incarnation runs a [`Runner`], a future in
//! the handler actor's own context, that takes its lane's records one after
//! the other and calls the actor's `Handler<Delivery<T>>` with its `&mut
//! self` and `Context`, as the actor's mailbox would, without a mailbox
//! message, a reply channel or a wake-up per record: a runner woken once
//! handles every record queued since (up to [`RUN_BUDGET`] per turn).
//!
//! A record acknowledged (`Outcome::Ack`) is put on the board's `done`
//! list; any other fate is the Dispatcher's to decide: a `Retry` or
//! `Reject`, a record too large, unroutable or undecodable, a handler that
//! failed while handling it. Such a record is handed back as an [`Answer`]
//! and its lane is *blocked* (nothing else of it starts) until the
//! Dispatcher releases it, after a retry's backoff (the record goes back to
//! the head of the queue) or once the dead letter is durable. The Dispatcher
//! is woken once per runner turn, not per record.
//!
//! Answers: an `Outcome` (a synchronous handler), a `ResponseFuture` or a
//! `ResponseActFuture` (polled in place by the runner, in the handler's
//! context, so a panic in it fails the handler like a panic in `handle`),
//! `MessageResult`; any other `MessageResponse` answers through a oneshot
//! channel. A call that does not answer at once gets the subscription's
//! handler timeout as its deadline, which the Dispatcher watches.
//!
//! Owns: nothing of its own; the board is the subscription subtree's, shared
//! by the Dispatcher (which alone adds and removes records) and the runners.
//!
//! Restarts: a handler that panics or stops while handling a record drops
//! its runner, which hands the record back as [`Answer::HandlerFailed`]; the
//! next incarnation's runner attaches to the lane and takes the queue on
//! once the Dispatcher released it. A new Dispatcher incarnation starts a
//! new *Dispatcher incarnation*: the queues are emptied (the connection hands it every
//! unfinished record again) and answers to calls of an older one are
//! dropped.
//!
//! Files: `board.rs` (what the Dispatcher and the runners share),
//! `reply.rs` (a handler's answer, awaited in place), `runner.rs` (the
//! future that takes a lane's records in its handler's context).

mod batch;
mod board;
mod reply;
mod runner;

pub(crate) use board::{Answer, Board, Job, Running, SharedBoard};
pub(crate) use reply::Reply;
pub(crate) use runner::Runner;
