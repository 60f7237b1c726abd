//! The Dispatcher's intake: a [`Deliver`] from the consumer connection,
//! its records admitted (through the idempotency gate, where there is one)
//! and queued on their keys' lanes.

use std::sync::Arc;

use actix::prelude::*;

use crate::connection::protocol::{Arrival, Deliver};
use crate::envelope::Record;
use crate::observe::metrics::count_runs;
use crate::observe::trace::{batch_span, Batch};
use crate::subscription::lane::Job;

use super::Dispatcher;

impl<A: Actor<Context = Context<A>>> Handler<Deliver> for Dispatcher<A> {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let fresh = match self.feed.arrival(&msg) {
            Arrival::Stale => return,
            Arrival::Current => false,
            Arrival::Fresh => true,
        };
        let span = batch_span(
            Batch::Dispatch,
            Some(&self.settings.group),
            msg.records.len(),
        );
        let _entered = span.enter();
        if fresh {
            self.new_feed(&msg, ctx);
        }
        count_runs(msg.records.iter().map(|r| &r.topic), |topic, n| {
            self.count(topic, |c| c.consumed.inc_by(n))
        });
        if self.gate.is_some() {
            return self.admit_delivered(msg.records, ctx);
        }
        if self.parking.is_some() {
            return self.queue_with_retries(msg.records, msg.incarnation, fresh, ctx);
        }
        self.queue_delivered(msg.records);
    }
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// A new connection incarnation feeds us: what the old one read is read
    /// again, so the queues, the unreported completions and the gate's
    /// copies waiting are dropped (the queued records' keys given back).
    #[inline]
    pub(super) fn new_feed(&mut self, msg: &Deliver, ctx: &mut Context<Self>) {
        let shared = self.board.clone();
        let mut board = shared.borrow_mut();
        board.feeding = Some(msg.from.clone());
        let mut abandoned = Vec::new();
        for lane in &mut board.lanes {
            if self.gate.is_some() {
                abandoned.extend(lane.queue.drain(..).map(|job| job.record));
            }
            lane.queue.clear();
        }
        self.completed.clear();
        self.outputs.clear();
        if let Some(gate) = &mut self.gate {
            // The lanes of copies that waited go on (empty).
            for i in gate.clear() {
                board.lanes[i].blocked = false;
            }
        }
        drop(board);
        for record in &abandoned {
            self.abandon(record, ctx);
        }
    }

    /// Puts delivered `records` through the gate: the lanes get them once
    /// their keys are claimed.
    #[inline]
    pub(super) fn admit_delivered(&mut self, records: Vec<Arc<Record>>, ctx: &mut Context<Self>) {
        let Some(gate) = &mut self.gate else {
            return;
        };
        for record in records {
            let stamp = self.feed.stamp(&record);
            gate.admit(&self.settings.group, record, stamp);
        }
        self.claim_waiting(ctx)
    }

    /// Puts delivered `records` of a subscription retrying through topics
    /// on their keys' lanes, or into the retry path (`retries.rs`).
    fn queue_with_retries(
        &mut self,
        records: Vec<Arc<Record>>,
        incarnation: u64,
        fresh: bool,
        ctx: &mut Context<Self>,
    ) {
        self.retries_fed(incarnation, fresh);
        let mut direct = Vec::with_capacity(records.len());
        for record in records {
            let stamp = self.feed.stamp(&record);
            if !self.take_for_retries(&record, stamp, ctx) {
                direct.push(record);
            }
        }
        self.queue_delivered(direct);
        let parked: Vec<_> = self
            .parking
            .as_ref()
            .map(|p| p.borrow().parked_partitions())
            .unwrap_or_default();
        for source in parked {
            self.check_bounds(&source);
        }
    }

    /// Puts delivered `records` on their keys' lanes, in order, and wakes
    /// the lanes with records to start.
    #[inline]
    pub(super) fn queue_delivered(&mut self, records: Vec<Arc<Record>>) {
        let mut board = self.board.borrow_mut();
        let lanes = board.lanes.len();
        let stamp = self.feed.stamper();
        for record in records {
            if record.key.is_none() {
                self.next_unkeyed = self.next_unkeyed.wrapping_add(1);
            }
            let i = self.settings.lane_of(&record, self.next_unkeyed, lanes);
            let stamp = stamp(&record);
            board.lanes[i].queue.push_back(Job {
                record,
                stamp,
                attempt: 1,
                dispatcher: self.incarnation,
                copy: false,
            });
        }
        for lane in &mut board.lanes {
            if !lane.queue.is_empty() && lane.running.is_none() && !lane.blocked {
                lane.wake();
            }
        }
    }
}
