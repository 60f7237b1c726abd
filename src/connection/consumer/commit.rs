//! Commits of the [`ConsumerConnection`]: the committable position of
//! each partition (its watermark), periodic commits, completions and the
//! final commit. A transactional subscription's commits are in
//! `transaction.rs`; giving revoked partitions back, in `revoke.rs`.

use std::future::Future;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::{self, Either};
use tokio::sync::oneshot;

use super::transaction::{commit_keeping, Writes};
use super::ConsumerConnection;
use crate::broker::ConsumerClient;
use crate::connection::protocol::Completed;
use crate::envelope::TopicPartition;
use crate::error::Result;

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
        if self.settings.transactional.is_none() {
            self.commit_plain(client, offsets, ctx);
        } else {
            self.commit_in_transaction(client, offsets, ctx);
        }
    }

    /// Commits `offsets` of a subscription that is not transactional.
    fn commit_plain(
        &mut self,
        client: Arc<dyn ConsumerClient>,
        offsets: Vec<(TopicPartition, i64)>,
        ctx: &mut Context<Self>,
    ) {
        let commit = client.commit(offsets.clone());
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(()) => act.committed(&offsets),
                Err(e) => {
                    tracing::warn!(error = %e, "commit failed; retrying next interval");
                    act.schedule_commit(ctx);
                }
            }
            act.commit_ended(ctx);
        }));
    }

    /// `offsets` were committed.
    pub(super) fn committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        tracing::trace!(group = %self.group(), ?offsets, "committed");
        self.mark_committed(offsets)
    }

    /// The commit under way ended: what waited for it goes on.
    pub(super) fn commit_ended(&mut self, ctx: &mut Context<Self>) {
        self.committing = false;
        for waiter in self.commit_done.drain(..) {
            let _ = waiter.send(());
        }
        if std::mem::take(&mut self.revokes_waiting) {
            // Those idle or past their drain deadline go now.
            self.finish_revokes(true, ctx);
        }
    }

    /// Resolves once no commit is under way.
    pub(super) fn commit_finished(&mut self) -> impl Future<Output = ()> + 'static {
        if !self.committing {
            return Either::Left(future::ready(()));
        }
        let (tx, rx) = oneshot::channel();
        self.commit_done.push(tx);
        Either::Right(async move {
            let _ = rx.await;
        })
    }

    /// The commit on shutdown: everything finished, with its outputs for a
    /// transactional subscription.
    pub(super) fn final_commit(&mut self) -> impl Future<Output = Result<()>> + 'static {
        let offsets = self.committable(|_| true);
        let client = self.client.clone();
        let writes = self.settings.transactional.is_some().then(|| {
            let taken = self.take_outputs(&offsets);
            Writes::of(&taken)
        });
        async move {
            let Some(client) = client.filter(|_| !offsets.is_empty()) else {
                return Ok(());
            };
            match writes {
                None => client.commit(offsets).await,
                Some(writes) => commit_keeping(client, writes, offsets)
                    .await
                    .map_err(|failed| failed.error),
            }
        }
    }
    pub(super) fn committable(
        &self,
        filter: impl Fn(&super::Partition) -> bool,
    ) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| filter(p))
            .filter_map(|(tp, p)| p.commit_point().map(|o| (tp.clone(), o)))
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
}

impl Handler<Completed> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, msg: Completed, ctx: &mut Context<Self>) {
        // What handlers published, kept before their records complete (a
        // commit takes it with the records' offsets).
        for (record, written) in msg.1 {
            if let Some(p) = self.partitions.get_mut(&record.topic_partition()) {
                p.outputs.insert(record.offset, (record, written));
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
                if let Some(p) = partition.as_mut() {
                    let finished = match p.watermark.as_mut() {
                        Some(w) => w.complete(r.offset).is_some(),
                        None => false,
                    };
                    // A record whose outputs were refused, settled again.
                    if finished || p.refused.remove(&r.offset).is_some() {
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
