//! [`Pending`]: the requests waiting for their replies, and the sink the
//! reply reader hands every reply to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use crate::connection::reader::Sink;
use crate::envelope::{header, Record};

/// The requests of an application waiting for their replies, by
/// correlation id.
pub(crate) struct Pending {
    waiting: Mutex<FxHashMap<Box<str>, oneshot::Sender<Arc<Record>>>>,
    unmatched: AtomicU64,
    counter: IntCounter,
}

impl Pending {
    pub(crate) fn new(counter: IntCounter) -> Self {
        Pending {
            waiting: Mutex::default(),
            unmatched: AtomicU64::new(0),
            counter,
        }
    }

    /// A new correlation id, and where its reply comes; forgotten when the
    /// receiver is dropped unanswered (the caller gave up) and its reply
    /// comes.
    pub(crate) fn expect(&self) -> (String, Waiting<'_>) {
        let id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.as_str().into(), tx);
        let waiting = Waiting {
            pending: self,
            id: id.clone(),
            rx,
        };
        (id, waiting)
    }

    pub(crate) fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<Box<str>, oneshot::Sender<Arc<Record>>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unmatched_reply(&self, record: &Record) {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
        self.counter.inc();
        tracing::debug!(target: "kafkactor", partition = record.partition, offset = record.offset,
            "a reply no caller waits for (it gave up, or the reply came twice)");
    }
}

impl Sink for Pending {
    fn take(&self, record: Arc<Record>) {
        let waiting = record
            .headers
            .get_str(header::CORRELATION_ID)
            .and_then(|id| self.lock().remove(id));
        match waiting {
            Some(tx) => {
                if let Err(record) = tx.send(record) {
                    self.unmatched_reply(&record);
                }
            }
            None => self.unmatched_reply(&record),
        }
    }
}

/// A request's reply to come; its entry is removed when this is dropped.
pub(crate) struct Waiting<'a> {
    pending: &'a Pending,
    id: String,
    rx: oneshot::Receiver<Arc<Record>>,
}

impl std::future::Future for Waiting<'_> {
    type Output = Result<Arc<Record>, oneshot::error::RecvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(task)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.id.as_str());
    }
}
