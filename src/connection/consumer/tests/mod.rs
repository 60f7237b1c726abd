//! The ConsumerConnection against a scripted consumer client: group events
//! that arrive while it has no credit are never lost, an assignment
//! repeated without a revocation returns the credit of what it replaced,
//! and a transactional subscription's outputs are committed with their
//! offsets on shutdown and on revocation, whatever a transaction under way
//! does meanwhile, and without the outputs the broker refuses.
//!
//! Here the fakes they share (a scripted consumer client, its backend, a
//! sink for what the connection hands its reader); `assignments.rs` holds
//! the tests of polls and assignments, `transactions.rs` those of a
//! transactional subscription's commits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::oneshot;

use super::*;
use crate::broker::{
    BrokerBackend, ConsumerClient, ConsumerConfig, ConsumerEvent, OffsetReset, ProducerClient,
    ProducerConfig, TransactionFailed,
};
use crate::connection::protocol::{Deliver, FindReader, Reader, Refused, Released, Revoking};
use crate::envelope::{Headers, OutgoingRecord, Record, TopicPartition};
use crate::error::Result;

#[derive(Default)]
struct Script {
    /// Answers given as soon as a poll is made, in order; a poll without
    /// one waits until the test fires it or the connection wakes it.
    answers: VecDeque<Vec<ConsumerEvent>>,
    /// The `max_records` of every poll, in order.
    polls: Vec<usize>,
    /// Answers given to a poll the connection dropped before taking them.
    lost: usize,
    /// Where the answer of the poll under way goes.
    pending: Option<oneshot::Sender<Vec<ConsumerEvent>>>,
    /// Plain commits, in order.
    commits: Vec<Vec<(TopicPartition, i64)>>,
    /// Transactions committed, in order: the topic and partition of each
    /// record written (by the record's payload), and the offsets.
    transactions: Vec<Committed>,
    /// Transactions are answered by the test (`answer_transaction`).
    hold_transactions: bool,
    held: VecDeque<(
        Transaction,
        oneshot::Sender<std::result::Result<(), TransactionFailed>>,
    )>,
    /// Records to a partition at or past this are refused.
    partitions: Option<i32>,
}

type Transaction = (Vec<OutgoingRecord>, Vec<(TopicPartition, i64)>);

/// A transaction committed: its outputs' names and its offsets.
type Committed = (Vec<String>, Vec<(TopicPartition, i64)>);

/// Commits `transaction` as the broker would: refused when a record goes
/// past the partitions, otherwise noted.
fn transact(
    script: &mut Script,
    (records, offsets): Transaction,
) -> std::result::Result<(), TransactionFailed> {
    let refused: Vec<(usize, crate::Error)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!((r.partition, script.partitions), (Some(p), Some(n)) if p >= n))
        .map(|(i, r)| {
            (
                i,
                crate::Error::no_partition(&r.topic, r.partition.unwrap(), 1),
            )
        })
        .collect();
    if !refused.is_empty() {
        return Err(TransactionFailed {
            error: crate::Error::commit("refused", false),
            refused,
            undetermined: false,
        });
    }
    let written = records.iter().map(name).collect();
    script.transactions.push((written, offsets));
    Ok(())
}

/// An output's name: its payload.
fn name(record: &OutgoingRecord) -> String {
    String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()).into_owned()
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Script>>);

impl Fake {
    /// Answers the poll under way, as a client's polling thread would.
    fn fire(&self, events: Vec<ConsumerEvent>) {
        if let Some(tx) = self.0.lock().unwrap().pending.take() {
            let _ = tx.send(events);
        }
    }
}

/// A poll's answer, noting when it is dropped with an answer in it.
struct Answer {
    rx: oneshot::Receiver<Vec<ConsumerEvent>>,
    taken: bool,
    script: Arc<Mutex<Script>>,
}

impl std::future::Future for Answer {
    type Output = Result<Vec<ConsumerEvent>>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let events =
            futures_util::ready!(std::pin::Pin::new(&mut self.rx).poll(cx)).unwrap_or_default();
        self.taken = true;
        std::task::Poll::Ready(Ok(events))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.taken && self.rx.try_recv().is_ok() {
            self.script.lock().unwrap().lost += 1;
        }
    }
}

impl ConsumerClient for Fake {
    fn poll(&self, max: usize, _: Duration) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>> {
        let (tx, rx) = oneshot::channel();
        let mut script = self.0.lock().unwrap();
        script.polls.push(max);
        match script.answers.pop_front() {
            Some(events) => {
                let _ = tx.send(events);
            }
            None => script.pending = Some(tx),
        }
        Answer {
            rx,
            taken: false,
            script: self.0.clone(),
        }
        .boxed()
    }
    fn wake(&self) {
        self.fire(Vec::new());
    }
    fn idle_poll_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn pause(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }
    fn resume(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }
    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>> {
        self.0.lock().unwrap().commits.push(offsets);
        futures_util::future::ready(Ok(())).boxed()
    }
    fn commit_transaction(
        &self,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, std::result::Result<(), TransactionFailed>> {
        let mut script = self.0.lock().unwrap();
        if script.hold_transactions {
            let (tx, rx) = oneshot::channel();
            script.held.push_back(((records, offsets), tx));
            return async move { rx.await.unwrap() }.boxed();
        }
        futures_util::future::ready(transact(&mut script, (records, offsets))).boxed()
    }

    fn release(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }
    fn close(&self) {}
}

#[derive(Debug)]
struct Backend(Fake);

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fake")
    }
}

impl BrokerBackend for Backend {
    fn producer(&self, _: ProducerConfig) -> Result<Arc<dyn ProducerClient>> {
        unreachable!("no producer in these tests")
    }
    fn consumer(&self, _: ConsumerConfig) -> Result<Arc<dyn ConsumerClient>> {
        Ok(Arc::new(self.0.clone()))
    }
    fn reader(&self, _: &str, _: i32, _: i64) -> Result<Arc<dyn crate::broker::ReaderClient>> {
        unreachable!("no reader in these tests")
    }
    fn ensure_topic(&self, _: &str, _: Option<i32>) -> BoxFuture<'static, Result<()>> {
        futures_util::future::ready(Ok(())).boxed()
    }
    fn watermarks(&self, _: &str) -> BoxFuture<'static, Result<Vec<(i64, i64)>>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }
    fn committed(&self, _: &str, _: &str) -> BoxFuture<'static, Result<Vec<Option<i64>>>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }
    fn read_all(&self, _: &str) -> BoxFuture<'static, Result<Vec<Record>>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }

    fn read_range(
        &self,
        _: &str,
        _: i32,
        _: i64,
        _: usize,
    ) -> BoxFuture<'static, Result<Vec<Record>>> {
        futures_util::future::ready(Ok(Vec::new())).boxed()
    }

    fn probe(&self, _: Duration) -> BoxFuture<'static, Result<()>> {
        futures_util::future::ready(Ok(())).boxed()
    }
    fn partitions(&self, _: &str) -> BoxFuture<'static, Result<Option<i32>>> {
        futures_util::future::ready(Ok(None)).boxed()
    }
    fn describe(&self) -> String {
        "a fake broker".into()
    }
}

/// Records what the connection delivers and releases.
#[derive(Default)]
struct Sink {
    delivered: Arc<Mutex<Vec<(TopicPartition, i64)>>>,
    refused: Arc<Mutex<Vec<i64>>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let mut delivered = self.delivered.lock().unwrap();
        delivered.extend(msg.records.iter().map(|r| (r.topic_partition(), r.offset)));
    }
}

impl Handler<Released> for Sink {
    type Result = ();
    fn handle(&mut self, _: Released, _: &mut Context<Self>) {}
}

impl Handler<Revoking> for Sink {
    type Result = ();
    fn handle(&mut self, _: Revoking, _: &mut Context<Self>) {}
}

impl Handler<Refused> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Refused, _: &mut Context<Self>) {
        let mut refused = self.refused.lock().unwrap();
        refused.extend(msg.0.iter().map(|(r, _)| r.offset));
    }
}

fn record(tp: &TopicPartition, offset: i64) -> Arc<Record> {
    Arc::new(Record::new(
        tp.topic.clone(),
        tp.partition,
        offset,
        None,
        Headers::new(),
        Some(bytes::Bytes::new()),
        0,
    ))
}

fn connection(fake: &Fake, sink: Addr<Sink>, max_in_flight: usize) -> Addr<ConsumerConnection> {
    start(fake, sink, settings(max_in_flight))
}

fn settings(max_in_flight: usize) -> ConsumerSettings {
    ConsumerSettings {
        config: ConsumerConfig {
            group: "g".into(),
            topics: vec!["t".into()],
            reset: OffsetReset::Earliest,
            revoke_timeout: Duration::from_secs(1),
            prefetch: 10,
            fetch_wait: None,
        },
        max_in_flight,
        refill: REFILL,
        // Long: a commit scheduled stays pending through the test.
        commit_interval: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(1),
        transactional: None,
        in_flight: prometheus::IntGauge::new("in_flight", "test").unwrap(),
        retry_topics: crate::topics::RetryTopics::default(),
    }
}

fn start(fake: &Fake, sink: Addr<Sink>, settings: ConsumerSettings) -> Addr<ConsumerConnection> {
    let reader: FindReader = Box::new(move || {
        let reader = Reader {
            deliver: sink.clone().recipient(),
            released: sink.clone().recipient(),
            refused: sink.clone().recipient(),
            revoking: sink.clone().recipient(),
        };
        Some((reader, 1))
    });
    ConsumerConnection::new(Arc::new(Backend(fake.clone())), settings, reader).start()
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

mod assignments;
mod flow;
mod transactions;
