//! Writing one record at a time through whichever incarnation of a
//! producer connection runs ([`Writer`], what the dead-letter actor writes
//! with), and the one wait before a failed write is sent again.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use kafkactor_actors::{Backoff, ChildRef};
use tokio::sync::oneshot;

use crate::broker::{Delivered, Failed, WriteResult};
use crate::envelope::OutgoingRecord;
use crate::error::{Error, Result};

use super::{AnswerTo, ProduceBatch, ProducerConnection, Write, WriteReply};

/// The wait before a failed write is sent again.
const RESEND: Backoff = Backoff::doubling(Duration::from_millis(5), Duration::from_secs(1));

/// How long to wait before sending a failed write again after `resends`
/// earlier resends: 5 ms, doubling, at most 1 s. None when that wait would
/// reach `deadline` (the write's delivery timeout): the failure is final.
pub(crate) fn resend_after(resends: u32, deadline: Instant) -> Option<Duration> {
    let backoff = RESEND.delay(resends);
    Instant::now()
        .checked_add(backoff)
        .is_some_and(|t| t < deadline)
        .then_some(backoff)
}

/// Writes one record at a time through whichever incarnation of a producer
/// connection runs: what the dead-letter actor writes with, whatever the
/// connection's own writers are.
#[derive(Clone)]
pub(crate) struct Writer(
    Arc<dyn Fn(OutgoingRecord, Duration) -> BoxFuture<'static, WriteResult> + Send + Sync>,
);

impl Writer {
    /// Writes through `connection`.
    pub(crate) fn to<R: WriteReply>(connection: ChildRef<ProducerConnection<R>>) -> Self {
        Writer(Arc::new(move |record, timeout| {
            Box::pin(produce_or_return(connection.clone(), record, timeout))
        }))
    }

    /// Writes `record`, sending it again after failures that may pass and
    /// after connection restarts, until `timeout` has passed; a failure
    /// gives the record back (where it still has it), so a writer can send
    /// it again changed without having copied it.
    ///
    /// The first attempt is enqueued in the connection's mailbox before this
    /// returns, so records reach the broker in the order `write` was called.
    pub(crate) fn write(
        &self,
        record: OutgoingRecord,
        timeout: Duration,
    ) -> BoxFuture<'static, WriteResult> {
        (self.0)(record, timeout)
    }

    /// [`write`](Writer::write), the record dropped with a failure.
    pub(crate) fn write_record(
        &self,
        record: OutgoingRecord,
        timeout: Duration,
    ) -> impl Future<Output = Result<Delivered>> + 'static {
        let write = self.write(record, timeout);
        async move { write.await.map_err(|failed| failed.error) }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

fn produce_or_return<R: WriteReply>(
    connection: ChildRef<ProducerConnection<R>>,
    record: OutgoingRecord,
    timeout: Duration,
) -> impl Future<Output = WriteResult> + 'static {
    let first = match connection.get_numbered() {
        Some((conn, n)) => Ok(send_one(conn, n, record)),
        None => Err(record),
    };
    async move {
        let deadline = crate::clock::deadline_in(timeout);
        let mut next = first;
        let mut failed_incarnation = 0;
        let mut resends = 0;
        loop {
            let (answer, conn, incarnation) = match next {
                Ok(sent) => sent,
                Err(record) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match connection.ready_after(failed_incarnation, remaining).await {
                        Some((conn, n)) => send_one(conn, n, record),
                        None => return Err(no_connection(timeout, record)),
                    }
                }
            };
            let (error, record) = match retriable(answer.await) {
                ControlFlow::Break(result) => return result,
                ControlFlow::Continue(failure) => failure,
            };
            if !conn.connected() {
                // Wait for the next incarnation.
                failed_incarnation = incarnation;
            }
            let Some(backoff) = resend_after(resends, deadline) else {
                return Err(Failed::new(error, record));
            };
            resends += 1;
            tracing::debug!(topic = %record.topic, %error, ?backoff, "write failed; sending again");
            tokio::time::sleep(backoff).await;
            next = Err(record);
        }
    }
}

/// A write sent to a connection incarnation: where its answer comes, the
/// incarnation and its number.
type Sent<R> = (
    oneshot::Receiver<WriteResult>,
    Addr<ProducerConnection<R>>,
    u64,
);

/// Sends `record` alone to incarnation `n` of the connection, `conn`.
#[inline]
fn send_one<R: WriteReply>(
    conn: Addr<ProducerConnection<R>>,
    n: u64,
    record: OutgoingRecord,
) -> Sent<R> {
    let (tx, answer) = oneshot::channel();
    conn.do_send(ProduceBatch(vec![Write::with(
        record,
        AnswerTo::Channel(tx),
    )]));
    (answer, conn, n)
}

/// The failure of a write no connection took within `timeout`, with its
/// record.
fn no_connection(timeout: Duration, record: OutgoingRecord) -> Box<Failed> {
    let error = Error::Unavailable(format!(
        "no producer connection within the delivery timeout of {timeout:?}"
    ));
    Failed::new(error, record)
}

/// The answer to a write: final (`Break`: delivered, or a failure that
/// does not pass, or the connection gone with the record), or a failure
/// that may pass, with the record to send again (`Continue`).
#[inline]
fn retriable(
    answer: std::result::Result<WriteResult, oneshot::error::RecvError>,
) -> ControlFlow<WriteResult, (Error, OutgoingRecord)> {
    let failed = match answer {
        Ok(Ok(delivered)) => return ControlFlow::Break(Ok(delivered)),
        Ok(Err(failed)) => failed,
        Err(_) => {
            return ControlFlow::Break(Err(Failed::without_record(Error::Unavailable(
                "producer connection stopped with the record".into(),
            ))))
        }
    };
    match *failed {
        Failed {
            error,
            record: Some(record),
        } if error.is_retriable() => ControlFlow::Continue((error, record)),
        failed => ControlFlow::Break(Err(Box::new(failed))),
    }
}
