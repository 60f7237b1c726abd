//! The polling thread: its loop over the client's commands, the group's
//! events in the consumer's queue, and the records in the partitions'
//! queues, which it takes only while a fetch has room for them.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::partitions::{commit, hold, transaction};
use super::queues::MainQueue;
use super::rebalance::Context;
use super::records::{to_record, Names};
use super::shared::{lock, Command, Shared};
use crate::error::Error;

/// The longest the thread sleeps without a wake: the queues and commands
/// wake it, so this only bounds the cost of a wake-up that was missed.
const IDLE_SLICE: Duration = Duration::from_millis(100);

/// Most events served from the consumer's queue in one round.
const EVENTS_PER_ROUND: usize = 64;

/// The polling thread's loop.
pub(super) struct PollThread {
    /// Dropped before the consumer: its callback points into `shared`.
    main: MainQueue,
    consumer: Arc<BaseConsumer<Context>>,
    shared: Arc<Shared>,
    /// Topic and header names seen, so records share one allocation per name.
    names: Names,
}

impl PollThread {
    pub(super) fn new(consumer: Arc<BaseConsumer<Context>>, shared: Arc<Shared>) -> Self {
        PollThread {
            main: MainQueue::watch(&consumer, shared.signal.clone()),
            consumer,
            shared,
            names: Names::default(),
        }
    }

    pub(super) fn run(mut self) {
        while self.round() {}
        self.shared.closing.store(true, Ordering::SeqCst);
        tracing::debug!(group = %self.shared.group, "leaving the group");
        // The partition queues hold the consumer: dropped first, then the
        // consumer, which leaves the group.
        lock(&self.shared.queues).clear();
    }

    /// Serves commands and, while a fetch is under way, the group's events
    /// and records; then sleeps until woken if there is nothing to do.
    /// False when the thread must stop.
    ///
    /// Outside a fetch the consumer's queue is left alone, as a blocked
    /// application leaves it: an actor that stops fetching for longer than
    /// `max.poll.interval.ms` makes the member leave the group, and the
    /// next fetch reports it.
    fn round(&mut self) -> bool {
        if !self.serve_commands() {
            return false;
        }
        let Some((max, deadline)) = lock(&self.shared.fetch)
            .as_ref()
            .map(|f| (f.max, f.deadline))
        else {
            self.shared.signal.wait(IDLE_SLICE);
            return true;
        };
        self.serve_events();
        if lock(&self.shared.fetch).is_none() {
            return true; // answered by a revocation, or failed
        }
        let taken = self.take(max);
        let now = Instant::now();
        if taken > 0 || !lock(&self.shared.events).is_empty() || now >= deadline {
            self.shared.answer(None);
            return true;
        }
        self.shared
            .signal
            .wait(deadline.saturating_duration_since(now).min(IDLE_SLICE));
        true
    }

    /// Handles a command outside a fetch; false when the thread must stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Fetch(fetch) => *lock(&self.shared.fetch) = Some(fetch),
            Command::Wake => self.shared.answer(None),
            Command::Hold(tps, held) => hold(&self.consumer, tps, held),
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

    /// Serves the group's events waiting in the consumer's queue: its
    /// rebalance callbacks run here. It polls that queue at least once,
    /// which tells librdkafka the application is alive
    /// (`max.poll.interval.ms`; polling a partition's queue does not).
    fn serve_events(&mut self) {
        for i in 0..EVENTS_PER_ROUND {
            if i > 0 && self.main.len() == 0 {
                return;
            }
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    let record = Arc::new(to_record(&message, &mut self.names));
                    lock(&self.shared.strays).push_back(record);
                }
                Some(Err(e)) if left_group(&e) => self.fail_left_group(&e),
                Some(Err(e)) => self.warn(&e),
                None => {}
            }
        }
    }

    /// Moves records to the fetch's, strays first, then from the
    /// partitions' queues, until it has `max`; returns how many it has.
    fn take(&mut self, max: usize) -> usize {
        let mut records = lock(&self.shared.records);
        {
            let mut strays = lock(&self.shared.strays);
            let n = strays.len().min(max.saturating_sub(records.len()));
            records.extend(strays.drain(..n));
        }
        let errors = lock(&self.shared.queues).take(&mut records, max, &mut self.names);
        for e in &errors {
            self.warn(e);
        }
        records.len()
    }

    /// A consumer error that leaves the member in its group: logged.
    fn warn(&self, e: &KafkaError) {
        tracing::warn!(group = %self.shared.group, error = %e, "consumer error");
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
}

fn left_group(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::PollExceeded)
}
