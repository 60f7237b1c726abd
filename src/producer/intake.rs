//! The Producer's intake as its connection drains it: each request a
//! [`ProducerHandle`](super::ProducerHandle) put there is prepared
//! (validated, stamped, sent to its first delay bucket when delayed, its
//! size checked) and becomes a write with the reply that answers its
//! publisher, in the connection's turn. A direct publish thus reaches the
//! broker without passing through the Producer actor; only a write that
//! fails in a way that may pass goes to it, to be sent again.

use std::collections::VecDeque;
use std::task::{self, Poll};

use tokio::sync::mpsc;

use super::handle::Request;
use super::queue::Replies;
use super::reply::Awaiting;
use super::{ProducerSettings, PublishBatch, PublishReply};
use crate::connection::producer::{Intake, Write};

/// The Producer's intake, drained by the producer connection.
pub(crate) struct ProducerIntake {
    requests: mpsc::Receiver<Request>,
    /// Requests taken and not yet turned into writes (kept: no allocation per turn).
    taken: Vec<Request>,
    settings: ProducerSettings,
    replies: Replies,
}

impl ProducerIntake {
    pub(super) fn new(
        requests: mpsc::Receiver<Request>,
        settings: ProducerSettings,
        replies: Replies,
    ) -> Self {
        ProducerIntake {
            requests,
            taken: Vec::new(),
            settings,
            replies,
        }
    }

    /// Turns `request` into its writes, pushed to `writes`.
    #[inline]
    fn take(&self, request: Request, writes: &mut VecDeque<Write<PublishReply>>) {
        let (publish, to) = match request {
            Request::One(publish, tx) => (publish, Awaiting::One(tx)),
            Request::Traced(traced) => {
                let (publish, tx, span) = *traced;
                (publish, Awaiting::Traced(Box::new((tx, span))))
            }
            Request::Batch(PublishBatch(publishes), tx, spans) => {
                let prepared = publishes
                    .into_iter()
                    .map(|p| self.settings.prepare(p))
                    .collect();
                return self
                    .replies
                    .batch(prepared, Some(tx), spans, |write| writes.push_back(write));
            }
        };
        if let Some(write) = self.replies.one(self.settings.prepare(publish), to) {
            writes.push_back(write);
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
