//! Typed errors for every public boundary.

use actix::MailboxError;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kafkactor, named after the operation that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before anything started.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A topic name is empty or not a legal Kafka topic name.
    #[error("invalid topic name {0:?}: must be 1-249 characters of [a-zA-Z0-9._-]")]
    InvalidTopic(String),
    /// A message could not be serialized.
    #[error("encode failed: {0}")]
    Encode(String),
    /// A payload could not be deserialized.
    #[error("decode failed: {0}")]
    Decode(String),
    /// A record is larger than the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Size of the record (key, headers and payload).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The broker refused or failed a produce request.
    #[error("produce to {topic} failed: {reason}")]
    Produce {
        /// Destination topic.
        topic: String,
        /// What the broker said.
        reason: String,
        /// The broker's or client's error code (`"MessageSizeTooLarge"`,
        /// `"MessageTimedOut"`, ..), when it gave one.
        code: Option<String>,
        /// Whether sending again can succeed, as the broker says.
        retriable: bool,
    },
    /// Committing offsets failed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The broker, or kafkactor's client of it, failed an operation.
    #[error("{operation} failed: {reason}")]
    Broker {
        /// What was being done (`"create topic orders"`, `"poll of group billing"`, ..).
        operation: String,
        /// What the broker or the client said.
        reason: String,
        /// The broker's or client's error code (`"TopicAuthorizationFailed"`,
        /// `"InvalidReplicationFactor"`, ..), when it gave one.
        code: Option<String>,
        /// Whether doing the same again can succeed: as the broker says, or
        /// for the client's own failures, whether a restart of it helps.
        retriable: bool,
    },
    /// An actor of the tree is not running (stopped or restarting).
    #[error("actor unavailable: {0}")]
    Unavailable(String),
    /// The application is shutting down or has stopped.
    #[error("the application is shut down")]
    Shutdown,
    /// The supervision tree gave up after too many failures.
    #[error("supervision escalated: {0}")]
    Escalated(String),
    /// No actor of the tree has this path ([`App::fail_actor`](crate::App::fail_actor)).
    #[error("no actor at {0:?}")]
    UnknownActor(String),
}

impl Error {
    /// Whether doing the same thing again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Produce { retriable, .. } | Error::Broker { retriable, .. } => *retriable,
            Error::Commit(_) | Error::Unavailable(_) => true,
            _ => false,
        }
    }

    /// Whether the error is permanent for this input or configuration.
    pub fn is_fatal(&self) -> bool {
        !self.is_retriable()
    }
}

impl Error {
    /// A failure of kafkactor's own client machinery (no broker answer):
    /// `retriable` when restarting the client can help.
    pub(crate) fn client(
        operation: impl Into<String>,
        reason: impl std::fmt::Display,
        retriable: bool,
    ) -> Self {
        Error::Broker {
            operation: operation.into(),
            reason: reason.to_string(),
            code: None,
            retriable,
        }
    }
}

impl Error {
    /// A record's own partition `p` that `topic` (of `n` partitions) does
    /// not have: refused for good.
    #[cold]
    pub(crate) fn no_partition(topic: &str, p: i32, n: i32) -> Self {
        Error::Produce {
            topic: topic.to_string(),
            reason: format!("partition {p} does not exist (topic has {n})"),
            code: Some("UnknownTopicOrPartition".into()),
            retriable: false,
        }
    }
}

impl From<MailboxError> for Error {
    fn from(e: MailboxError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// Validates a Kafka topic name.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic.chars().all(legal)
    {
        return Err(Error::InvalidTopic(topic.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(check_topic("orders").is_ok());
        assert!(check_topic("orders.billing.retry-1_x").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic("a b").is_err());
        assert!(check_topic(&"x".repeat(250)).is_err());
    }
}
