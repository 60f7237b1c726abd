//! Delayed and scheduled publishing: the Republisher subtree, which moves
//! records out of their delay buckets when due (the buckets themselves, and
//! the headers a delayed record carries, are `buckets.rs`).
//!
//! `Publish::delay(d)` / `Publish::at(t)` write the record to a *delay
//! bucket*, a topic whose records all wait the same time (default buckets:
//! 1s, 5s, 30s, 1m, 5m, 15m, 1h, 6h, 24h), with the headers `x-deliver-at`
//! (when it is due, milliseconds since the Unix epoch) and
//! `x-original-topic` (where it goes then). Key, payload and the other
//! headers travel untouched.
//!
//! How a record moves (the [`Republisher`](republisher) does it):
//! - A record stays in a bucket for exactly the bucket's length, counted
//!   from when it was written there, so within a bucket partition arrival
//!   order is release order and the head is always the next record due.
//! - When released with at most [`Delays::hold_in_memory`] (default 5 s)
//!   or less than the smallest bucket to go, it is held by an in-memory
//!   timer until it is due, while it stays uncommitted in its bucket.
//!   Otherwise it goes to the largest bucket that fits what remains (long
//!   delays hop through the largest bucket repeatedly).
//! - Delays shorter than the smallest bucket go to the `0s` bucket, whose
//!   records are released at once into that timer.
//!
//! A bucket is chosen with a [`HOP_ALLOWANCE`](crate::Delays::HOP_ALLOWANCE) to spare, so a hop's own
//! latency never makes a record late. Due time is checked against the wall
//! clock: a record is never forwarded before its `x-deliver-at`.

pub(crate) mod republisher;
pub(crate) mod tree;
