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
        /// The broker's or client's error code
        /// ([`ErrorCode::MessageSizeTooLarge`],
        /// [`ErrorCode::MessageTimedOut`], ..), when it gave one.
        code: Option<ErrorCode>,
        /// Whether sending again can succeed, as the broker says.
        retriable: bool,
    },
    /// Committing offsets (or a transaction with them) failed.
    #[error("commit failed: {reason}")]
    Commit {
        /// What the broker or the client said.
        reason: String,
        /// The broker's error code, when it gave one.
        code: Option<ErrorCode>,
        /// Whether committing again can succeed, as the broker says: never
        /// for partitions this member no longer owns (they are the next
        /// owner's to commit).
        retriable: bool,
    },
    /// The broker, or kafkactor's client of it, failed an operation.
    #[error("{operation} failed: {reason}")]
    Broker {
        /// What was being done (`"create topic orders"`, `"poll of group billing"`, ..).
        operation: String,
        /// What the broker or the client said.
        reason: String,
        /// The broker's or client's error code
        /// ([`ErrorCode::TopicAuthorizationFailed`],
        /// [`ErrorCode::InvalidReplicationFactor`], ..), when it gave one.
        code: Option<ErrorCode>,
        /// Whether doing the same again can succeed: as the broker says, or
        /// for the client's own failures, whether a restart of it helps.
        retriable: bool,
    },
    /// An actor of the tree is not running (stopped or restarting).
    #[error("actor unavailable: {0}")]
    Unavailable(String),
    /// The application is shutting down or has stopped (a publish sent
    /// then: [`SendError::Shutdown`](crate::SendError::Shutdown)).
    #[error("the application is shut down")]
    Shutdown,
    /// The supervision tree gave up after too many failures.
    #[error("supervision escalated: {0}")]
    Escalated(String),
    /// No actor of the tree has this path ([`App::fail_actor`](crate::App::fail_actor)).
    #[error("no actor at {0:?}")]
    UnknownActor(String),
    /// A reply was asked of a record that names no reply topic (no
    /// `x-reply-to` header): it was not sent as a request.
    #[error("the record names no reply topic (header x-reply-to): there is nothing to reply to")]
    NoReplyTo,
    /// No reply to a request came within its timeout (nobody answers its
    /// topic, or the responder is down or slow).
    #[error("no reply to the request sent to {topic} within {timeout_ms} ms")]
    NoReply {
        /// The topic the request was sent to.
        topic: String,
        /// The request's timeout.
        timeout_ms: u64,
    },
    /// The responder failed the request for good (it rejected it, it was
    /// dead-lettered, it timed out past its retries): its error reply.
    #[error("the request failed at the responder ({kind}): {reason}")]
    Refused {
        /// The failure's kind (a [`FailureKind`](crate::FailureKind) name).
        kind: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether doing the same thing again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Produce { retriable, .. }
            | Error::Broker { retriable, .. }
            | Error::Commit { retriable, .. } => *retriable,
            Error::Unavailable(_) | Error::NoReply { .. } => true,
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
    /// A commit that failed without a broker code: `retriable` when
    /// committing the same again can succeed.
    pub(crate) fn commit(reason: impl Into<String>, retriable: bool) -> Self {
        Error::Commit {
            reason: reason.into(),
            code: None,
            retriable,
        }
    }
}

impl Error {
    /// A record's own partition `p` that `topic` (of `n` partitions) does
    /// not have: refused for good.
    #[cold]
    /// A reader asked for partition `p` of `topic`, which has `n`.
    pub(crate) fn no_partition_to_read(topic: &str, p: i32, n: usize) -> Self {
        Error::Config(format!(
            "topic {topic:?} has {n} partitions: there is no partition {p} to read \
             (create it with more partitions)"
        ))
    }

    pub(crate) fn no_partition(topic: &str, p: i32, n: i32) -> Self {
        Error::Produce {
            topic: topic.to_string(),
            reason: format!("partition {p} does not exist (topic has {n})"),
            code: Some(ErrorCode::UnknownTopicOrPartition),
            retriable: false,
        }
    }
}

impl From<MailboxError> for Error {
    fn from(e: MailboxError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// A broker's (or its client's) error code, by the name Kafka gives it.
/// The codes kafkactor's users act on have a variant; any other is
/// [`ErrorCode::Other`] with its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A record is larger than the broker or topic accepts.
    MessageSizeTooLarge,
    /// A record was not acknowledged within the delivery timeout.
    MessageTimedOut,
    /// The topic or partition does not exist (yet).
    UnknownTopicOrPartition,
    /// A topic's replication factor is larger than the brokers available.
    InvalidReplicationFactor,
    /// The topic exists already.
    TopicAlreadyExists,
    /// Not allowed to use the topic.
    TopicAuthorizationFailed,
    /// Not allowed to use the consumer group.
    GroupAuthorizationFailed,
    /// Not allowed to use the transactional id.
    TransactionalIdAuthorizationFailed,
    /// Fewer in-sync replicas than the topic requires.
    NotEnoughReplicas,
    /// The partition has no leader right now.
    LeaderNotAvailable,
    /// The broker asked is not the partition's leader.
    NotLeaderForPartition,
    /// The broker did not answer in time.
    RequestTimedOut,
    /// The client's queue is full.
    QueueFull,
    /// The connection to a broker failed.
    BrokerTransportFailure,
    /// No broker can be reached.
    AllBrokersDown,
    /// The group is rebalancing.
    RebalanceInProgress,
    /// The member's generation is not the group's any more.
    IllegalGeneration,
    /// The group does not know the member.
    UnknownMemberId,
    /// Another producer with the same transactional id took over.
    ProducerFenced,
    /// Any other code, by its name.
    Other(String),
}

impl ErrorCode {
    /// The code by its name (librdkafka's and Kafka's: `"MessageTimedOut"`).
    pub fn from_name(name: &str) -> Self {
        use ErrorCode::*;
        match name {
            "MessageSizeTooLarge" => MessageSizeTooLarge,
            "MessageTimedOut" => MessageTimedOut,
            "UnknownTopicOrPartition" => UnknownTopicOrPartition,
            "InvalidReplicationFactor" => InvalidReplicationFactor,
            "TopicAlreadyExists" => TopicAlreadyExists,
            "TopicAuthorizationFailed" => TopicAuthorizationFailed,
            "GroupAuthorizationFailed" => GroupAuthorizationFailed,
            "TransactionalIdAuthorizationFailed" => TransactionalIdAuthorizationFailed,
            "NotEnoughReplicas" => NotEnoughReplicas,
            "LeaderNotAvailable" => LeaderNotAvailable,
            "NotLeaderForPartition" => NotLeaderForPartition,
            "RequestTimedOut" => RequestTimedOut,
            "QueueFull" => QueueFull,
            "BrokerTransportFailure" => BrokerTransportFailure,
            "AllBrokersDown" => AllBrokersDown,
            "RebalanceInProgress" => RebalanceInProgress,
            "IllegalGeneration" => IllegalGeneration,
            "UnknownMemberId" => UnknownMemberId,
            "ProducerFenced" => ProducerFenced,
            other => Other(other.to_string()),
        }
    }

    /// The code's name.
    pub fn name(&self) -> &str {
        use ErrorCode::*;
        match self {
            MessageSizeTooLarge => "MessageSizeTooLarge",
            MessageTimedOut => "MessageTimedOut",
            UnknownTopicOrPartition => "UnknownTopicOrPartition",
            InvalidReplicationFactor => "InvalidReplicationFactor",
            TopicAlreadyExists => "TopicAlreadyExists",
            TopicAuthorizationFailed => "TopicAuthorizationFailed",
            GroupAuthorizationFailed => "GroupAuthorizationFailed",
            TransactionalIdAuthorizationFailed => "TransactionalIdAuthorizationFailed",
            NotEnoughReplicas => "NotEnoughReplicas",
            LeaderNotAvailable => "LeaderNotAvailable",
            NotLeaderForPartition => "NotLeaderForPartition",
            RequestTimedOut => "RequestTimedOut",
            QueueFull => "QueueFull",
            BrokerTransportFailure => "BrokerTransportFailure",
            AllBrokersDown => "AllBrokersDown",
            RebalanceInProgress => "RebalanceInProgress",
            IllegalGeneration => "IllegalGeneration",
            UnknownMemberId => "UnknownMemberId",
            ProducerFenced => "ProducerFenced",
            Other(name) => name,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    fn error_codes_round_trip_by_name() {
        for name in ["MessageTimedOut", "ProducerFenced", "SomethingNew"] {
            assert_eq!(ErrorCode::from_name(name).name(), name);
        }
        assert_eq!(
            ErrorCode::from_name("SomethingNew"),
            ErrorCode::Other("SomethingNew".into())
        );
    }

    #[test]
    fn a_commit_is_retriable_only_when_said_so() {
        assert!(Error::commit("coordinator moved", true).is_retriable());
        assert!(!Error::commit("not this member's", false).is_retriable());
    }

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
