//! What a poll brings the [`ConsumerConnection`]: revocations,
//! assignments and records, each handled by a step of its own.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::{ConsumerConnection, Partition};
use crate::broker::ConsumerEvent;
use crate::connection::protocol::Released;
use crate::connection::watermark::Watermark;
use crate::envelope::{Record, TopicPartition};
use crate::observe::trace::{batch_span, Batch};

impl ConsumerConnection {
    pub(super) fn on_events(&mut self, events: Vec<ConsumerEvent>, ctx: &mut Context<Self>) {
        for event in events {
            match event {
                ConsumerEvent::Revoked(tps) => self.on_revoked(tps, ctx),
                ConsumerEvent::Assigned(tps) => self.on_assigned(tps, ctx),
                ConsumerEvent::Records(records) => self.on_records(records, ctx),
            }
        }
        if self.counted_in_flight() >= self.settings.max_in_flight && !self.paused {
            self.set_paused(true);
        }
    }

    /// Partitions taken away: each given back once its records are
    /// finished, or when the drain timeout passes.
    fn on_revoked(&mut self, tps: Vec<TopicPartition>, ctx: &mut Context<Self>) {
        tracing::debug!(group = %self.group(), ?tps, "revoked");
        self.forget_rebuilds(&tps);
        let now = Instant::now();
        for tp in &tps {
            if let Some(p) = self.partitions.get_mut(tp) {
                p.revoking_since = Some(now);
            }
        }
        self.announce_revoking(tps);
        ctx.run_later(self.settings.drain_timeout, |act, ctx| {
            act.finish_revokes(true, ctx)
        });
        self.finish_revokes(false, ctx);
    }

    /// Partitions now ours: paused at once when the others are for lack
    /// of credit.
    fn on_assigned(&mut self, tps: Vec<TopicPartition>, ctx: &mut Context<Self>) {
        tracing::debug!(group = %self.group(), ?tps, "assigned");
        if self.paused {
            if let Some(client) = &self.client {
                if let Err(e) = client.pause(&tps) {
                    tracing::warn!(error = %e, "pause of new partitions failed");
                }
            }
        }
        let mut stale = Vec::new();
        for tp in tps.iter().cloned() {
            // Assigned again without a revocation in between (a
            // member that lost its partitions): what it had of
            // the old assignment is dropped, its credit returned.
            if let Some(old) = self.partitions.insert(tp.clone(), Partition::new()) {
                self.in_flight -= old.in_flight();
                stale.push(tp);
            }
        }
        for tp in &tps {
            // Read again from where the group is.
            self.retry_read.remove(tp);
        }
        self.rebuild_parking(&tps, ctx);
        if !stale.is_empty() {
            tracing::warn!(group = %self.group(), partitions = ?stale,
                "assigned again without a revocation: their unfinished records are read again");
            if let Some((reader, _)) = (self.reader)() {
                reader.released.do_send(Released { partitions: stale });
            }
        }
    }

    /// Records polled: tracked, and those taken delivered in one batch.
    fn on_records(&mut self, records: Vec<Arc<Record>>, ctx: &mut Context<Self>) {
        let batch = self.track(records);
        let batch = self.stash_rebuilding(batch);
        let read = self.note_retry_read(&batch);
        let span = batch_span(Batch::Poll, Some(&self.settings.config.group), batch.len());
        let _entered = span.enter();
        self.deliver(batch, ctx);
        for retry in read {
            self.rebuilt(&retry, ctx);
        }
    }

    /// Tracks `records` in the watermarks of their partitions, and keeps
    /// those taken (of owned partitions not being revoked, not tracked
    /// already), in order.
    fn track(&mut self, mut records: Vec<Arc<Record>>) -> Vec<Arc<Record>> {
        // One partition lookup per run of records of one
        // partition (a batch is mostly such runs), and the
        // batch's own vector is passed on.
        let mut keep = 0;
        let mut i = 0;
        while i < records.len() {
            let (topic, partition) = (records[i].topic.clone(), records[i].partition);
            let mut end = i + 1;
            while end < records.len()
                && records[end].partition == partition
                && Arc::ptr_eq(&records[end].topic, &topic)
            {
                end += 1;
            }
            let tp = TopicPartition { topic, partition };
            if let Some(p) = self
                .partitions
                .get_mut(&tp)
                .filter(|p| p.revoking_since.is_none())
            {
                let wm = p
                    .watermark
                    .get_or_insert_with(|| Watermark::new(records[i].offset));
                for j in i..end {
                    if wm.track(records[j].offset, records[j].clone()) {
                        // Stable compaction: kept records stay in order.
                        records.swap(keep, j);
                        keep += 1;
                        self.in_flight += 1;
                    }
                }
            }
            i = end;
        }
        records.truncate(keep);
        records
    }
}
