//! What a batch handler receives ([`Batch`]) and what it answers
//! ([`BatchOutcome`]).

use actix::{Message, MessageResponse};

use super::{Delivery, Failure, Outcome};

/// Up to a subscription's batch size of records of one lane, in the order
/// they are handled (per key, offset order): what a batch handler
/// (`Handler<Batch<T>>`, or a closure given to
/// [`AppBuilder::handle_batch`](crate::AppBuilder::handle_batch)) gets.
/// Every record in it decoded as a `T`: a record that cannot be (or is
/// too large, or of another type) is dead-lettered before any batch holds
/// it. Each [`Delivery`] publishes and replies as a single record's does.
#[derive(Debug)]
pub struct Batch<T> {
    deliveries: Vec<Delivery<T>>,
}

impl<T> Batch<T> {
    pub(crate) fn new(deliveries: Vec<Delivery<T>>) -> Self {
        Batch { deliveries }
    }

    /// How many records it holds (at least one).
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// Whether it holds none (never, as handed to a handler).
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Its deliveries, in order.
    pub fn deliveries(&self) -> &[Delivery<T>] {
        &self.deliveries
    }

    /// Its deliveries, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Delivery<T>> {
        self.deliveries.iter()
    }

    /// Its decoded messages, in order.
    pub fn messages(&self) -> impl Iterator<Item = &T> {
        self.deliveries.iter().map(Delivery::message)
    }

    /// Takes its deliveries.
    pub fn into_deliveries(self) -> Vec<Delivery<T>> {
        self.deliveries
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = Delivery<T>;
    type IntoIter = std::vec::IntoIter<Delivery<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.deliveries.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a Batch<T> {
    type Item = &'a Delivery<T>;
    type IntoIter = std::slice::Iter<'a, Delivery<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.deliveries.iter()
    }
}

impl<T: 'static> Message for Batch<T> {
    type Result = BatchOutcome;
}

/// A batch handler's verdict: for the batch as a whole or per record. Each
/// record's fate is then decided as a single record's would be: retried
/// (in place, or through the retry topic), dead-lettered with the reason,
/// committed once every lower offset is done.
///
/// The records before the first one not acknowledged are acknowledged;
/// that one gets its outcome; the records after it are *untouched*: handed
/// out again after it, in order (in a later batch), whatever was answered
/// for them. In a [transactional](crate::Subscription::transactional)
/// subscription, where what the batch published cannot be told apart by
/// record, a batch not acknowledged whole publishes nothing: its records
/// are handed out again one at a time.
#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub enum BatchOutcome {
    /// Every record acknowledged.
    Ack,
    /// The same outcome for the batch as a whole: `All(Outcome::Retry(..))`
    /// retries its first record and hands the others out again after it.
    All(Outcome),
    /// One outcome per record, in order. Another count than the batch's
    /// is a handler bug: the batch is retried (`Retry` with a reason saying
    /// so), never acknowledged.
    PerRecord(Vec<Outcome>),
    /// The records before `0` acknowledged, the record at `0` failed with
    /// `1` (`Retry` or `Reject`), the records after it untouched. An index
    /// past the batch, or an `Ack`, is a handler bug: the batch is retried.
    FailedAt(usize, Outcome),
}

impl BatchOutcome {
    /// How many records, from the first, are acknowledged, and the outcome
    /// of the next one (none when all are), for a batch of `n`.
    pub(crate) fn verdict(self, n: usize) -> (usize, Option<Outcome>) {
        let bug = |what: String| {
            (
                0,
                Some(Outcome::Retry(format!("batch handler bug: {what}"))),
            )
        };
        match self {
            BatchOutcome::Ack | BatchOutcome::All(Outcome::Ack) => (n, None),
            BatchOutcome::All(outcome) => (0, Some(outcome)),
            BatchOutcome::PerRecord(outcomes) if outcomes.len() != n => bug(format!(
                "{} outcomes answered for a batch of {n} records",
                outcomes.len()
            )),
            BatchOutcome::PerRecord(outcomes) => {
                match outcomes
                    .into_iter()
                    .enumerate()
                    .find(|(_, o)| *o != Outcome::Ack)
                {
                    Some((i, outcome)) => (i, Some(outcome)),
                    None => (n, None),
                }
            }
            BatchOutcome::FailedAt(i, _) if i >= n => {
                bug(format!("failed at index {i} of a batch of {n} records"))
            }
            BatchOutcome::FailedAt(i, Outcome::Ack) => {
                bug(format!("failed at index {i} with an acknowledgement"))
            }
            BatchOutcome::FailedAt(i, outcome) => (i, Some(outcome)),
        }
    }
}

/// The outcome of the batch as a whole (`Ack`: every record).
impl From<Outcome> for BatchOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ack => BatchOutcome::Ack,
            other => BatchOutcome::All(other),
        }
    }
}

/// `Ok` acknowledges every record; `Err` fails the batch as a whole, by the
/// failure's kind.
impl From<Result<(), Failure>> for BatchOutcome {
    fn from(result: Result<(), Failure>) -> Self {
        Outcome::from(result).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let retry = || Outcome::retry("x");
        assert_eq!(BatchOutcome::Ack.verdict(3), (3, None));
        assert_eq!(BatchOutcome::All(retry()).verdict(3), (0, Some(retry())));
        assert_eq!(
            BatchOutcome::PerRecord(vec![Outcome::Ack, retry(), Outcome::Ack]).verdict(3),
            (1, Some(retry()))
        );
        assert_eq!(
            BatchOutcome::PerRecord(vec![Outcome::Ack; 3]).verdict(3),
            (3, None)
        );
        assert_eq!(
            BatchOutcome::FailedAt(2, retry()).verdict(3),
            (2, Some(retry()))
        );
        for bug in [
            BatchOutcome::PerRecord(vec![Outcome::Ack; 2]),
            BatchOutcome::FailedAt(3, retry()),
            BatchOutcome::FailedAt(1, Outcome::Ack),
        ] {
            let (acked, outcome) = bug.verdict(3);
            assert_eq!(acked, 0);
            assert!(
                matches!(&outcome, Some(Outcome::Retry(r)) if r.starts_with("batch handler bug")),
                "{outcome:?}"
            );
        }
        assert_eq!(
            BatchOutcome::from(Err::<(), _>(Failure::reject("no"))),
            BatchOutcome::All(Outcome::Reject("no".into()))
        );
    }
}
