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
use crate::envelope::{OutgoingRecord, Record};
use crate::error::{Error, Result};
use crate::observe::trace::{inherit, with_current_lane, TraceContext};
use crate::producer::prepare;
use crate::publish::{Publish, PublishOutcome};

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

/// What became of a publish offered to the record's transaction.
pub(crate) enum Joined {
    /// Taken (or refused, with why).
    Taken(Result<PublishOutcome>),
    /// Not in a transactional handler: for the Producer.
    Back(Publish),
}

/// Takes `publish` into the transaction of the record handled on this
/// thread, when its subscription is transactional; gives it back otherwise.
/// One look at the board: the subscription's setting, the running record
/// (whose context the publish inherits) and its lane's outputs.
pub(crate) fn join(publish: Publish) -> Joined {
    let mut publish = Some(publish);
    let taken = with_current_lane(|board, lane| {
        let mut board = board.try_borrow_mut().ok()?;
        let checks = board.transactional.clone()?;
        let publish = publish.take().expect("taken once");
        let Some(lane) = board.lanes.get_mut(lane) else {
            return Some(Err(gone()));
        };
        let Some(running) = lane.running.as_ref() else {
            return Some(Err(gone()));
        };
        let record = match joinable(
            publish,
            &running.job.record,
            running.trace.as_deref().copied(),
            &checks,
        ) {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        lane.outputs.push(record);
        Some(Ok(PublishOutcome::Transactional))
    })
    .flatten();
    match (taken, publish) {
        (Some(answer), _) => Joined::Taken(answer),
        (None, Some(publish)) => Joined::Back(publish),
        // Not reached: a publish taken is always answered.
        (None, None) => Joined::Taken(Err(gone())),
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
