//! The Producer's intake as its connection drains it: each request a
//! [`ProducerHandle`](super::ProducerHandle) put there is prepared
//! (validated, stamped, sent to its first delay bucket when delayed, its
//! size checked) and becomes a write with the reply that answers its
//! publisher, in the connection's turn. A direct publish thus reaches the
//! broker without passing through the Producer actor; only a write that
//! fails in a way that may pass goes to it, to be sent again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{self, Poll};

use tokio::sync::mpsc;

use super::handle::Request;
use super::queue::Replies;
use super::reply::Awaiting;
use super::{prepare, PublishBatch, PublishReply};
use crate::buckets::Plan;
use crate::connection::producer::{Intake, Write};

/// The Producer's intake, drained by the producer connection.
pub(crate) struct ProducerIntake {
    requests: mpsc::Receiver<Request>,
    /// Requests taken and not yet turned into writes (kept: no allocation per turn).
    taken: Vec<Request>,
    max_record_bytes: usize,
    delays: Option<Arc<Plan>>,
    replies: Replies,
}

impl ProducerIntake {
    pub(super) fn new(
        requests: mpsc::Receiver<Request>,
        max_record_bytes: usize,
        delays: Option<Arc<Plan>>,
        replies: Replies,
    ) -> Self {
        ProducerIntake {
            requests,
            taken: Vec::new(),
            max_record_bytes,
            delays,
            replies,
        }
    }

    /// Turns `request` into its writes, pushed to `writes`.
    #[inline]
    fn take(&self, request: Request, writes: &mut VecDeque<Write<PublishReply>>) {
        let prepare = |publish| prepare(publish, self.max_record_bytes, self.delays.as_deref());
        match request {
            Request::One(publish, tx) => {
                if let Some(write) = self.replies.one(prepare(publish), Awaiting::One(tx)) {
                    writes.push_back(write);
                }
            }
            Request::Traced(traced) => {
                let (publish, tx, span) = *traced;
                let to = Awaiting::Traced(Box::new((tx, span)));
                if let Some(write) = self.replies.one(prepare(publish), to) {
                    writes.push_back(write);
                }
            }
            Request::Batch(PublishBatch(publishes), tx, spans) => {
                let prepared = publishes.into_iter().map(prepare).collect();
                self.replies
                    .batch(prepared, Some(tx), spans, |write| writes.push_back(write));
            }
        }
    }
}

impl Intake<PublishReply> for ProducerIntake {
    fn poll_take(
        &mut self,
        task: &mut task::Context<'_>,
        writes: &mut VecDeque<Write<PublishReply>>,
        max: usize,
    ) -> Poll<usize> {
        let mut taken = std::mem::take(&mut self.taken);
        let polled = self.requests.poll_recv_many(task, &mut taken, max);
        for request in taken.drain(..) {
            self.take(request, writes);
        }
        self.taken = taken;
        polled
    }
}
