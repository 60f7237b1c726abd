//! A transactional subscription's commits: transactions holding the
//! outputs of the records below the offsets they commit. One runs at a
//! time: a revoked partition and the final commit wait for the one under
//! way, which may hold their outputs (failed, it gives them back). A
//! transaction whose outputs the broker refuses for good is taken apart:
//! the records that published them are [`Refused`] (their fate open
//! again, the partition not committed past them) and the rest commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use kafkactor_actors::fail;

use super::ConsumerConnection;
use crate::broker::{ConsumerClient, TransactionFailed};
use crate::connection::protocol::Refused;
use crate::envelope::{OutgoingRecord, Record, TopicPartition};

/// A partition's held outputs, by the offset of the record that published
/// them, with that record.
pub(super) type Outputs = BTreeMap<i64, (Arc<Record>, Vec<OutgoingRecord>)>;

/// Outputs taken from their partitions for one transaction.
pub(super) type Taken = Vec<(TopicPartition, Outputs)>;

/// What one transaction writes: the records, and for each the partition
/// and offset of the record that published it.
#[derive(Clone)]
pub(super) struct Writes {
    pub(super) records: Vec<OutgoingRecord>,
    pub(super) sources: Vec<(TopicPartition, i64)>,
}

impl Writes {
    /// The outputs of `taken`, copied (kept to be put back on a failure).
    pub(super) fn of(taken: &Taken) -> Self {
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
pub(super) async fn commit_keeping(
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

impl ConsumerConnection {
    /// Commits `offsets` in one transaction with what the handlers of the
    /// records below them published.
    pub(super) fn commit_in_transaction(
        &mut self,
        client: Arc<dyn ConsumerClient>,
        offsets: Vec<(TopicPartition, i64)>,
        ctx: &mut Context<Self>,
    ) {
        let taken = self.take_outputs(&offsets);
        let writes = Writes::of(&taken);
        self.learn_partitions(&writes.records, ctx);
        let commit = client.commit_transaction(writes.records, offsets.clone());
        let sources = writes.sources;
        ctx.spawn(commit.into_actor(self).map(move |result, act, ctx| {
            act.transaction_ended(result, &offsets, taken, &sources, ctx);
        }));
    }

    /// The periodic transaction that wrote the outputs `taken` (each from
    /// the record at `sources`) and committed `offsets` ended with `result`.
    fn transaction_ended(
        &mut self,
        result: std::result::Result<(), TransactionFailed>,
        offsets: &[(TopicPartition, i64)],
        taken: Taken,
        sources: &[(TopicPartition, i64)],
        ctx: &mut Context<Self>,
    ) {
        let mut again = false;
        match result {
            Ok(()) => self.committed(offsets),
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
                        self.group(),
                        failed.error
                    ),
                );
                return;
            }
            Err(failed) if !failed.refused.is_empty() => {
                self.isolate(taken, sources, failed);
                // What is left commits at once.
                again = true;
            }
            Err(failed) => {
                tracing::warn!(error = %failed, "transaction failed; retrying next interval");
                // Written again, in the next transaction.
                self.put_outputs_back(taken);
                self.schedule_commit(ctx);
            }
        }
        self.commit_ended(ctx);
        if again && !self.stopping {
            self.commit(ctx);
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
    pub(super) fn take_outputs(&mut self, offsets: &[(TopicPartition, i64)]) -> Taken {
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
}
