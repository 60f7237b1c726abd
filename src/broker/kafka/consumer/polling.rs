//! The polling thread: its loop over the client's commands and librdkafka's
//! polls, and the stash of records read ahead with its flow control.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::partitions::{commit, hold, pause_assignment, transaction};
use super::rebalance::Context;
use super::records::{to_record, Names};
use super::shared::{lock, Command, Shared};
use crate::envelope::Record;
use crate::error::Error;

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

/// The slice while the actor has no credit: a wake (its credit freed up)
/// is then served within this, so a subscription with `max_in_flight(1)`
/// is not held to one record per slice.
const NO_CREDIT_SLICE: Duration = Duration::from_millis(1);

/// The polling thread's loop.
pub(super) struct PollThread {
    consumer: BaseConsumer<Context>,
    shared: Arc<Shared>,
    /// Topic and header names seen, so records share one allocation per name.
    names: Names,
}

impl PollThread {
    pub(super) fn new(consumer: BaseConsumer<Context>, shared: Arc<Shared>) -> Self {
        PollThread {
            consumer,
            shared,
            names: Names::default(),
        }
    }

    pub(super) fn run(mut self) {
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
            if !self.serve_commands() {
                return false;
            }
            let (max, deadline) = match &*lock(&self.shared.fetch) {
                Some(f) => (f.max, f.deadline),
                None => return true, // answered by a revocation
            };
            // Stashed records go first, in order.
            let taken = self.take_stashed(max);
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
            if self.poll_once(slice, max, taken) {
                return true;
            }
        }
    }

    /// Handles the commands that arrived, without blocking; false when the
    /// thread must stop.
    fn serve_commands(&mut self) -> bool {
        loop {
            let command = lock(&self.shared.commands).try_recv();
            match command {
                Ok(command) => {
                    if !self.handle(command) {
                        return false;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Moves stashed records, oldest first, to the fetch's records until
    /// it has `max`; returns how many it has.
    fn take_stashed(&self, max: usize) -> usize {
        let mut records = lock(&self.shared.records);
        let mut stash = lock(&self.shared.stash);
        while records.len() < max {
            match stash.pop_front() {
                Some(r) => records.push(r),
                None => break,
            }
        }
        records.len()
    }

    /// Polls librdkafka once, for at most `slice`, for a fetch of `max`
    /// records of which it has `taken`; true when the fetch is answered
    /// (or failed).
    fn poll_once(&mut self, slice: Duration, max: usize, taken: usize) -> bool {
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
                false
            }
            Some(Err(e)) if left_group(&e) => {
                self.fail_left_group(&e);
                true
            }
            Some(Err(e)) => {
                tracing::warn!(group = %self.shared.group, error = %e, "consumer error");
                false
            }
            None if taken > 0 => {
                self.shared.answer(None);
                true
            }
            None => false,
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
            code: e.rdkafka_error_code().map(crate::broker::kafka::error_code),
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
pub(super) struct Stash {
    pub(super) records: std::collections::VecDeque<Arc<Record>>,
    /// Their keys, headers and payloads, in bytes.
    pub(super) bytes: usize,
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

    pub(super) fn retain(&mut self, keep: impl Fn(&Arc<Record>) -> bool) {
        self.records.retain(|r| keep(r));
        self.bytes = self.records.iter().map(|r| r.byte_size()).sum();
    }
}

fn left_group(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::PollExceeded)
}
