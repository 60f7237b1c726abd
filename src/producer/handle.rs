//! [`ProducerHandle`], the application's publisher, and the intake it
//! sends through: one queue into the producer connection that outlives its
//! incarnations.
//!
//! A publish goes into the intake with the sender of its answer; the
//! running connection incarnation takes everything waiting there in one
//! turn (no mailbox envelope or actor hop per publish), prepares each
//! record and writes it (see `intake.rs`). Publishes still in the intake
//! when an incarnation stops are taken by the next one; a write that fails
//! in a way that may pass goes to the [`Producer`] actor, which sends it
//! again.

use std::future::Future;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use actix::prelude::*;
use kafkactor_actors::ChildRef;
use tokio::sync::{mpsc, oneshot};

use crate::connection::producer::ProducerConnection;
use crate::delivery::current::{in_handler, join, with_current, Joined};
use crate::envelope::header;
use crate::error::Result;
use crate::observe::trace::{adopt, inherit, record_ids, spans_on, TraceContext};
use crate::producer::{Producer, PublishBatch, PublishReply, SendError};
use crate::publish::{Publish, PublishOutcome};

/// A publish (or a batch) on its way through the intake, with where its
/// answer goes (none for a `do_send`: failures are logged) and its
/// `publish` span when spans are on, which rides along to the broker write.
#[derive(Debug)]
pub(crate) enum Request {
    One(Publish, Option<oneshot::Sender<Result<PublishOutcome>>>),
    /// A publish with its `publish` span (boxed: every other request stays
    /// small).
    Traced(
        Box<(
            Publish,
            oneshot::Sender<Result<PublishOutcome>>,
            tracing::Span,
        )>,
    ),
    Batch(
        PublishBatch,
        oneshot::Sender<Vec<Result<PublishOutcome>>>,
        Vec<tracing::Span>,
    ),
}

/// What `send` and `send_batch` resolve to, one future for every case:
/// the answer known at once, the one to come from the connection, or, in
/// the rare cases (waiting for a connection, spans on), a boxed future.
enum Answer<T, M> {
    Now(Option<std::result::Result<T, SendError<M>>>),
    Later(oneshot::Receiver<T>),
    Boxed(Pin<Box<dyn Future<Output = std::result::Result<T, SendError<M>>>>>),
}

// Nothing in it is pinned in place: the receiver is `Unpin`, the boxed
// future pinned in its box.
impl<T, M> Unpin for Answer<T, M> {}

impl<T, M> Future for Answer<T, M> {
    type Output = std::result::Result<T, SendError<M>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, task: &mut task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Later(rx) => Pin::new(rx)
                .poll(task)
                .map(|answer| answer.map_err(|_| SendError::Unanswered)),
            Answer::Now(answer) => Poll::Ready(answer.take().expect("polled after it was ready")),
            Answer::Boxed(answer) => answer.as_mut().poll(task),
        }
    }
}

/// Why a publish (or batch) offered to the intake now did not get in.
enum Offer<M> {
    /// The intake is gone with the application: given back.
    Closed(M),
    /// No Producer runs, or the intake is full: it goes in later.
    Later(M),
}

/// The taking side of the intake: the producer connection drains it
/// (see [`ProducerIntake`](super::ProducerIntake)).
pub(crate) type IntakeReceiver = mpsc::Receiver<Request>;

/// The sending side of the intake, in every [`ProducerHandle`].
pub(crate) type IntakeSender = mpsc::Sender<Request>;

/// A new intake holding at most `capacity` publishes not yet taken (past
/// it, `send` waits for room).
pub(crate) fn intake(capacity: usize) -> (IntakeSender, IntakeReceiver) {
    mpsc::channel(capacity)
}

/// Gives `publishes` their context on the caller's thread: what they
/// inherit from the record whose handler runs here, and the `publish`
/// span's trace context when that span is on (see `observe/trace.rs`);
/// each `publish` span made is handed to `keep`, which holds it open until
/// the broker answers. Outside a handler and with spans off, two
/// thread-local reads per call.
fn stamp(publishes: &mut [Publish], mut keep: impl FnMut(tracing::Span)) {
    let (in_handler, spans) = (in_handler(), spans_on());
    if !in_handler && !spans {
        return;
    }
    for publish in publishes {
        let inherited = if in_handler {
            with_current(|record, parent| inherit(&mut publish.headers, record, parent)).flatten()
        } else {
            None
        };
        if spans {
            if let Some(span) = publish_span(publish, inherited) {
                keep(span);
            }
        }
    }
}

/// Every publish of `batch` taken into the record's transaction, or the
/// batch given back whole when there is none.
fn joined(batch: PublishBatch) -> std::result::Result<Vec<Result<PublishOutcome>>, PublishBatch> {
    let mut publishes = batch.0.into_iter();
    let Some(first) = publishes.next() else {
        return Ok(Vec::new());
    };
    match join(first) {
        Joined::Back(first) => {
            let mut back = vec![first];
            back.extend(publishes);
            Err(PublishBatch(back))
        }
        Joined::Taken(answer) => {
            let mut answers = vec![answer];
            for publish in publishes {
                answers.push(match join(publish) {
                    Joined::Taken(answer) => answer,
                    Joined::Back(_) => Err(crate::Error::Unavailable(
                        "the record's transaction is gone".into(),
                    )),
                });
            }
            Ok(answers)
        }
    }
}

/// Ends a `publish` span with the broker's answer: the partition and
/// offset written, or the error.
fn answered(span: &tracing::Span, outcome: &Result<PublishOutcome>) {
    match outcome {
        Ok(PublishOutcome::Direct { partition, offset })
        | Ok(PublishOutcome::Delayed {
            partition, offset, ..
        }) => {
            span.record("partition", partition);
            span.record("offset", offset);
        }
        Ok(PublishOutcome::Transactional) => {}
        Err(e) => {
            span.record("error", tracing::field::display(e));
        }
    }
}

/// `answer`, holding `spans` (the publishes' `publish` spans) open until it
/// resolves and ending each with its record's outcome. Boxed: only with
/// spans on.
fn traced<T, E, F>(
    answer: F,
    spans: Vec<tracing::Span>,
    outcomes: fn(&T) -> &[Result<PublishOutcome>],
) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<T, E>>>>
where
    F: Future<Output = std::result::Result<T, E>> + 'static,
    T: 'static,
    E: std::fmt::Display + 'static,
{
    Box::pin(async move {
        let answer = answer.await;
        match &answer {
            Ok(answered_with) => {
                for (span, outcome) in spans.iter().zip(outcomes(answered_with)) {
                    answered(span, outcome);
                }
            }
            Err(e) => {
                for span in &spans {
                    span.record("error", tracing::field::display(e));
                }
            }
        }
        answer
    })
}

/// The `publish` span of `publish`, whose trace context is the one it
/// inherited, the one it was given, or a new trace's. With an
/// OpenTelemetry layer (feature `otel`) the span's own ids are written
/// instead, its parent being the inherited or given context, or else the
/// current span.
fn publish_span(
    publish: &mut Publish,
    inherited: Option<(TraceContext, u64)>,
) -> Option<tracing::Span> {
    use tracing::field::Empty;
    let span = tracing::info_span!(target: "kafkactor", "publish", topic = %publish.topic,
        trace_id = Empty, span_id = Empty, parent_span_id = Empty,
        partition = Empty, offset = Empty, error = Empty);
    if span.is_disabled() {
        return None;
    }
    let given = match inherited {
        Some(_) => None,
        None => publish
            .headers
            .get(header::TRACEPARENT)
            .and_then(TraceContext::parse),
    };
    let parent = match (inherited, given) {
        (Some((ctx, parent)), _) => Some(TraceContext {
            span_id: parent,
            ..ctx
        }),
        (None, given) => given,
    };
    let state = publish.headers.get(header::TRACESTATE);
    let (ctx, parent) = match adopt(&span, parent, state) {
        Some(own) => {
            publish
                .headers
                .insert_known(header::TRACEPARENT, own.to_string());
            (own, parent.map(|p| p.span_id))
        }
        None => match (inherited, given) {
            (Some((ctx, parent)), _) => (ctx, Some(parent)),
            (None, Some(given)) => (given, None),
            (None, None) => {
                let root = TraceContext::new_root();
                publish
                    .headers
                    .insert_known(header::TRACEPARENT, root.to_string());
                (root, None)
            }
        },
    };
    record_ids(&span, ctx, parent);
    span.in_scope(|| tracing::debug!(target: "kafkactor", "publishing"));
    Some(span)
}

/// The application's publisher, from [`App::producer`](crate::App::producer):
/// a handle on the [`Producer`] actor that stays valid for the life of the
/// application, across the actor's restarts. Keep it as long as you like.
///
/// [`send`](ProducerHandle::send) answers as `Addr<Producer>::send` does
/// (`producer.send(publish).await??`). Publishes reach the producer
/// connection in call order through one queue that outlives its
/// incarnations: one sent while the connection is being restarted waits
/// (up to the application's delivery timeout) for the next incarnation,
/// and one the stopping incarnation had taken is sent again by the
/// Producer. A publish that is not answered because the application
/// stopped first fails with [`SendError::Unanswered`] (it may or may not
/// have been written): send it again.
///
/// ```
/// # use kafkactor::prelude::*;
/// # #[actix::main] async fn main() -> Result<(), kafkactor::Error> {
/// let app = Kafkactor::builder().broker(Broker::memory()).start().await?;
/// let producer = app.producer();                 // a ProducerHandle
/// let outcome = producer.send(Publish::to("orders").message(&"hello")?).await??;
/// assert!(matches!(outcome, PublishOutcome::Direct { .. }));
/// app.shutdown().await
/// # }
/// ```
#[derive(Clone)]
pub struct ProducerHandle {
    producer: ChildRef<Producer>,
    /// What drains the intake.
    connection: ChildRef<ProducerConnection<PublishReply>>,
    intake: IntakeSender,
    wait: Duration,
}

impl std::fmt::Debug for ProducerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerHandle")
            .field("running", &self.producer.get().is_some())
            .finish()
    }
}

/// A handler's publishes go through the application's producer.
impl crate::delivery::outlet::Publisher for ProducerHandle {
    fn publish(&self, publish: Publish) -> crate::delivery::outlet::Sent {
        let sent = self.send_one(publish);
        Box::pin(async move { sent.await? })
    }
}

impl ProducerHandle {
    pub(crate) fn new(
        producer: ChildRef<Producer>,
        connection: ChildRef<ProducerConnection<PublishReply>>,
        intake: IntakeSender,
        wait: Duration,
    ) -> Self {
        ProducerHandle {
            producer,
            connection,
            intake,
            wait,
        }
    }

    /// Publishes `publish`: `Ok(Ok(outcome))` once it is written,
    /// `Ok(Err(error))` when publishing failed, `Err(SendError)` when no
    /// Producer answered: the application stopped or no Producer ran within
    /// the delivery timeout (the publish is given back, unsent), or the
    /// Producer stopped before it answered.
    pub fn send(
        &self,
        publish: Publish,
    ) -> impl Future<Output = std::result::Result<Result<PublishOutcome>, SendError<Publish>>> + 'static
    {
        self.send_one(publish)
    }

    fn send_one(&self, publish: Publish) -> Answer<Result<PublishOutcome>, Publish> {
        let mut publish = publish;
        if in_handler() {
            match join(publish) {
                Joined::Taken(answer) => return Answer::Now(Some(Ok(answer))),
                Joined::Back(back) => publish = back,
            }
        }
        let mut span = None;
        stamp(std::slice::from_mut(&mut publish), |s| span = Some(s));
        let (tx, rx) = oneshot::channel();
        match span {
            None => self.request(publish, move |p| Request::One(p, Some(tx)), rx),
            Some(span) => {
                let traced_span = span.clone();
                Answer::Boxed(traced(
                    self.request(
                        publish,
                        move |p| Request::Traced(Box::new((p, tx, traced_span))),
                        rx,
                    ),
                    vec![span],
                    std::slice::from_ref,
                ))
            }
        }
    }

    /// Publishes many records in one message, in order; the answer holds
    /// every outcome, in the batch's order. `Err(SendError)` when no
    /// Producer took the batch (none of it was published: it is given
    /// back) or the Producer stopped before answering (some of it may have
    /// been).
    pub fn send_batch(
        &self,
        batch: PublishBatch,
    ) -> impl Future<
        Output = std::result::Result<Vec<Result<PublishOutcome>>, SendError<PublishBatch>>,
    > + 'static {
        self.send_many(batch)
    }

    fn send_many(
        &self,
        mut batch: PublishBatch,
    ) -> Answer<Vec<Result<PublishOutcome>>, PublishBatch> {
        if in_handler() {
            match joined(batch) {
                Ok(answers) => return Answer::Now(Some(Ok(answers))),
                Err(back) => batch = back,
            }
        }
        let mut spans = Vec::new();
        stamp(&mut batch.0, |s| spans.push(s));
        let (tx, rx) = oneshot::channel();
        let kept = spans.clone();
        let answer = self.request(batch, move |b| Request::Batch(b, tx, kept), rx);
        if spans.is_empty() {
            answer
        } else {
            Answer::Boxed(traced(answer, spans, Vec::as_slice))
        }
    }

    /// Puts `message` in the intake (as `request` makes it) now when a
    /// Producer runs (so requests keep the order of the calls), or once one
    /// runs within the wait; the answer comes on `rx`. `message` is given
    /// back when it never got in. Inlined: the request is moved once, into
    /// the intake, instead of once more into this call.
    #[inline(always)]
    fn request<T: Send + 'static, M: 'static>(
        &self,
        message: M,
        request: impl FnOnce(M) -> Request + 'static,
        rx: oneshot::Receiver<T>,
    ) -> Answer<T, M> {
        match self.offer(message, request) {
            Ok(()) => Answer::Later(rx),
            Err(Offer::Closed((message, _))) => {
                Answer::Now(Some(Err(SendError::Shutdown(Box::new(message)))))
            }
            // Rare (no connection running, or the intake full): boxed, so
            // that the future of every other call stays small.
            Err(Offer::Later((message, request))) => {
                let put = self.put_later(message, request);
                Answer::Boxed(Box::pin(async move {
                    put.await?;
                    rx.await.map_err(|_| SendError::Unanswered)
                }))
            }
        }
    }

    /// Publishes without waiting for the outcome (lost if no Producer runs
    /// within the delivery timeout; failures are logged, not returned).
    pub fn do_send(&self, publish: Publish) {
        let mut publish = publish;
        if in_handler() {
            match join(publish) {
                Joined::Taken(Ok(_)) => return,
                Joined::Taken(Err(e)) => {
                    tracing::warn!(error = %e, "a do_send publish could not join its record's transaction");
                    return;
                }
                Joined::Back(back) => publish = back,
            }
        }
        // No answer comes back: the `publish` span ends here.
        stamp(std::slice::from_mut(&mut publish), drop);
        let request = |p| Request::One(p, None);
        match self.offer(publish, request) {
            Ok(()) => {}
            Err(Offer::Closed(_)) => tracing::warn!(
                "a do_send publish reached no producer: the application is shut down"
            ),
            Err(Offer::Later((publish, request))) => {
                let put = self.put_later(publish, request);
                actix_rt::spawn(async move {
                    if let Err(e) = put.await {
                        tracing::warn!(error = %e, "a do_send publish reached no producer");
                    }
                });
            }
        }
    }

    /// Puts `message` in the intake now, if a Producer runs and there is
    /// room; otherwise gives it back, with how to make its request.
    #[allow(clippy::type_complexity)]
    fn offer<M, F: FnOnce(M) -> Request>(
        &self,
        message: M,
        request: F,
    ) -> std::result::Result<(), Offer<(M, F)>> {
        if self.connection.with(|_, _| ()).is_none() {
            return Err(Offer::Later((message, request)));
        }
        match self.intake.try_reserve() {
            Ok(permit) => {
                permit.send(request(message));
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(Offer::Closed((message, request))),
            Err(mpsc::error::TrySendError::Full(())) => Err(Offer::Later((message, request))),
        }
    }

    /// Puts `message` in the intake once a Producer runs (within the wait)
    /// and there is room; gives it back when it could not.
    fn put_later<M: 'static>(
        &self,
        message: M,
        request: impl FnOnce(M) -> Request + 'static,
    ) -> impl Future<Output = std::result::Result<(), SendError<M>>> + 'static {
        let (connection, intake, wait) = (self.connection.clone(), self.intake.clone(), self.wait);
        async move {
            if connection.ready(wait).await.is_none() {
                return Err(SendError::NoProducer(Box::new(message)));
            }
            match intake.reserve().await {
                Ok(permit) => {
                    permit.send(request(message));
                    Ok(())
                }
                Err(_) => Err(SendError::Shutdown(Box::new(message))),
            }
        }
    }

    /// The address of the Producer incarnation running now, if one is.
    pub fn addr(&self) -> Option<Addr<Producer>> {
        self.producer.get()
    }
}
