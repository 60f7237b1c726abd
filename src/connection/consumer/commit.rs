//! Commits of the [`ConsumerConnection`]: the committable position of
//! each partition (its watermark), periodic commits, completions, giving
//! revoked partitions back once their work is done, and the final commit.
//!
//! A transactional subscription's commits are transactions holding the
//! outputs of the records below the offsets they commit. One runs at a
//! time: a revoked partition and the final commit wait for the one under
//! way, which may hold their outputs (failed, it gives them back). A
//! transaction whose outputs the broker refuses for good is taken apart:
//! the records that published them are [`Refused`] (their fate open
//! again, the partition not committed past them) and the rest commits.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::{self, Either};
use tokio::sync::oneshot;

use kafkactor_actors::fail;

use super::ConsumerConnection;
use crate::broker::{ConsumerClient, TransactionFailed};
use crate::connection::protocol::{Completed, Refused, Released};
use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::error::Result;

/// A partition's held outputs, by the offset of the record that published
/// them, with that record.
pub(super) type Outputs = BTreeMap<i64, (Arc<Record>, Vec<OutgoingRecord>)>;

/// Outputs taken from their partitions for one transaction.
type Taken = Vec<(TopicPartition, Outputs)>;

/// What one transaction writes: the records, and for each the partition
/// and offset of the record that published it.
#[derive(Clone)]
struct Writes {
    records: Vec<OutgoingRecord>,
    sources: Vec<(TopicPartition, i64)>,
}

impl Writes {
    /// The outputs of `taken`, copied (kept to be put back on a failure).
    fn of(taken: &Taken) -> Self {
        let mut writes = Writes {
            records: Vec::new(),
            sources: Vec::new(),
        };
        for (tp, outputs) in taken {
            for (offset, (_, records)) in outputs {
                writes.records.extend(records.iter().cloned());
                writes
                    .sources
                    .extend(std::iter::repeat_n((tp.clone(), *offset), records.len()));
            }
        }
        writes
    }

    /// Without the records published for the same record as a refused one,
    /// nor for any later record of its partition; `offsets` capped to
    /// match (nothing of a partition is committed past its first refused
    /// record).
    fn without_refused(
        self,
        refused: &[(usize, crate::Error)],
        offsets: &mut [(TopicPartition, i64)],
    ) -> Self {
        let mut caps: Vec<(TopicPartition, i64)> = Vec::new();
        for (i, _) in refused {
            if let Some((tp, offset)) = self.sources.get(*i) {
                match caps.iter_mut().find(|(t, _)| t == tp) {
                    Some((_, cap)) => *cap = (*cap).min(*offset),
                    None => caps.push((tp.clone(), *offset)),
                }
            }
        }
        let cap_of = |tp: &TopicPartition| caps.iter().find(|(t, _)| t == tp).map(|(_, c)| *c);
        for (tp, offset) in offsets.iter_mut() {
            if let Some(cap) = cap_of(tp) {
                *offset = (*offset).min(cap);
            }
        }
        let (records, sources) = self
            .records
            .into_iter()
            .zip(self.sources)
            .filter(|(_, (tp, offset))| cap_of(tp).is_none_or(|cap| *offset < cap))
            .unzip();
        Writes { records, sources }
    }
}

/// Writes `writes` and commits `offsets` in one transaction; when the broker
/// refuses records, once more without them and with each partition's
/// offset below its first refused record (what is not committed is read
/// again by whoever owns the partition next). For a revoked partition and
/// the final commit, which cannot wait for a record's fate to be settled.
async fn commit_keeping(
    client: Arc<dyn ConsumerClient>,
    writes: Writes,
    mut offsets: Vec<(TopicPartition, i64)>,
) -> std::result::Result<(), TransactionFailed> {
    let records = writes.records.clone();
    let failed = match client.commit_transaction(records, offsets.clone()).await {
        Err(failed) if !failed.refused.is_empty() => failed,
        other => return other,
    };
    tracing::warn!(error = %failed.error, refused = ?failed.refused,
        "outputs refused at commit: committing without them (their records are read again)");
    let writes = writes.without_refused(&failed.refused, &mut offsets);
    client.commit_transaction(writes.records, offsets).await
}

/// Backoffs between the tries of a revoked partition's commit: a broker
/// that just came back (its coordinator loading, or not found yet) takes
/// it a moment later, and a partition given up uncommitted is read again
/// by its next owner from the last commit.
const REVOKE_RETRIES: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// Commits a revoked partition's `offsets` (in a transaction with `writes`
/// when there are any), tried again a few times on failure.
async fn commit_on_revoke(
    client: Arc<dyn ConsumerClient>,
    writes: Option<Writes>,
    offsets: Vec<(TopicPartition, i64)>,
) -> Result<()> {
    let mut retries = REVOKE_RETRIES.iter();
    loop {
        let committed = match &writes {
            Some(writes) => commit_keeping(client.clone(), writes.clone(), offsets.clone())
                .await
                .map_err(|failed| failed.error),
            None => client.commit(offsets.clone()).await,
        };
        match (committed, retries.next()) {
            (Err(e), Some(delay)) => {
                tracing::debug!(error = %e, ?delay, "commit on revoke failed: trying it again");
                tokio::time::sleep(*delay).await;
            }
            (result, _) => return result,
        }
    }
}

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
            return;
        }
        let taken = self.take_outputs(&offsets);
        let writes = Writes::of(&taken);
        self.learn_partitions(&writes.records, ctx);
        let commit = client.commit_transaction(writes.records, offsets.clone());
        let sources = writes.sources;
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            let mut again = false;
            match result {
                Ok(()) => act.committed(&offsets),
                Err(failed) if failed.undetermined => {
                    // Whether its outputs are visible is unknown: written
                    // again they could be there twice, dropped they could
                    // be lost. A new incarnation reads the committed
                    // offsets afresh and handles again what they do not
                    // cover.
                    fail(
                        ctx,
                        format!(
                            "the outcome of a transaction of group {} is unknown ({}): rejoining from the committed offsets",
                            act.group(),
                            failed.error
                        ),
                    );
                    return;
                }
                Err(failed) if !failed.refused.is_empty() => {
                    act.isolate(taken, &sources, failed);
                    // What is left commits at once.
                    again = true;
                }
                Err(failed) => {
                    tracing::warn!(error = %failed, "transaction failed; retrying next interval");
                    // Written again, in the next transaction.
                    act.put_outputs_back(taken);
                    act.schedule_commit(ctx);
                }
            }
            act.commit_ended(ctx);
            if again && !act.stopping {
                act.commit(ctx);
            }
        }));
    }

    /// `offsets` were committed.
    fn committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        tracing::trace!(group = %self.group(), ?offsets, "committed");
        self.mark_committed(offsets)
    }

    /// The commit under way ended: what waited for it goes on.
    fn commit_ended(&mut self, ctx: &mut Context<Self>) {
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

    /// Takes the outputs the broker refused out of `taken` (all of their
    /// records' outputs), opens those records' fate again and hands them
    /// to the consumer; puts the rest back for the next transaction.
    fn isolate(
        &mut self,
        mut taken: Taken,
        sources: &[(TopicPartition, i64)],
        failed: TransactionFailed,
    ) {
        let mut refused = Vec::new();
        for (i, error) in failed.refused {
            let Some((tp, offset)) = sources.get(i) else {
                continue;
            };
            // Gone already when another output of the same record was refused.
            let Some((record, _)) = taken
                .iter_mut()
                .find(|(t, _)| t == tp)
                .and_then(|(_, outputs)| outputs.remove(offset))
            else {
                continue;
            };
            if let Some(p) = self.partitions.get_mut(tp) {
                if p.refused.insert(*offset, record.clone()).is_none() {
                    self.in_flight += 1;
                }
                refused.push((
                    record,
                    format!("the broker refused an output of this record at commit: {error}"),
                ));
            }
        }
        tracing::warn!(group = %self.group(), error = %failed.error, refused = refused.len(),
            "outputs refused at commit: their records are dead-lettered, the rest commits");
        self.put_outputs_back(taken);
        if refused.is_empty() {
            return;
        }
        // A consumer being restarted gets them with every unfinished record.
        if let Some((reader, _)) = (self.reader)() {
            reader.refused.do_send(Refused(refused));
        }
    }

    /// Asks the broker for the partition count of the topics among
    /// `records` not known yet (a publish to a partition a topic does not
    /// have is then refused when it is made).
    fn learn_partitions(&mut self, records: &[OutgoingRecord], ctx: &mut Context<Self>) {
        let Some(counts) = self.settings.transactional.clone() else {
            return;
        };
        for record in records {
            let topic = &record.topic;
            if counts.get(topic).is_some() || self.asking.contains(topic) {
                continue;
            }
            self.asking.insert(topic.clone());
            let (topic, counts) = (topic.clone(), counts.clone());
            let asked = self.backend.partitions(&topic);
            ctx.spawn(asked.into_actor(self).map(move |answer, act, _| {
                act.asking.remove(&topic);
                if let Ok(Some(n)) = answer {
                    counts.set(topic, n);
                }
            }));
        }
    }

    /// Takes what the handlers of the records below each offset published.
    fn take_outputs(&mut self, offsets: &[(TopicPartition, i64)]) -> Taken {
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

    fn put_outputs_back(&mut self, taken: Taken) {
        for (tp, below) in taken {
            if let Some(p) = self.partitions.get_mut(&tp) {
                p.outputs.extend(below);
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

    /// Commits and releases revoked partitions whose work is done (or, when
    /// `force`, whose drain deadline passed: their unfinished records will be
    /// read again by the new owner). Waits for a commit under way, which
    /// may hold their outputs.
    pub(super) fn finish_revokes(&mut self, force: bool, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.committing {
            self.revokes_waiting = true;
            return;
        }
        let deadline = self.settings.drain_timeout;
        let ready: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, p)| match p.revoking_since {
                Some(since) => p.is_idle() || (force && since.elapsed() >= deadline),
                None => false,
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let mut offsets = Vec::new();
        let mut taken = Vec::new();
        for tp in &ready {
            let Some(mut p) = self.partitions.remove(tp) else {
                continue;
            };
            if !p.is_idle() && !deadline.is_zero() {
                tracing::warn!(group = %self.group(), partition = %tp, unfinished = p.in_flight(),
                    drain_timeout = ?deadline,
                    "drain timeout passed: giving a revoked partition up with unfinished records (the next owner reads them again)");
            }
            self.in_flight -= p.in_flight();
            if let Some(o) = p.commit_point() {
                offsets.push((tp.clone(), o));
                // What the records below it published (the partition is
                // gone: taken, not copied).
                let _later = p.outputs.split_off(&o);
                taken.push((tp.clone(), std::mem::take(&mut p.outputs)));
            }
        }
        tracing::debug!(group = %self.group(), ?ready, "releasing revoked partitions");
        let released = (self.reader)().map(|(reader, _)| reader.released);
        let writes = self
            .settings
            .transactional
            .is_some()
            .then(|| Writes::of(&taken));
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
                    if let Err(e) = commit_on_revoke(client.clone(), writes, offsets).await {
                        tracing::warn!(error = %e, "commit on revoke failed: the next owner reads again what this member finished since its last commit");
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
