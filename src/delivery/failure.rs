//! [`Failure`]: what a handler's `?` turns an error into, and how that
//! becomes the record's [`Outcome`].

use std::fmt;

use super::Outcome;

/// Why a handler could not handle its record, as a `Result<(), Failure>`
/// handler answers (`Err(failure)`): retried under the subscription's
/// [`RetryPolicy`](crate::RetryPolicy) or rejected to the dead-letter
/// topic, by its kind.
///
/// `?` on any error converts it, by the error's kind: a
/// [`kafkactor::Error`](crate::Error) that cannot pass by trying again
/// (a message that does not decode or encode, a record too large, an
/// invalid topic or configuration) and a `serde_json` error in the data
/// are rejections; every other error is a retry. Say which yourself with
/// [`Failure::retry`] and [`Failure::reject`], or with [`OrReject::or_reject`]
/// on a result.
///
/// ```
/// # use kafkactor::prelude::*;
/// # #[derive(serde::Deserialize)] struct Order { amount: u64 }
/// async fn on_order(d: Delivery<Order>) -> Result<(), Failure> {
///     if d.message().amount == 0 {
///         return Err(Failure::reject("an order of nothing"));
///     }
///     let line: serde_json::Value = serde_json::from_str("{}")?; // data error: rejected
///     d.publish(Publish::to("invoices").message(&line)?).await?;    // unavailable: retried
///     Ok(())
/// }
/// ```
///
/// It does not implement `Display` (so that a `Result<(), Failure>` is an
/// [`Outcome`] by its kind, where other results retry); its
/// [`reason`](Failure::reason) is the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    reason: String,
    reject: bool,
}

impl Failure {
    /// A failure that may pass: the record is retried.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Failure {
            reason: reason.to_string(),
            reject: false,
        }
    }

    /// A failure for good: the record is dead-lettered at once.
    pub fn reject(reason: impl fmt::Display) -> Self {
        Failure {
            reason: reason.to_string(),
            reject: true,
        }
    }

    /// Why it failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the record is rejected (dead-lettered at once) rather than
    /// retried.
    pub fn is_reject(&self) -> bool {
        self.reject
    }
}

/// An error converted by its kind (see [`Failure`]).
impl<E: std::error::Error + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        let reject = if let Some(e) = any.downcast_ref::<crate::Error>() {
            permanent(e)
        } else if let Some(e) = any.downcast_ref::<serde_json::Error>() {
            e.is_data() || e.is_syntax()
        } else {
            false
        };
        Failure {
            reason: error.to_string(),
            reject,
        }
    }
}

/// Whether trying `error`'s operation again cannot help.
fn permanent(error: &crate::Error) -> bool {
    use crate::Error;
    matches!(
        error,
        Error::Config(_)
            | Error::InvalidTopic(_)
            | Error::Encode(_)
            | Error::Decode(_)
            | Error::RecordTooLarge { .. }
            | Error::NoReplyTo
    )
}

/// `reject`: the failure's kind.
impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        if failure.reject {
            Outcome::Reject(failure.reason)
        } else {
            Outcome::Retry(failure.reason)
        }
    }
}

/// `Ok` acknowledges; `Err` retries or rejects by the failure's kind.
impl From<Result<(), Failure>> for Outcome {
    fn from(result: Result<(), Failure>) -> Self {
        match result {
            Ok(()) => Outcome::Ack,
            Err(failure) => failure.into(),
        }
    }
}

/// Marks a result's error as a rejection: `parse(x).or_reject()?`.
pub trait OrReject<T> {
    /// `Err(e)` as [`Failure::reject`] with `e`'s text.
    fn or_reject(self) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> OrReject<T> for Result<T, E> {
    fn or_reject(self) -> Result<T, Failure> {
        self.map_err(Failure::reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question_mark(r: Result<(), impl std::error::Error + 'static>) -> Result<(), Failure> {
        r?;
        Ok(())
    }

    #[test]
    fn errors_convert_by_kind() {
        let decode = question_mark(Err(crate::Error::Decode("bad".into())));
        assert_eq!(
            Outcome::from(decode),
            Outcome::Reject("decode failed: bad".into())
        );
        let gone = question_mark(Err(crate::Error::Unavailable("down".into())));
        assert_eq!(
            Outcome::from(gone),
            Outcome::Retry("actor unavailable: down".into())
        );
        let data = serde_json::from_str::<u32>("\"x\"").map(drop);
        assert!(matches!(
            Outcome::from(question_mark(data)),
            Outcome::Reject(_)
        ));
        let io = Err(std::io::Error::other("reset"));
        assert_eq!(
            Outcome::from(question_mark(io)),
            Outcome::Retry("reset".into())
        );
        assert_eq!(Outcome::from(Ok::<(), Failure>(())), Outcome::Ack);
        let marked: Result<(), Failure> = "x".parse::<u8>().map(drop).or_reject();
        assert!(matches!(Outcome::from(marked), Outcome::Reject(_)));
    }

    #[test]
    fn other_results_still_retry() {
        // The older conversion, for any error that is `Display`.
        assert_eq!(
            Outcome::from(Err::<(), _>("nope")),
            Outcome::Retry("nope".into())
        );
    }
}
