//! Publishes that join a record's transaction: what a handler of a
//! transactional subscription
//! ([`Subscription::transactional`](crate::Subscription::transactional))
//! publishes while it runs is not sent to the Producer but kept with the
//! record it handles. Once the record is acknowledged, the Dispatcher hands
//! it to the consumer connection with the record's completion, which
//! writes it and commits the record's offset in one broker transaction.
//! A handling that does not end in an acknowledgement (a retry, a
//! rejection, a panic, a timeout) drops what it published.

use crate::error::{Error, Result};
use crate::observe::trace::{inherit, with_current, with_current_lane};
use crate::producer::prepare;
use crate::publish::{Publish, PublishOutcome};

/// What became of a publish offered to the record's transaction.
pub(crate) enum Joined {
    /// Taken (or refused, with why).
    Taken(Result<PublishOutcome>),
    /// Not in a transactional handler: for the Producer.
    Back(Publish),
}

/// Takes `publish` into the transaction of the record handled on this
/// thread, when its subscription is transactional; gives it back otherwise.
pub(crate) fn join(mut publish: Publish) -> Joined {
    let Some(Some(max_bytes)) =
        with_current_lane(|board, _| board.try_borrow().ok().and_then(|b| b.transactional))
    else {
        return Joined::Back(publish);
    };
    if publish.due.is_some() {
        return Joined::Taken(Err(Error::Config(
            "a delayed publish cannot join a transaction: a transactional subscription's \
             handlers publish at once"
                .into(),
        )));
    }
    with_current(|record, parent| inherit(&mut publish.headers, record, parent));
    let record = match prepare(publish, max_bytes, None) {
        Ok((record, _)) => record,
        Err(e) => return Joined::Taken(Err(e)),
    };
    let joined = with_current_lane(|board, lane| {
        let mut board = board.try_borrow_mut().ok()?;
        let lane = board.lanes.get_mut(lane)?;
        lane.running.as_ref()?;
        lane.outputs.push(record);
        Some(())
    })
    .flatten();
    Joined::Taken(match joined {
        Some(()) => Ok(PublishOutcome::Transactional),
        None => Err(Error::Unavailable(
            "the record this handler published for is no longer being handled".into(),
        )),
    })
}
