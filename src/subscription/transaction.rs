//! Publishes that join a record's transaction: what a handler of a
//! transactional subscription
//! ([`Subscription::transactional`](crate::Subscription::transactional))
//! publishes while it runs is not sent to the Producer but kept with the
//! record it handles. Once the record is acknowledged, the Dispatcher hands
//! it to the consumer connection with the record's completion, which
//! writes it and commits the record's offset in one broker transaction.
//! A handling that does not end in an acknowledgement (a retry, a
//! rejection, a panic, a timeout) drops what it published.

use crate::broker::PartitionCounts;
use crate::delivery::current::{Handling, Joined};
use crate::envelope::{OutgoingRecord, Record};
use crate::error::{Error, Result};
use crate::observe::trace::{inherit, TraceContext};
use crate::producer::prepare;
use crate::publish::{Publish, PublishOutcome};
use crate::subscription::lane::SharedBoard;

/// What a publish joining a transaction is checked against when it is
/// made: a record it may not write is refused then, with a typed error,
/// and never reaches a commit.
#[derive(Debug, Clone)]
pub(crate) struct Transactional {
    /// The largest record it may write.
    pub(crate) max_bytes: usize,
    /// The partition counts known of the topics it may write to.
    pub(crate) partitions: PartitionCounts,
}

/// What a lane's handler is handling, as publishes made from it see it
/// (the hook of [`delivery::current`](crate::delivery::current)).
pub(crate) struct LaneHandling {
    pub(crate) board: SharedBoard,
    pub(crate) lane: usize,
}

impl Handling for LaneHandling {
    fn record(&self, f: &mut dyn FnMut(&Record, Option<TraceContext>)) {
        let Ok(board) = self.board.try_borrow() else {
            return;
        };
        if let Some(running) = board.lanes.get(self.lane).and_then(|l| l.running.as_ref()) {
            f(&running.job.record, running.trace.as_deref().copied());
        }
    }

    fn handles(&self, record: &Record) -> bool {
        let Ok(board) = self.board.try_borrow() else {
            return false;
        };
        board.lanes.get(self.lane).is_some_and(|lane| {
            lane.running
                .iter()
                .map(|running| &running.job)
                .chain(&lane.rest)
                .any(|job| std::ptr::eq(&*job.record, record))
        })
    }

    /// Takes `publish` into the transaction of the record handled, when its
    /// subscription is transactional; gives it back otherwise. One look at
    /// the board: the subscription's setting, the running record (whose
    /// context the publish inherits) and its lane's outputs.
    fn join(&self, publish: Publish) -> Joined {
        let Ok(mut board) = self.board.try_borrow_mut() else {
            return Joined::Back(publish);
        };
        let Some(checks) = board.transactional.clone() else {
            return Joined::Back(publish);
        };
        let Some(lane) = board.lanes.get_mut(self.lane) else {
            return Joined::Taken(Err(gone()));
        };
        let Some(running) = lane.running.as_ref() else {
            return Joined::Taken(Err(gone()));
        };
        let record = match joinable(
            publish,
            &running.job.record,
            running.trace.as_deref().copied(),
            &checks,
        ) {
            Ok(record) => record,
            Err(e) => return Joined::Taken(Err(e)),
        };
        lane.outputs.push(record);
        Joined::Taken(Ok(PublishOutcome::Transactional))
    }
}

/// `publish` as the record it writes in the transaction of `handled`
/// (whose context it inherits; `parent` is its `handle` span's).
fn joinable(
    mut publish: Publish,
    handled: &Record,
    parent: Option<TraceContext>,
    checks: &Transactional,
) -> Result<OutgoingRecord> {
    if publish.due.is_some() {
        return Err(Error::Config(
            "a delayed publish cannot join a transaction: a transactional subscription's \
             handlers publish at once"
                .into(),
        ));
    }
    inherit(&mut publish.headers, handled, parent);
    let (record, _) = prepare(publish, checks.max_bytes, None)?;
    if let (Some(p), Some(n)) = (record.partition, checks.partitions.get(&record.topic)) {
        if p >= n {
            return Err(Error::no_partition(&record.topic, p, n));
        }
    }
    Ok(record)
}

fn gone() -> Error {
    Error::Unavailable("the record this handler published for is no longer being handled".into())
}
