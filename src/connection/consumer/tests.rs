//! The ConsumerConnection against a scripted consumer client: group events
//! that arrive while it has no credit are never lost, an assignment
//! repeated without a revocation returns the credit of what it replaced,
//! and a transactional subscription's outputs are committed with their
//! offsets on shutdown and on revocation, whatever a transaction under way
//! does meanwhile, and without the outputs the broker refuses.

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
use crate::connection::protocol::{Completed, Deliver, FindReader, Reader, Refused, Released};
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
        // Long: a commit scheduled stays pending through the test.
        commit_interval: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(1),
        transactional: None,
        in_flight: prometheus::IntGauge::new("in_flight", "test").unwrap(),
    }
}

fn start(fake: &Fake, sink: Addr<Sink>, settings: ConsumerSettings) -> Addr<ConsumerConnection> {
    let reader: FindReader = Box::new(move || {
        let reader = Reader {
            deliver: sink.clone().recipient(),
            released: sink.clone().recipient(),
            refused: sink.clone().recipient(),
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

/// An assignment answered to a poll made without credit, just as credit
/// frees up, reaches the connection: it never drops a poll it made.
#[actix::test]
async fn an_assignment_answered_while_credit_frees_up_is_not_lost() {
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let fake = Fake::default();
    {
        let mut script = fake.0.lock().unwrap();
        script.answers.push_back(vec![
            ConsumerEvent::Assigned(vec![p0.clone()]),
            ConsumerEvent::Records(vec![record(&p0, 0)]),
        ]);
    }
    let sink = Sink::default();
    let conn = connection(&fake, sink.start(), 1);
    until("a poll without credit", || {
        fake.0.lock().unwrap().polls == [1, 0]
    })
    .await;
    // Record 0 finishes: a commit is scheduled (and stays pending), and
    // the credit freed ends the poll without credit; the next one brings
    // record 1.
    fake.0
        .lock()
        .unwrap()
        .answers
        .push_back(vec![ConsumerEvent::Records(vec![record(&p0, 1)])]);
    conn.do_send(Completed(vec![record(&p0, 0)], Vec::new()));
    until("a poll without credit again", || {
        fake.0.lock().unwrap().polls == [1, 0, 1, 0]
    })
    .await;
    // The client answers that poll with an assignment, and in the same
    // turn record 1 finishes: credit frees up before the connection has
    // taken the answer.
    fake.fire(vec![ConsumerEvent::Assigned(vec![p1.clone()])]);
    conn.do_send(Completed(vec![record(&p0, 1)], Vec::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !conn.send(Owned).await.unwrap().contains(&p1) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the assignment"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fake.0.lock().unwrap().lost, 0, "an answer was dropped");
}

/// A partition assigned again without a revocation in between: what was
/// in flight of the first assignment gives its credit back.
#[actix::test]
async fn a_repeated_assignment_returns_the_credit_of_what_it_replaced() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    {
        let mut script = fake.0.lock().unwrap();
        script.answers.push_back(vec![
            ConsumerEvent::Assigned(vec![p0.clone()]),
            ConsumerEvent::Records(vec![record(&p0, 0), record(&p0, 1)]),
        ]);
        script
            .answers
            .push_back(vec![ConsumerEvent::Assigned(vec![p0.clone()])]);
    }
    let sink = Sink::default();
    let _conn = connection(&fake, sink.start(), 4);
    // After the second assignment nothing is in flight: the next poll has
    // the whole credit.
    until("a poll after the second assignment", || {
        fake.0.lock().unwrap().polls.len() >= 3
    })
    .await;
    assert_eq!(fake.0.lock().unwrap().polls, [4, 2, 4]);
}

/// An output named `name`, to `partition` of topic `out`.
fn output(name: &str, partition: Option<i32>) -> OutgoingRecord {
    OutgoingRecord {
        topic: Arc::from("out"),
        partition,
        key: None,
        headers: Headers::new(),
        payload: Some(bytes::Bytes::copy_from_slice(name.as_bytes())),
        timestamp_ms: 0,
    }
}

/// Records `0..n` of `p0` read, each finished with one output named after
/// its offset (`bad` goes to a partition the broker refuses).
async fn read_and_finish(
    fake: &Fake,
    conn: &Addr<ConsumerConnection>,
    p0: &TopicPartition,
    n: i64,
    bad: Option<i64>,
) {
    until("the first poll", || {
        fake.0.lock().unwrap().pending.is_some()
    })
    .await;
    fake.fire(vec![
        ConsumerEvent::Assigned(vec![p0.clone()]),
        ConsumerEvent::Records((0..n).map(|o| record(p0, o)).collect()),
    ]);
    until("the records tracked", || {
        fake.0.lock().unwrap().polls.len() >= 2
    })
    .await;
    let outputs = (0..n)
        .map(|o| {
            let partition = (Some(o) == bad).then_some(7);
            (record(p0, o), vec![output(&format!("o{o}"), partition)])
        })
        .collect();
    conn.send(Completed((0..n).map(|o| record(p0, o)).collect(), outputs))
        .await
        .unwrap();
}

fn transactional(commit_interval: Duration) -> ConsumerSettings {
    ConsumerSettings {
        commit_interval,
        transactional: Some(crate::broker::PartitionCounts::default()),
        ..settings(100)
    }
}

/// Shutdown of a transactional subscription's connection with outputs
/// pending (no periodic commit ran: a long interval): the final commit is
/// one transaction holding every output with the offsets. It was a plain
/// commit of the offsets, which dropped the outputs.
#[actix::test]
async fn the_final_commit_writes_the_outputs_pending() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    let conn = start(
        &fake,
        Sink::default().start(),
        transactional(Duration::from_secs(60)),
    );
    read_and_finish(&fake, &conn, &p0, 3, None).await;
    conn.send(kafkactor_actors::Shutdown).await.unwrap();
    let script = fake.0.lock().unwrap();
    assert!(
        script.commits.is_empty(),
        "plain commits: {:?}",
        script.commits
    );
    assert_eq!(
        script.transactions,
        [(
            vec!["o0".into(), "o1".into(), "o2".into()],
            vec![(p0.clone(), 3)]
        )]
    );
}

/// A periodic transaction holding a partition's outputs is under way when
/// the partition is revoked, and then fails: the revocation waits for it
/// and commits the partition's offsets with those outputs. It committed
/// the offsets at once, and the failed transaction's outputs were dropped.
#[actix::test]
async fn a_revocation_keeps_the_outputs_of_a_failed_transaction() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().hold_transactions = true;
    let _conn = {
        let conn = start(
            &fake,
            Sink::default().start(),
            transactional(Duration::from_millis(1)),
        );
        read_and_finish(&fake, &conn, &p0, 3, None).await;
        conn
    };
    until("a periodic transaction under way", || {
        !fake.0.lock().unwrap().held.is_empty()
    })
    .await;
    fake.fire(vec![ConsumerEvent::Revoked(vec![p0.clone()])]);
    until("the revocation seen", || {
        fake.0.lock().unwrap().polls.len() >= 3
    })
    .await;
    // The transaction under way fails as a whole; from now on they commit.
    let (_, failed) = {
        let mut script = fake.0.lock().unwrap();
        script.hold_transactions = false;
        script.held.pop_front().unwrap()
    };
    let _ = failed.send(Err(crate::Error::commit("broker went away", true).into()));
    until("the revoked partition committed", || {
        !fake.0.lock().unwrap().transactions.is_empty()
    })
    .await;
    let script = fake.0.lock().unwrap();
    assert_eq!(
        script.transactions,
        [(
            vec!["o0".into(), "o1".into(), "o2".into()],
            vec![(p0.clone(), 3)]
        )]
    );
}

/// One output the broker refuses (a partition its topic does not have):
/// its record is handed back to be dead-lettered and the partition is not
/// committed past it; the outputs of the other records commit, those below
/// it at once, those above once it is settled. Every transaction failed
/// with the same outputs before.
#[actix::test]
async fn a_refused_output_is_isolated_and_the_rest_commits() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().partitions = Some(1);
    let sink = Sink::default();
    let refused = sink.refused.clone();
    let conn = start(&fake, sink.start(), transactional(Duration::from_millis(1)));
    read_and_finish(&fake, &conn, &p0, 3, Some(1)).await;
    until("record 1 handed back", || *refused.lock().unwrap() == [1]).await;
    until("the outputs below it committed", || {
        !fake.0.lock().unwrap().transactions.is_empty()
    })
    .await;
    assert_eq!(
        fake.0.lock().unwrap().transactions,
        [(vec!["o0".to_string()], vec![(p0.clone(), 1)])]
    );
    // Dead-lettered: its fate is final again, and the rest commits.
    conn.send(Completed(vec![record(&p0, 1)], Vec::new()))
        .await
        .unwrap();
    until("the rest committed", || {
        fake.0.lock().unwrap().transactions.len() == 2
    })
    .await;
    assert_eq!(
        fake.0.lock().unwrap().transactions[1],
        (vec!["o2".to_string()], vec![(p0.clone(), 3)])
    );
}

/// A transaction whose outcome the client could not find out (the broker
/// went away while it committed): the connection neither writes its
/// outputs again (they may be visible already) nor drops them (they may
/// not be): it fails, and its next incarnation reads the committed offsets
/// afresh. Before, the outputs were written again in the next transaction
/// (95 outputs twice in a soak with one Kafka kill).
#[actix::test]
async fn a_transaction_of_unknown_outcome_fails_the_connection() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().hold_transactions = true;
    let conn = start(
        &fake,
        Sink::default().start(),
        transactional(Duration::from_millis(1)),
    );
    read_and_finish(&fake, &conn, &p0, 3, None).await;
    until("a transaction under way", || {
        !fake.0.lock().unwrap().held.is_empty()
    })
    .await;
    let (_, tx) = fake.0.lock().unwrap().held.pop_front().unwrap();
    let _ = tx.send(Err(TransactionFailed {
        error: crate::Error::commit("the broker went away", true),
        refused: Vec::new(),
        undetermined: true,
    }));
    until("the connection failed", || !conn.connected()).await;
    let script = fake.0.lock().unwrap();
    assert!(
        script.held.is_empty() && script.transactions.is_empty(),
        "written again"
    );
}
