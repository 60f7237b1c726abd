//! Commits of the [`ConsumerConnection`]: the committable position of
//! each partition (its watermark), periodic commits, completions, and
//! giving revoked partitions back once their work is done.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use super::{ConsumerConnection, Partition};
use crate::connection::protocol::{Completed, Released};
use crate::envelope::{OutgoingRecord, TopicPartition};

/// A partition's held outputs, by the offset of the record that made them.
type Outputs = BTreeMap<i64, Vec<OutgoingRecord>>;

impl ConsumerConnection {
    /// Commits within a commit interval from now, unless already scheduled:
    /// an idle subscription has no timer running.
    pub(super) fn schedule_commit(&mut self, ctx: &mut Context<Self>) {
        if self.commit_scheduled || self.stopping {
            return;
        }
        self.commit_scheduled = true;
        ctx.run_later(self.settings.commit_interval, |act, ctx| {
            act.commit_scheduled = false;
            act.commit(ctx);
        });
    }

    pub(super) fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            // One at a time: try again once this one is done.
            self.schedule_commit(ctx);
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let offsets = self.committable(|p| p.revoking_since.is_none());
        if offsets.is_empty() {
            return;
        }
        self.committing = true;
        let transactional = self.settings.transactional;
        let outputs = if transactional {
            self.take_outputs(&offsets)
        } else {
            Vec::new()
        };
        let commit = if transactional {
            let records = outputs
                .iter()
                .flat_map(|(_, by_offset)| by_offset.values().flatten().cloned())
                .collect();
            client.commit_transaction(records, offsets.clone())
        } else {
            client.commit(offsets.clone())
        };
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.committing = false;
            match result {
                Ok(()) => {
                    tracing::trace!(group = %act.group(), ?offsets, "committed");
                    act.mark_committed(&offsets)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed; retrying next interval");
                    // Written again, in the next transaction.
                    act.put_outputs_back(outputs);
                    act.schedule_commit(ctx);
                }
            }
        }));
    }

    /// Takes what the handlers of the records below each offset published.
    fn take_outputs(
        &mut self,
        offsets: &[(TopicPartition, i64)],
    ) -> Vec<(TopicPartition, Outputs)> {
        let mut taken = Vec::new();
        for (tp, offset) in offsets {
            if let Some(p) = self.partitions.get_mut(tp) {
                let later = p.outputs.split_off(offset);
                let below = std::mem::replace(&mut p.outputs, later);
                if !below.is_empty() {
                    taken.push((tp.clone(), below));
                }
            }
        }
        taken
    }

    fn put_outputs_back(&mut self, outputs: Vec<(TopicPartition, Outputs)>) {
        for (tp, below) in outputs {
            if let Some(p) = self.partitions.get_mut(&tp) {
                p.outputs.extend(below);
            }
        }
    }

    pub(super) fn committable(
        &self,
        filter: impl Fn(&Partition) -> bool,
    ) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| filter(p))
            .filter_map(|(tp, p)| {
                p.watermark
                    .as_ref()
                    .and_then(|w| w.to_commit())
                    .map(|o| (tp.clone(), o))
            })
            .collect()
    }

    pub(super) fn mark_committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(w) = self
                .partitions
                .get_mut(tp)
                .and_then(|p| p.watermark.as_mut())
            {
                w.committed(*o);
            }
        }
    }

    /// Commits and releases revoked partitions whose work is done (or, when
    /// `force`, whose drain deadline passed: their unfinished records will be
    /// read again by the new owner).
    pub(super) fn finish_revokes(&mut self, force: bool, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let deadline = self.settings.drain_timeout;
        let ready: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, p)| match p.revoking_since {
                Some(since) => {
                    p.watermark.as_ref().is_none_or(|w| w.is_idle())
                        || (force && since.elapsed() >= deadline)
                }
                None => false,
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut offsets = Vec::new();
        let mut written = Vec::new();
        for tp in &ready {
            if let Some(p) = self.partitions.remove(tp) {
                if let Some(w) = p.watermark {
                    if !w.is_idle() && !deadline.is_zero() {
                        tracing::warn!(group = %self.group(), partition = %tp, unfinished = w.in_flight(),
                            drain_timeout = ?deadline,
                            "drain timeout passed: giving a revoked partition up with unfinished records (the next owner reads them again)");
                    }
                    self.in_flight -= w.in_flight();
                    if let Some(o) = w.to_commit() {
                        offsets.push((tp.clone(), o));
                        // What the records below it published (the
                        // partition is gone: taken, not copied).
                        written.extend(
                            p.outputs
                                .into_iter()
                                .take_while(|(offset, _)| *offset < o)
                                .flat_map(|(_, records)| records),
                        );
                    }
                }
            }
        }
        tracing::debug!(group = %self.group(), ?ready, "releasing revoked partitions");
        let released = (self.dispatcher)().map(|(target, _)| target.released);
        let transactional = self.settings.transactional;
        // The consumer drops what it still has of them; then commit before
        // release, in this order, so the next owner starts exactly after
        // what this member finished and nothing of them is handled here
        // meanwhile.
        ctx.wait(
            async move {
                if let Some(released) = released {
                    let partitions = ready.clone();
                    // A consumer being restarted has nothing of them.
                    let _ = released.send(Released { partitions }).await;
                }
                if !offsets.is_empty() {
                    let committed = if transactional {
                        client.commit_transaction(written, offsets).await
                    } else {
                        client.commit(offsets).await
                    };
                    if let Err(e) = committed {
                        tracing::warn!(error = %e, "commit on revoke failed");
                    }
                }
                if let Err(e) = client.release(&ready) {
                    tracing::warn!(error = %e, "release failed");
                }
            }
            .into_actor(self),
        );
        self.after_progress();
    }
}

impl Handler<Completed> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, msg: Completed, ctx: &mut Context<Self>) {
        // What handlers published, kept before their records complete (a
        // commit takes it with the records' offsets).
        for (record, written) in msg.1 {
            if let Some(p) = self.partitions.get_mut(&record.topic_partition()) {
                p.outputs.insert(record.offset, written);
            }
        }
        let mut revoking = false;
        let mut records = msg.0.iter().peekable();
        while let Some(first) = records.next() {
            // One partition lookup per run of records of one partition.
            let tp = first.topic_partition();
            let mut partition = self.partitions.get_mut(&tp);
            let mut record = Some(first);
            while let Some(r) = record {
                if let Some(w) = partition.as_mut().and_then(|p| p.watermark.as_mut()) {
                    if w.complete(r.offset).is_some() {
                        self.in_flight -= 1;
                    }
                }
                record = records.next_if(|next| {
                    next.partition == tp.partition && Arc::ptr_eq(&next.topic, &tp.topic)
                });
            }
            revoking |= partition.is_some_and(|p| p.revoking_since.is_some());
        }
        self.settings.in_flight.set(self.in_flight as i64);
        if revoking {
            self.finish_revokes(false, ctx);
        }
        self.schedule_commit(ctx);
        self.after_progress();
    }
}
