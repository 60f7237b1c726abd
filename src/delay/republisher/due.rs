//! What is due when: a bucket record's delay headers read ([`due_of`]),
//! each bucket partition's queue of records not yet released, and the
//! timers and holds that wait for the next one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::buckets::{DelayHeaders, Plan};
use crate::connection::consumer::Hold;
use crate::envelope::{now_ms, Record, TopicPartition};

use super::{Republisher, Target, HOLD_MIN, PREFETCH_LEAD};

/// What a bucket record says about itself.
pub(crate) struct Timing {
    /// When it may be delivered, ms since the Unix epoch.
    pub(super) deliver_at: i64,
    /// When it leaves its bucket, ms since the Unix epoch.
    pub(super) released_at: i64,
    pub(super) destination: Arc<str>,
    pub(super) partition: Option<i32>,
}

/// Reads the delay headers of a bucket record, or says what is wrong with them.
pub(crate) fn due_of(plan: &Plan, record: &Record) -> std::result::Result<Timing, String> {
    let DelayHeaders {
        deliver_at,
        destination,
        partition,
    } = DelayHeaders::read(&record.headers)?;
    let length = plan.length_of(&record.topic).unwrap_or_default();
    let released_at = record
        .timestamp_ms
        .max(0)
        .saturating_add(length.as_millis() as i64)
        .min(deliver_at);
    Ok(Timing {
        deliver_at,
        released_at,
        destination,
        partition,
    })
}

/// The queue of one bucket partition: records read and not yet released.
#[derive(Default)]
pub(super) struct BucketQueue {
    pub(super) records: VecDeque<Arc<Record>>,
    /// The timer for the head's release, and that time.
    pub(super) wakeup: Option<(i64, SpawnHandle)>,
}

impl Republisher {
    /// Releases the partition's records from the head on, up to the first
    /// that must stay in its bucket longer.
    pub(super) fn release(&mut self, tp: &TopicPartition, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        loop {
            let Some(queue) = self.queues.get_mut(tp) else {
                return;
            };
            let Some(head) = queue.records.front() else {
                return;
            };
            let target = match due_of(&self.plan, head) {
                Err(reason) => Target::DeadLetter(reason),
                Ok(due) if due.released_at > now => {
                    self.wait_for(tp.clone(), due.released_at, now, ctx);
                    return;
                }
                Ok(due) => {
                    let destination = Target::Destination {
                        topic: due.destination,
                        partition: due.partition,
                    };
                    if due.deliver_at <= now {
                        destination
                    } else {
                        let remaining = Duration::from_millis((due.deliver_at - now) as u64);
                        match self.plan.next_bucket(remaining) {
                            Some(bucket) => Target::Bucket(bucket.topic.clone()),
                            None => {
                                let record = queue.records.pop_front().expect("head");
                                self.released += 1;
                                self.due
                                    .insert((due.deliver_at, self.released), (record, destination));
                                self.arm_due_timer(ctx);
                                continue;
                            }
                        }
                    }
                }
            };
            let record = queue.records.pop_front().expect("head");
            self.write(record, target, ctx);
        }
    }

    /// Keeps the partition's head until `released_at`: the connection
    /// pauses the partition and one timer wakes us then.
    pub(super) fn wait_for(
        &mut self,
        tp: TopicPartition,
        released_at: i64,
        now: i64,
        ctx: &mut Context<Self>,
    ) {
        let queue = self.queues.entry(tp.clone()).or_default();
        if queue
            .wakeup
            .as_ref()
            .is_some_and(|(at, _)| *at == released_at)
        {
            return;
        }
        if let Some((_, handle)) = queue.wakeup.take() {
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis((released_at - now) as u64);
        if wait >= HOLD_MIN + PREFETCH_LEAD {
            if let Some(connection) = self.connection.get() {
                connection.do_send(Hold {
                    partition: tp.clone(),
                    until: Instant::now() + (wait - PREFETCH_LEAD),
                });
            }
        }
        let woken = tp.clone();
        let handle = ctx.run_later(wait, move |act, ctx| {
            if let Some(q) = act.queues.get_mut(&woken) {
                q.wakeup = None;
            }
            act.release(&woken, ctx);
        });
        self.queues.get_mut(&tp).expect("queue").wakeup = Some((released_at, handle));
    }

    /// One timer, for the earliest record held until it is due.
    pub(super) fn arm_due_timer(&mut self, ctx: &mut Context<Self>) {
        let Some((&(first, _), _)) = self.due.first_key_value() else {
            return;
        };
        if let Some((at, handle)) = self.due_timer {
            if at <= first {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis((first - now_ms()).max(0) as u64);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.due_timer = None;
            act.deliver_due(ctx);
        });
        self.due_timer = Some((first, handle));
    }

    /// Writes every held record that is due, in due order.
    pub(super) fn deliver_due(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (record, target) = entry.remove();
            self.write(record, target, ctx);
        }
        self.arm_due_timer(ctx);
    }
}
