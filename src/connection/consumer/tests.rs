//! The ConsumerConnection against a scripted consumer client: group events
//! that arrive while it has no credit are never lost, and an assignment
//! repeated without a revocation returns the credit of what it replaced.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::oneshot;

use super::*;
use crate::broker::{
    BrokerBackend, ConsumerClient, ConsumerConfig, ConsumerEvent, OffsetReset, ProducerClient,
    ProducerConfig,
};
use crate::connection::protocol::{Completed, Consumer, Deliver, FindConsumer, Released};
use crate::envelope::{Headers, Record, TopicPartition};
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
    fn commit(&self, _: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>> {
        futures_util::future::ready(Ok(())).boxed()
    }
    fn commit_transaction(
        &self,
        _: Vec<crate::envelope::OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, Result<()>> {
        self.commit(offsets)
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
}

/// Records what the connection delivers and releases.
#[derive(Default)]
struct Sink {
    delivered: Arc<Mutex<Vec<(TopicPartition, i64)>>>,
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
    let settings = ConsumerSettings {
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
        transactional: false,
        in_flight: prometheus::IntGauge::new("in_flight", "test").unwrap(),
    };
    let target: FindConsumer = Box::new(move || {
        let target = Consumer {
            deliver: sink.clone().recipient(),
            released: sink.clone().recipient(),
        };
        Some((target, 1))
    });
    ConsumerConnection::new(Arc::new(Backend(fake.clone())), settings, target).start()
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
