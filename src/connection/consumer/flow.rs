//! Flow control of the [`ConsumerConnection`]: credit (at most
//! `max_in_flight` records read and not finished), pausing every partition
//! past it instead of buffering, and holds (one partition paused until a
//! time, for the Republisher's buckets).

use std::time::Instant;

use actix::prelude::*;

use super::{ConsumerConnection, MAX_BATCH};
use crate::envelope::TopicPartition;

/// How many free places a subscription's poll waits for before it takes
/// records again (`ConsumerSettings::refill`). Taking records as soon as
/// one place frees up would hand them over one or two at a time, each with
/// the whole cost of a poll and a batch; a window never refilled before it
/// is half empty would stop reading while half of it waits on slow keys.
/// A poll takes records once half the window, or this many places, are
/// free.
pub(crate) const REFILL: usize = 64;

/// Pauses one partition until `until`: the Republisher's head record of it
/// is not due before then. Later holds replace earlier ones; a partition
/// given up meanwhile forgets its hold.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Hold {
    pub(crate) partition: TopicPartition,
    pub(crate) until: Instant,
}

impl ConsumerConnection {
    /// How many records the next poll may take: none until enough places
    /// are free (`refill`, see [`REFILL`]), then every free place, at most
    /// a batch.
    pub(super) fn credit(&self) -> usize {
        self.credit_with(self.counted_in_flight())
    }

    /// [`credit`](Self::credit) with `counted` records in flight.
    fn credit_with(&self, counted: usize) -> usize {
        let max = self.settings.max_in_flight;
        let free = max.saturating_sub(counted);
        if free >= (max / 2).clamp(1, self.settings.refill) {
            free.min(MAX_BATCH)
        } else {
            0
        }
    }

    /// In-flight records that count against `max_in_flight`: those of held
    /// partitions do not. A held partition (the Republisher's bucket whose
    /// head is not due) takes no more records, and what it already gave
    /// must not stop the other partitions: a 2 s delay would wait behind
    /// twenty-minute ones for the length of their bucket.
    pub(super) fn counted_in_flight(&self) -> usize {
        if !self.partitions.values().any(|p| p.held_until.is_some()) {
            return self.in_flight;
        }
        let held: usize = self
            .partitions
            .values()
            .filter(|p| p.held_until.is_some())
            .filter_map(|p| p.watermark.as_ref())
            .map(|w| w.in_flight())
            .sum();
        self.in_flight - held
    }

    pub(super) fn set_paused(&mut self, paused: bool) {
        let Some(client) = &self.client else { return };
        // Held partitions stay paused until their hold ends.
        let owned: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, p)| paused || p.held_until.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        let result = if paused {
            client.pause(&owned)
        } else {
            client.resume(&owned)
        };
        match result {
            Ok(()) => self.paused = paused,
            Err(e) => tracing::warn!(error = %e, paused, "pause/resume failed"),
        }
    }

    /// Re-evaluates flow control and shutdown after records finished.
    pub(super) fn after_progress(&mut self) {
        let counted = self.counted_in_flight();
        if self.paused && counted <= self.settings.max_in_flight / 2 {
            self.set_paused(false);
        }
        if let Some((_, 0)) = self.polling {
            if !self.woken && self.credit_with(counted) > 0 {
                // Its answer comes at once and the next poll has credit.
                if let Some(client) = &self.client {
                    client.wake();
                }
                self.woken = true;
            }
        }
        if self.stopping && self.in_flight == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Handler<Hold> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, Hold { partition, until }: Hold, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.revoking_since.is_none())
        else {
            return;
        };
        if p.held_until.is_none() {
            if let Err(e) = client.hold(std::slice::from_ref(&partition), true) {
                tracing::warn!(error = %e, %partition, "pause for a hold failed");
                return;
            }
        }
        p.held_until = Some(until);
        // What it holds no longer counts: a poll without credit may go on.
        self.after_progress();
        ctx.run_later(
            until.saturating_duration_since(Instant::now()),
            move |act, _| {
                let Some(p) = act.partitions.get_mut(&partition) else {
                    return;
                };
                if p.held_until != Some(until) {
                    return; // held again meanwhile, or already released
                }
                p.held_until = None;
                if let Some(client) = &act.client {
                    if let Err(e) = client.hold(std::slice::from_ref(&partition), false) {
                        tracing::warn!(error = %e, %partition, "resume after a hold failed");
                    }
                }
            },
        );
    }
}
