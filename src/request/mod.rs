//! Request-reply: a [`Requester`] sends a request and awaits its typed
//! reply; a responder answers from its handler with
//! [`Delivery::reply`](crate::Delivery::reply).
//!
//! Replies come back on the application's reply topic ([`Replies`]), which
//! it reads without a consumer group: one partition, assigned (no
//! rebalance per instance; give each instance of a caller its own
//! partition, and no instance reads another's replies), read by the
//! `replies` child (a [`PartitionReader`](crate::connection::reader)).
//! A request carries `x-reply-to`, `x-reply-partition` and a correlation id
//! of its own; the reply is matched by it. The reader's position is
//! resolved when the application starts, before any request can be sent:
//! a reply cannot come before its caller reads.
//!
//! A request the responder fails for good (rejected, dead-lettered after
//! its retries, timed out) is answered with an error reply
//! ([`Error::Refused`]): a caller does not wait past its timeout for a
//! request that failed. A reply that comes once its caller gave up is
//! counted (`kafkactor_replies_unmatched_total`), not logged as an error.

mod pending;
pub(crate) mod tree;

use std::sync::Arc;
use std::time::Duration;

use crate::codec::{ContentType, Decode};
use crate::connection::reader::Position;
use crate::envelope::{header, Record};
use crate::error::{Error, Result};
use crate::producer::ProducerHandle;
use crate::publish::Publish;

pub(crate) use pending::Pending;

/// Where an application's replies come back: a topic, and the partition of
/// it this instance reads (`0` unless set). Give every instance of a
/// caller its own partition (a topic with as many), or its own topic.
///
/// ```
/// # use kafkactor::prelude::*;
/// # use kafkactor::Replies;
/// let replies = Replies::on("billing.replies").partition(1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replies {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

impl Replies {
    /// Replies come back on `topic`, partition 0 unless
    /// [`partition`](Replies::partition) says otherwise. The topic is
    /// created when missing (with the broker's default partitions).
    pub fn on(topic: impl Into<String>) -> Self {
        Replies {
            topic: topic.into(),
            partition: 0,
        }
    }

    /// The partition of the reply topic this instance reads.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        crate::error::check_topic(&self.topic)?;
        if self.partition < 0 {
            return Err(Error::Config(format!(
                "reply partition {} of {:?}: a partition is 0 or more",
                self.partition, self.topic
            )));
        }
        Ok(())
    }
}

/// What the application's requesters share: where replies come back, who
/// waits for which, and the reader's position.
pub(crate) struct Requests {
    pub(crate) replies: Replies,
    pub(crate) pending: Arc<Pending>,
    pub(crate) position: Arc<Position>,
}

/// Sends requests and awaits their replies, from
/// [`App::requester`](crate::App::requester). Cheap to clone; valid for
/// the life of the application.
///
/// ```
/// # use std::time::Duration;
/// # use kafkactor::prelude::*;
/// # use kafkactor::Replies;
/// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
/// let app = Kafkactor::builder()
///     .broker(Broker::memory())
///     .replies(Replies::on("doubler.replies"))
///     .handle(Subscription::to("doubler").group("doubler"), |d: Delivery<u64>| async move {
///         d.reply(&(d.message() * 2)).await?;
///         Ok::<_, Failure>(())
///     })
///     .start()
///     .await?;
/// let requester = app.requester();
/// let doubled: u64 = requester
///     .request(Publish::to("doubler").message(&21u64)?, Duration::from_secs(5))
///     .await?;
/// assert_eq!(doubled, 42);
/// app.shutdown().await
/// # }
/// ```
#[derive(Clone)]
pub struct Requester {
    requests: Option<Arc<Requests>>,
    producer: ProducerHandle,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("replies", &self.requests.as_ref().map(|r| &r.replies))
            .finish()
    }
}

impl Requester {
    pub(crate) fn new(requests: Option<Arc<Requests>>, producer: ProducerHandle) -> Self {
        Requester { requests, producer }
    }

    /// Sends `request` and waits up to `timeout` for its reply, decoded as
    /// `R`. The request gets a correlation id of its own (any it had is
    /// replaced) and says where to reply. Errors:
    /// [`Error::NoReply`] when no reply came in time (nobody answers the
    /// topic, or the responder is down or slow: the request may still be
    /// handled later); [`Error::Refused`] when the responder failed it for
    /// good; [`Error::Decode`] when the reply is not an `R`;
    /// [`Error::Config`] when the application has no reply topic
    /// ([`AppBuilder::replies`](crate::AppBuilder::replies)); the publish's
    /// own errors.
    ///
    /// From a handler of a transactional subscription, the request would
    /// join the record's transaction and not be sent before the handler
    /// answers: send requests from elsewhere.
    pub async fn request<R: Decode>(&self, request: Publish, timeout: Duration) -> Result<R> {
        let requests = self.requests.as_ref().ok_or_else(|| {
            Error::Config(
                "this application has no reply topic: start it with AppBuilder::replies".into(),
            )
        })?;
        let topic = request.topic().to_string();
        let no_reply = || Error::NoReply {
            topic: topic.clone(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        requests.position.resolved(timeout).await?;
        let (id, waiting) = requests.pending.expect();
        let request = request
            .correlation_id(&id)
            .header(header::REPLY_TO, &requests.replies.topic)
            .header(
                header::REPLY_PARTITION,
                requests.replies.partition.to_string(),
            );
        let sent = self.producer.send(request);
        let answer = tokio::time::timeout_at(deadline, async move {
            sent.await??;
            waiting.await.map_err(|_| Error::Shutdown)
        })
        .await;
        match answer {
            Ok(Ok(reply)) => reply_of(&reply),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(no_reply()),
        }
    }

    /// How many replies came that no caller waited for (it had given up,
    /// or the reply came twice).
    pub fn unmatched_replies(&self) -> u64 {
        self.requests.as_ref().map_or(0, |r| r.pending.unmatched())
    }
}

/// The answer a reply record gives: its message, or the responder's
/// failure when it is an error reply.
fn reply_of<R: Decode>(reply: &Record) -> Result<R> {
    if let Some(kind) = reply.headers.get(header::ERROR_KIND) {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        return Err(Error::Refused {
            kind: text(kind),
            reason: reply
                .headers
                .get(header::ERROR_REASON)
                .map(text)
                .unwrap_or_default(),
        });
    }
    R::decode_record(reply, ContentType::MsgPack)
}
