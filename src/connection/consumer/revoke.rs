//! Giving revoked partitions back once their work is done (or their drain
//! timeout passed): the consumer drops what it still has of them, then
//! they are committed (with their outputs, for a transactional
//! subscription) and released. A reader told which partitions are being
//! revoked ([`Revoking`]) may give up the records of them it has not
//! started ([`GivenUp`]): records of retry partitions waiting for their due
//! time do not hold the revocation (and the group's rebalance) back.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::transaction::{commit_keeping, Taken, Writes};
use super::ConsumerConnection;
use crate::broker::ConsumerClient;
use crate::connection::protocol::{GivenUp, Released, Revoking};
use crate::envelope::TopicPartition;
use crate::error::Result;

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
    /// Tells the reader which partitions are being revoked, so that it may
    /// give up what of them it has not started.
    pub(super) fn announce_revoking(&mut self, partitions: Vec<TopicPartition>) {
        if partitions.is_empty() {
            return;
        }
        if let Some((reader, _)) = (self.reader)() {
            reader.revoking.do_send(Revoking { partitions });
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
        let ready = self.revokes_ready(force);
        if ready.is_empty() {
            return;
        }
        let (offsets, taken) = self.remove_revoked(&ready);
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
        ctx.wait(release_and_commit(client, released, ready, writes, offsets).into_actor(self));
        self.after_progress();
    }

    /// The revoked partitions to give back now: those idle, and, when
    /// `force`, those whose drain deadline passed.
    fn revokes_ready(&self, force: bool) -> Vec<TopicPartition> {
        let deadline = self.settings.drain_timeout;
        self.partitions
            .iter()
            .filter(|(_, p)| match p.revoking_since {
                Some(since) => p.is_idle() || (force && since.elapsed() >= deadline),
                None => false,
            })
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Forgets the `ready` partitions, their credit returned: the offsets
    /// to commit of them, and what the records below those published.
    fn remove_revoked(&mut self, ready: &[TopicPartition]) -> (Vec<(TopicPartition, i64)>, Taken) {
        let deadline = self.settings.drain_timeout;
        let mut offsets = Vec::new();
        let mut taken = Vec::new();
        for tp in ready {
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
        (offsets, taken)
    }
}

/// Gives the `ready` partitions back: tells the consumer (`released`) and
/// waits until it dropped what it had of them, commits their `offsets`
/// (with their outputs, `writes`), then releases them.
async fn release_and_commit(
    client: Arc<dyn ConsumerClient>,
    released: Option<Recipient<Released>>,
    ready: Vec<TopicPartition>,
    writes: Option<Writes>,
    offsets: Vec<(TopicPartition, i64)>,
) {
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

impl Handler<GivenUp> for ConsumerConnection {
    type Result = ();

    /// The reader will not start the records of these revoked partitions
    /// from the offsets given: the revocation stops waiting for them, and
    /// the partition is committed below them (its next owner reads them).
    fn handle(&mut self, msg: GivenUp, ctx: &mut Context<Self>) {
        for (tp, from) in msg.0 {
            let Some(p) = self.partitions.get_mut(&tp) else {
                continue;
            };
            if p.revoking_since.is_none() {
                continue;
            }
            if let Some(w) = p.watermark.as_mut() {
                self.in_flight -= w.give_up_from(from);
            }
        }
        self.settings.in_flight.set(self.in_flight as i64);
        self.finish_revokes(false, ctx);
        self.after_progress();
    }
}
