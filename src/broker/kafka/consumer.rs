//! A Kafka consumer-group member, polled on its own thread.
//!
//! librdkafka's consumer must be polled, and its rebalance callbacks run on
//! the polling thread, so each member gets a thread that owns the
//! `BaseConsumer` and serves commands from the ConsumerConnection actor:
//! fetch (at most the actor's credit of records), commit, release, close.
//! Handlers therefore never block polling, and the actor never gets more
//! records than it has room for.
//!
//! Flow control: while the actor has no credit the thread keeps polling (so
//! rebalances and `max.poll.interval.ms` are served) and keeps what arrives
//! in a stash of at most `prefetch` records (a subscription's
//! `max_in_flight`, and at least [`MIN_READ_AHEAD`]) and at most
//! [`MAX_READ_AHEAD_BYTES`]; only when the stash is full does it pause the
//! assigned partitions, resuming them once the stash is half empty.
//! librdkafka drops its prefetched data on every pause, so pausing is kept
//! for handlers that really are slower than the fetches, never done per
//! batch (hence the floor). The actor's own pause and resume calls are
//! therefore not needed here.
//!
//! Offsets are never committed automatically (`enable.auto.commit=false`):
//! only what the actor commits, which is its completed watermark.
//!
//! On revocation the callback hands the actor a `Revoked` event and blocks
//! (serving commit and release commands) until the actor has drained and
//! committed those partitions and released them, or until the revoke
//! deadline; only then does librdkafka give them up. Leaving the group
//! because `max.poll.interval.ms` passed is returned as a poll error, which
//! the actor turns into a supervised failure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::headers::{read_headers, RawHeader};
use super::transaction::Transactions;
use super::{broker_error, KafkaConfig};
use crate::broker::{
    ConsumerClient, ConsumerConfig, ConsumerEvent, OffsetReset, TransactionFailed,
};
use crate::envelope::{header, Headers, Name, OutgoingRecord, Record, TopicPartition, INLINE};
use crate::error::{Error, Result};

/// The fewest records the stash takes before it pauses the assignment,
/// whatever the subscription's `max_in_flight`: a pause drops librdkafka's
/// prefetched data, and a stash of a handful would pause at every poll.
pub(crate) const MIN_READ_AHEAD: usize = 1_000;

/// The most bytes (keys, headers and payloads) the stash holds before it
/// pauses the assignment, however few records that is.
pub(crate) const MAX_READ_AHEAD_BYTES: usize = 16 << 20;

/// The longest a single poll of librdkafka blocks, so commands are served promptly.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// Most records taken from librdkafka in one round of the fetch loop.
const POLL_BATCH: usize = 512;

/// How long librdkafka waits before fetching again a partition whose
/// local queue was full (`fetch.queue.backoff.ms`; librdkafka's default is
/// 1,000). A setting of the user's takes precedence.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// The slice while the actor has no credit: a wake (its credit freed up)
/// is then served within this, so a subscription with `max_in_flight(1)`
/// is not held to one record per slice.
const NO_CREDIT_SLICE: Duration = Duration::from_millis(1);

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Fetch(Fetch),
    /// Answer the fetch under way now.
    Wake,
    Hold(Vec<TopicPartition>, bool),
    Commit(Vec<(TopicPartition, i64)>, Reply<()>),
    Transaction(
        Vec<OutgoingRecord>,
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<std::result::Result<(), TransactionFailed>>,
    ),
    Release(Vec<TopicPartition>),
    Close,
}

struct Fetch {
    max: usize,
    deadline: Instant,
    reply: Reply<Vec<ConsumerEvent>>,
}

/// What the polling thread and its rebalance callbacks share.
struct Shared {
    commands: Mutex<Receiver<Command>>,
    /// The fetch being served, answered by the poll loop or by a revocation.
    fetch: Mutex<Option<Fetch>>,
    /// Records taken for the current fetch, in order.
    records: Mutex<Vec<Arc<Record>>>,
    /// Assignments to announce with the next answer.
    events: Mutex<Vec<ConsumerEvent>>,
    /// Records polled while the actor had no credit, oldest first.
    stash: Mutex<Stash>,
    /// Whether the thread paused the assignment because the stash is full.
    paused: AtomicBool,
    /// Partitions the actor holds paused, whatever the stash does.
    held: Mutex<HashSet<TopicPartition>>,
    prefetch: usize,
    closing: AtomicBool,
    revoke_timeout: Duration,
    group: String,
    /// The transactional producer of a transactional subscription's member.
    transactions: Mutex<Transactions>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Answers the current fetch with the pending events, the records taken
    /// so far, then `last`.
    fn answer(&self, last: Option<ConsumerEvent>) {
        let Some(fetch) = lock(&self.fetch).take() else {
            return;
        };
        let mut events = std::mem::take(&mut *lock(&self.events));
        let records = std::mem::take(&mut *lock(&self.records));
        if !records.is_empty() {
            events.push(ConsumerEvent::Records(records));
        }
        events.extend(last);
        let _ = fetch.reply.send(Ok(events));
    }

    fn fail_fetch(&self, error: Error) {
        if let Some(fetch) = lock(&self.fetch).take() {
            let _ = fetch.reply.send(Err(error));
        }
    }
}

/// The consumer context: rebalance callbacks on the polling thread.
struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shared = &self.shared;
        let revoked = from_tpl(tpl);
        if revoked.is_empty() || shared.closing.load(Ordering::SeqCst) {
            return;
        }
        tracing::debug!(group = %shared.group, ?revoked, "revoking; waiting for the connection to drain");
        shared.answer(Some(ConsumerEvent::Revoked(revoked.clone())));
        // Stashed records of revoked partitions were never handed out: the
        // next owner reads them from the committed offset.
        lock(&shared.stash).retain(|r| !revoked.contains(&r.topic_partition()));
        lock(&shared.held).retain(|tp| !revoked.contains(tp));
        // The stash's pause of the partitions kept (a cooperative rebalance)
        // stays until the poll loop sees the stash half empty; the new
        // assignment gets the same state in `post_rebalance`.
        let mut waiting: HashSet<TopicPartition> = revoked.into_iter().collect();
        let deadline = crate::clock::deadline_in(shared.revoke_timeout);
        let commands = lock(&shared.commands);
        while !waiting.is_empty() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match commands.recv_timeout(remaining) {
                Ok(Command::Release(tps)) => {
                    for tp in tps {
                        waiting.remove(&tp);
                    }
                }
                Ok(Command::Commit(offsets, reply)) => {
                    let _ = reply.send(commit(consumer, &offsets));
                }
                Ok(Command::Transaction(records, offsets, reply)) => {
                    let _ = reply.send(transaction(consumer, shared, records, &offsets));
                }
                // Kept for the poll loop, which serves it once the rebalance is done.
                Ok(Command::Fetch(fetch)) => *lock(&shared.fetch) = Some(fetch),
                // The revocation answered the fetch under way already.
                Ok(Command::Wake) => {}
                Ok(Command::Hold(tps, held)) => hold(consumer, shared, tps, held),
                Ok(Command::Close) | Err(RecvTimeoutError::Disconnected) => {
                    shared.closing.store(true, Ordering::SeqCst);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(group = %shared.group, ?waiting,
                        "revoke deadline passed; giving the partitions up undrained");
                    return;
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = from_tpl(tpl);
                if !assigned.is_empty() {
                    // librdkafka keeps a partition paused across its revocation
                    // and a new assignment (a hold, or the stash's pause, of an
                    // earlier ownership): a newly assigned partition fetches
                    // unless the stash is full right now.
                    let result = if self.shared.paused.load(Ordering::SeqCst) {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                    if let Err(e) = result {
                        tracing::warn!(group = %self.shared.group, error = %e,
                            "setting the pause state of assigned partitions failed");
                    }
                    lock(&self.shared.events).push(ConsumerEvent::Assigned(assigned));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.shared.group, error = %e, "rebalance error")
            }
        }
    }
}

/// A group member whose `BaseConsumer` lives on its own thread.
pub(crate) struct KafkaConsumer {
    commands: Mutex<Sender<Command>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// What the polling thread shares, for the tests to look at.
    #[cfg(test)]
    shared: Arc<Shared>,
}

impl KafkaConsumer {
    pub(crate) fn start(kafka: &KafkaConfig, config: ConsumerConfig) -> Result<Self> {
        let reset = match config.reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            commands: Mutex::new(rx),
            fetch: Mutex::new(None),
            records: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            stash: Mutex::new(Stash::default()),
            paused: AtomicBool::new(false),
            held: Mutex::new(HashSet::new()),
            prefetch: config.prefetch.max(1),
            closing: AtomicBool::new(false),
            revoke_timeout: config.revoke_timeout,
            group: config.group.clone(),
            transactions: Mutex::new(Transactions::new(kafka, &config.group)),
        });
        let mut client = kafka.client_config(&[
            ("group.id", config.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", reset),
            ("enable.partition.eof", "false"),
            // librdkafka stops fetching a partition whose local queue holds
            // `queued.min.messages` and looks again only after this; its
            // default (1 s) stalls a consumer that empties the queue faster
            // than that for the rest of the second.
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ]);
        if let Some(wait) = config.fetch_wait {
            client.set("fetch.wait.max.ms", wait.as_millis().max(1).to_string());
        }
        let consumer: BaseConsumer<Context> = client
            .create_with_context(Context {
                shared: shared.clone(),
            })
            .map_err(|e| {
                Error::Config(format!("Kafka consumer for group {}: {e}", config.group))
            })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| broker_error(&format!("subscribe to {topics:?}"), &e))?;
        #[cfg(test)]
        let seen = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kafkactor-consumer-{}", config.group))
            .spawn(move || PollThread::new(consumer, shared).run())
            .map_err(|e| Error::client("start the polling thread", e, false))?;
        Ok(KafkaConsumer {
            commands: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
            #[cfg(test)]
            shared: seen,
        })
    }

    fn send(&self, command: Command) -> Result<()> {
        lock(&self.commands).send(command).map_err(|_| {
            Error::client(
                "reach the consumer's polling thread",
                "it has stopped",
                true,
            )
        })
    }
}

impl ConsumerClient for KafkaConsumer {
    fn idle_poll_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn poll(
        &self,
        max_records: usize,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<ConsumerEvent>>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Fetch(Fetch {
            max: max_records,
            deadline: Instant::now() + timeout,
            reply,
        }));
        async move {
            sent?;
            rx.await.map_err(|_| {
                Error::client(
                    "reach the consumer's polling thread",
                    "it has stopped",
                    true,
                )
            })?
        }
        .boxed()
    }

    fn wake(&self) {
        let _ = self.send(Command::Wake);
    }

    /// A no-op: the polling thread pauses by itself when its stash is full
    /// (see the module docs).
    fn pause(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }

    /// A no-op, as [`pause`](Self::pause).
    fn resume(&self, _: &[TopicPartition]) -> Result<()> {
        Ok(())
    }

    /// Pauses or resumes the partitions in librdkafka, on the polling thread.
    fn hold(&self, partitions: &[TopicPartition], held: bool) -> Result<()> {
        self.send(Command::Hold(partitions.to_vec(), held))
    }

    fn commit(&self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'static, Result<()>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Commit(offsets, reply));
        async move {
            sent?;
            rx.await
                .map_err(|_| Error::Commit("the consumer's polling thread has stopped".into()))?
        }
        .boxed()
    }

    fn commit_transaction(
        &self,
        records: Vec<OutgoingRecord>,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> BoxFuture<'static, std::result::Result<(), TransactionFailed>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Transaction(records, offsets, reply));
        async move {
            sent?;
            rx.await
                .map_err(|_| Error::Commit("the consumer's polling thread has stopped".into()))?
        }
        .boxed()
    }

    fn release(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.send(Command::Release(partitions.to_vec()))
    }

    fn close(&self) {
        let _ = self.send(Command::Close);
        // The thread leaves the group and exits on its own; joining here
        // would block the actor's thread.
        drop(lock(&self.thread).take());
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.close();
    }
}

/// The polling thread's loop.
struct PollThread {
    consumer: BaseConsumer<Context>,
    shared: Arc<Shared>,
    /// Topic and header names seen, so records share one allocation per name.
    names: Names,
}

impl PollThread {
    fn new(consumer: BaseConsumer<Context>, shared: Arc<Shared>) -> Self {
        PollThread {
            consumer,
            shared,
            names: Names::default(),
        }
    }

    fn run(mut self) {
        loop {
            let waiting = lock(&self.shared.fetch).is_some();
            if waiting {
                if !self.serve_fetch() {
                    break;
                }
                continue;
            }
            let command = lock(&self.shared.commands).recv();
            match command {
                Ok(command) => {
                    if !self.handle(command) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        tracing::debug!(group = %self.shared.group, "leaving the group");
        // Dropping the consumer leaves the group.
    }

    /// Handles a command outside a fetch; false when the thread must stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Fetch(fetch) => *lock(&self.shared.fetch) = Some(fetch),
            Command::Wake => self.shared.answer(None),
            Command::Hold(tps, held) => hold(&self.consumer, &self.shared, tps, held),
            Command::Commit(offsets, reply) => {
                let _ = reply.send(commit(&self.consumer, &offsets));
            }
            Command::Transaction(records, offsets, reply) => {
                let result = transaction(&self.consumer, &self.shared, records, &offsets);
                let _ = reply.send(result);
            }
            // Outside a revocation there is nothing to give back.
            Command::Release(_) => {}
            Command::Close => {
                self.shared.closing.store(true, Ordering::SeqCst);
                self.shared
                    .fail_fetch(Error::client("poll", "the consumer is closed", false));
                return false;
            }
        }
        true
    }

    /// Polls librdkafka for the current fetch until it has records, events
    /// or its deadline; false when the thread must stop.
    fn serve_fetch(&mut self) -> bool {
        loop {
            // Serve commands that arrived meanwhile, without blocking.
            loop {
                let command = lock(&self.shared.commands).try_recv();
                match command {
                    Ok(command) => {
                        if !self.handle(command) {
                            return false;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return false,
                }
            }
            let (max, deadline) = match &*lock(&self.shared.fetch) {
                Some(f) => (f.max, f.deadline),
                None => return true, // answered by a revocation
            };
            // Stashed records go first, in order.
            let taken = {
                let mut records = lock(&self.shared.records);
                let mut stash = lock(&self.shared.stash);
                while records.len() < max {
                    match stash.pop_front() {
                        Some(r) => records.push(r),
                        None => break,
                    }
                }
                records.len()
            };
            self.flow_control();
            let now = Instant::now();
            let full = max > 0 && taken >= max;
            if full || !lock(&self.shared.events).is_empty() || now >= deadline {
                self.shared.answer(None);
                return true;
            }
            let slice = if taken > 0 {
                Duration::ZERO
            } else if max == 0 {
                deadline.saturating_duration_since(now).min(NO_CREDIT_SLICE)
            } else {
                deadline.saturating_duration_since(now).min(POLL_SLICE)
            };
            match self.consumer.poll(slice) {
                Some(Ok(message)) => {
                    let record = Arc::new(to_record(&message, &mut self.names));
                    drop(message);
                    if max == 0 {
                        lock(&self.shared.stash).push_back(record);
                    } else {
                        lock(&self.shared.records).push(record);
                        if let Some(e) = self.take_ready(max - taken - 1) {
                            if left_group(&e) {
                                self.fail_left_group(&e);
                                return true;
                            }
                            tracing::warn!(group = %self.shared.group, error = %e, "consumer error");
                        }
                    }
                }
                Some(Err(e)) if left_group(&e) => {
                    self.fail_left_group(&e);
                    return true;
                }
                Some(Err(e)) => {
                    tracing::warn!(group = %self.shared.group, error = %e, "consumer error");
                }
                None if taken > 0 => {
                    self.shared.answer(None);
                    return true;
                }
                None => {}
            }
        }
    }

    /// Takes up to `room` more records librdkafka already has (polls that
    /// do not wait), without a round of the fetch loop per record; each
    /// goes to the fetch's records at once, so a revocation answered from
    /// a poll's callback carries every record polled before it. Returns
    /// the error that ended it, if one did.
    fn take_ready(&mut self, room: usize) -> Option<KafkaError> {
        for _ in 0..room.min(POLL_BATCH) {
            match self.consumer.poll(Duration::ZERO)? {
                Ok(message) => {
                    let record = Arc::new(to_record(&message, &mut self.names));
                    drop(message);
                    lock(&self.shared.records).push(record);
                }
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// The member left the group: the fetch under way fails (rejoining
    /// helps: a restarted connection joins again).
    fn fail_left_group(&self, e: &KafkaError) {
        self.shared.fail_fetch(Error::Broker {
            operation: format!("membership of group {}", self.shared.group),
            reason: format!("{e} (left the group: a poll took longer than max.poll.interval.ms)"),
            code: e.rdkafka_error_code().map(|c| format!("{c:?}")),
            retriable: true,
        });
    }

    /// Pauses the assignment when the stash is full, resumes it when half empty.
    fn flow_control(&self) {
        let (stashed, bytes) = {
            let stash = lock(&self.shared.stash);
            (stash.records.len(), stash.bytes)
        };
        let paused = self.shared.paused.load(Ordering::SeqCst);
        let most = self.shared.prefetch.max(MIN_READ_AHEAD);
        if !paused && (stashed >= most || bytes >= MAX_READ_AHEAD_BYTES) {
            tracing::debug!(group = %self.shared.group, stashed, bytes, "stash full: pausing the assignment");
            pause_assignment(&self.consumer, true, &lock(&self.shared.held));
            self.shared.paused.store(true, Ordering::SeqCst);
        } else if paused && stashed <= most / 2 && bytes <= MAX_READ_AHEAD_BYTES / 2 {
            tracing::debug!(group = %self.shared.group, stashed, "stash half empty: resuming the assignment");
            pause_assignment(&self.consumer, false, &lock(&self.shared.held));
            self.shared.paused.store(false, Ordering::SeqCst);
        }
    }
}

/// Records read ahead while the actor has no credit, and their size.
#[derive(Default)]
struct Stash {
    records: std::collections::VecDeque<Arc<Record>>,
    /// Their keys, headers and payloads, in bytes.
    bytes: usize,
}

impl Stash {
    fn push_back(&mut self, record: Arc<Record>) {
        self.bytes += record.byte_size();
        self.records.push_back(record);
    }

    fn pop_front(&mut self) -> Option<Arc<Record>> {
        let record = self.records.pop_front()?;
        self.bytes -= record.byte_size();
        Some(record)
    }

    fn retain(&mut self, keep: impl Fn(&Arc<Record>) -> bool) {
        self.records.retain(|r| keep(r));
        self.bytes = self.records.iter().map(|r| r.byte_size()).sum();
    }
}

/// Interned topic and header names: records share one allocation per name
/// instead of one per record, and well-known header names none. Records
/// of one producer mostly carry the same headers in the same order, so the
/// names of the last record are tried first.
#[derive(Default)]
pub(crate) struct Names {
    all: rustc_hash::FxHashMap<Box<str>, Arc<str>>,
    /// The last topic, and the last record's header names by position.
    last_topic: Option<Arc<str>>,
    last_headers: Vec<Name>,
}

impl Names {
    fn shared(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.all.get(name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.all.insert(name.into(), t.clone());
        t
    }

    fn topic(&mut self, topic: &str) -> Arc<str> {
        match &self.last_topic {
            Some(last) if **last == *topic => last.clone(),
            _ => {
                let t = self.shared(topic);
                self.last_topic = Some(t.clone());
                t
            }
        }
    }

    /// The name of the `i`th header of a record.
    fn header(&mut self, i: usize, name: &str) -> Name {
        if let Some(last) = self.last_headers.get(i).filter(|n| n.as_str() == name) {
            return last.clone();
        }
        let found = match header::known(name) {
            Some(known) => Name::Known(known),
            None => Name::Shared(self.shared(name)),
        };
        if i < self.last_headers.len() {
            self.last_headers[i] = found.clone();
        } else if i == self.last_headers.len() && i < LAST_HEADERS {
            self.last_headers.push(found.clone());
        }
        found
    }
}

/// How many header names by position [`Names`] remembers.
const LAST_HEADERS: usize = 16;

fn left_group(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::PollExceeded)
}

fn from_tpl(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// Pauses or resumes every partition currently assigned.
/// Held partitions stay paused.
fn pause_assignment<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    paused: bool,
    held: &HashSet<TopicPartition>,
) {
    let result = consumer.assignment().and_then(|assigned| {
        if paused {
            consumer.pause(&assigned)
        } else if held.is_empty() {
            consumer.resume(&assigned)
        } else {
            let free: Vec<TopicPartition> = from_tpl(&assigned)
                .into_iter()
                .filter(|tp| !held.contains(tp))
                .collect();
            consumer.resume(&to_tpl(&free))
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, paused, "pause/resume failed");
    }
}

/// Refuses offsets of partitions this member is not assigned (any more):
/// one given up past its revoke deadline while the connection still
/// finished it, say. The broker checks the member's generation, not which
/// partitions it owns: a late commit would move the next owner's offsets,
/// and a late transaction write outputs the next owner writes too.
fn assigned<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    let assignment = consumer
        .assignment()
        .map_err(|e| Error::Commit(format!("the assignment could not be read: {e}")))?;
    match offsets
        .iter()
        .find(|(tp, _)| assignment.find_partition(&tp.topic, tp.partition).is_none())
    {
        Some((tp, _)) => Err(Error::Commit(format!(
            "{tp} is not assigned to this member (given up)"
        ))),
        None => Ok(()),
    }
}

/// A transaction of partitions this member is assigned.
fn transaction<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    records: Vec<OutgoingRecord>,
    offsets: &[(TopicPartition, i64)],
) -> std::result::Result<(), TransactionFailed> {
    assigned(consumer, offsets)?;
    lock(&shared.transactions).commit(consumer, records, offsets)
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    assigned(consumer, offsets)?;
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(|e| Error::Commit(e.to_string()))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| Error::Commit(e.to_string()))
}

/// Copies a librdkafka message into a [`Record`]: its key, payload and
/// long header values in one buffer (one copy, one allocation), shared by
/// slices; short header values inline in the header list; names interned
/// (the well-known ones not allocated at all).
pub(crate) fn to_record(m: &BorrowedMessage<'_>, names: &mut Names) -> Record {
    let (key, payload) = (m.key(), m.payload());
    // The headers, read once (each read is a call into librdkafka).
    let mut raw: SmallVec<[RawHeader<'_>; 8]> = SmallVec::new();
    read_headers(m, &mut raw);
    /// A value too long to keep inline.
    fn long(v: Option<&[u8]>) -> Option<&[u8]> {
        v.filter(|v| v.len() > INLINE)
    }
    let size = key.map_or(0, <[u8]>::len)
        + payload.map_or(0, <[u8]>::len)
        + raw
            .iter()
            .filter_map(|(_, v)| long(*v))
            .map(<[u8]>::len)
            .sum::<usize>();
    let mut buffer = Vec::with_capacity(size);
    let longs = raw.iter().filter_map(|(_, v)| long(*v));
    for part in key.into_iter().chain(payload).chain(longs) {
        buffer.extend_from_slice(part);
    }
    let all = Bytes::from(buffer);
    let mut at = 0;
    let mut next = |len: usize| {
        at += len;
        all.slice(at - len..at)
    };
    let key = key.map(|k| next(k.len()));
    let payload = payload.map(|p| next(p.len()));
    let mut headers = Headers::with_capacity(raw.len());
    for (i, (name, value)) in raw.iter().enumerate() {
        let shared = long(*value).map(|v| next(v.len()));
        // Kept null: a dead letter carries it unchanged.
        headers.append_from(names.header(i, name), *value, shared);
    }
    Record::new(
        names.topic(m.topic()),
        m.partition(),
        m.offset(),
        key,
        headers,
        payload,
        m.timestamp().to_millis().unwrap_or(0),
    )
}

/// Holds (pauses) or releases partitions for the actor. A release while the
/// stash keeps the whole assignment paused waits for the stash's resume.
fn hold<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    partitions: Vec<TopicPartition>,
    held: bool,
) {
    let mut holds = lock(&shared.held);
    let result = if held {
        holds.extend(partitions.iter().cloned());
        consumer.pause(&to_tpl(&partitions))
    } else {
        for tp in &partitions {
            holds.remove(tp);
        }
        if shared.paused.load(Ordering::SeqCst) {
            Ok(())
        } else {
            consumer.resume(&to_tpl(&partitions))
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, ?partitions, held, "hold failed");
    }
}

fn to_tpl(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::ClientConfig;

    /// Reads `n` records of `size` bytes spread over 8 partitions with a
    /// member whose connection takes 50 of them and then has no credit;
    /// returns what it read ahead meanwhile: records and bytes.
    async fn read_ahead(prefetch: usize, n: usize, size: usize) -> (usize, usize) {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 8, 1).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        let payload = vec![b'x'; size];
        for i in 0..n {
            let key = i.to_string();
            let record = BaseRecord::<str, [u8]>::to("t").key(&key).payload(&payload);
            producer.send(record).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let kafka = KafkaConfig::new(mock.bootstrap_servers());
        let consumer = KafkaConsumer::start(
            &kafka,
            ConsumerConfig {
                group: "g".into(),
                topics: vec!["t".into()],
                reset: OffsetReset::Earliest,
                revoke_timeout: Duration::from_secs(5),
                prefetch,
                fetch_wait: Some(Duration::from_millis(10)),
            },
        )
        .unwrap();
        let mut taken = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while taken < 50 && Instant::now() < deadline {
            for event in consumer
                .poll(50 - taken, Duration::from_millis(100))
                .await
                .unwrap()
            {
                if let ConsumerEvent::Records(records) = event {
                    taken += records.len();
                }
            }
        }
        assert_eq!(taken, 50);
        // No credit: it goes on polling (the group's events come in polls)
        // until it pauses.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let events = consumer.poll(0, Duration::from_millis(100)).await.unwrap();
            assert!(events
                .iter()
                .all(|e| !matches!(e, ConsumerEvent::Records(r) if !r.is_empty())));
        }
        let stash = lock(&consumer.shared.stash);
        let seen = (stash.records.len(), stash.bytes);
        drop(stash);
        consumer.close();
        seen
    }

    /// With a small `max_in_flight` it reads ahead `MIN_READ_AHEAD`
    /// records, then pauses, however many wait.
    #[actix_rt::test]
    async fn read_ahead_is_bounded_in_records() {
        let (records, _) = read_ahead(50, 3_000, 1).await;
        assert!(
            (MIN_READ_AHEAD * 9 / 10..=MIN_READ_AHEAD + 1).contains(&records),
            "{records} records read ahead"
        );
    }

    /// Large records: it pauses at `MAX_READ_AHEAD_BYTES`, however many
    /// records its `max_in_flight` allows (before, up to 10,000 records of
    /// any size: 80 MiB here).
    #[actix_rt::test]
    async fn read_ahead_is_bounded_in_bytes() {
        let (records, bytes) = read_ahead(100_000, 2_800, 8 << 10).await;
        assert!(
            (MAX_READ_AHEAD_BYTES * 9 / 10..=MAX_READ_AHEAD_BYTES + (9 << 10)).contains(&bytes),
            "{records} records, {bytes} bytes read ahead"
        );
    }
}
