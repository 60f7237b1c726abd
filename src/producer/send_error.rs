//! [`SendError`]: why a [`ProducerHandle`](super::ProducerHandle) send
//! reached no Producer, with the publish given back when none took it.

use std::fmt;

use crate::error::Error;

/// Why a publish (or a batch) sent through a
/// [`ProducerHandle`](crate::ProducerHandle) got no answer from a Producer.
/// When no Producer took it, it is given back, unsent, as actix's
/// `SendError` gives a message back: send it again, or keep it (boxed, so
/// that every answer that is not an error stays small).
///
/// Converts into [`Error`] (so `producer.send(p).await??` works in a
/// function returning [`kafkactor::Result`](crate::Result)):
/// [`Error::Shutdown`] or [`Error::Unavailable`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError<M> {
    /// The application has stopped: nothing takes publishes any more.
    Shutdown(Box<M>),
    /// No Producer ran within the application's delivery timeout (it kept
    /// failing and being restarted).
    NoProducer(Box<M>),
    /// The Producer incarnation that took it stopped before answering: it
    /// may or may not have been written.
    Unanswered,
}

impl<M> SendError<M> {
    /// What was sent, when no Producer took it.
    pub fn into_inner(self) -> Option<M> {
        match self {
            SendError::Shutdown(m) | SendError::NoProducer(m) => Some(*m),
            SendError::Unanswered => None,
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Shutdown(_) => "the application is shut down: the publish was not sent",
            SendError::NoProducer(_) => {
                "no Producer ran within the delivery timeout: the publish was not sent"
            }
            SendError::Unanswered => {
                "the Producer stopped before answering: the publish may or may not have been written"
            }
        })
    }
}

impl<M: fmt::Debug> std::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for Error {
    fn from(e: SendError<M>) -> Self {
        match e {
            SendError::Shutdown(_) => Error::Shutdown,
            other => Error::Unavailable(other.to_string()),
        }
    }
}
