//! `ConsumerConnection`: one consumer-group member per subscription.
//!
//! Role: polls the broker, hands records to its Dispatcher in batches under
//! credit-based flow control (at most `max_in_flight` records read and not
//! finished; past it the partitions are paused rather than buffered), keeps
//! the commit watermark of every owned partition and commits only offsets
//! whose records are all finished, periodically, on revocation and on shutdown.
//!
//! Messages: [`Completed`] (records whose fate is final) and `Shutdown` (stop
//! polling, drain in-flight records within the drain timeout, commit, leave the group).
//!
//! Owns: the consumer client (group membership), the watermarks.
//!
//! Restart: a new incarnation joins the group afresh and resumes from the
//! committed offsets; records the old one had in flight are read again (their
//! late completions, addressed to the old incarnation, are dropped), so
//! nothing is lost and the only duplicates are those records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor_actors::{fail, Shutdown};
use tokio::sync::oneshot;

use crate::broker::{BrokerBackend, ConsumerClient, ConsumerConfig, ConsumerEvent};
use crate::consumer::watermark::Watermark;
use crate::envelope::{Record, TopicPartition};

/// A batch of records for a dispatcher, with where to report completions.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver {
    pub(crate) records: Vec<Arc<Record>>,
    pub(crate) from: Recipient<Completed>,
}

/// Records whose fate is final (acked, or durably dead-lettered).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Completed(pub(crate) Vec<(TopicPartition, i64)>);

/// Resolves the current dispatcher of the subscription.
pub(crate) type DispatchTarget = Box<dyn Fn() -> Option<Recipient<Deliver>>>;

const POLL_TIMEOUT: Duration = Duration::from_secs(1);
const REDELIVER_DELAY: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Partition {
    watermark: Option<Watermark>,
    revoking_since: Option<Instant>,
}

pub(crate) struct ConsumerConnection {
    backend: Arc<dyn BrokerBackend>,
    config: ConsumerConfig,
    dispatcher: DispatchTarget,
    client: Option<Arc<dyn ConsumerClient>>,
    partitions: HashMap<TopicPartition, Partition>,
    in_flight: usize,
    max_in_flight: usize,
    paused: bool,
    polling: Option<(SpawnHandle, usize)>,
    committing: bool,
    commit_interval: Duration,
    drain_timeout: Duration,
    stopping: bool,
    drained: Option<oneshot::Sender<()>>,
    backlog: Vec<Arc<Record>>,
}

impl ConsumerConnection {
    pub(crate) fn new(
        backend: Arc<dyn BrokerBackend>,
        config: ConsumerConfig,
        dispatcher: DispatchTarget,
        max_in_flight: usize,
        commit_interval: Duration,
        drain_timeout: Duration,
    ) -> Self {
        ConsumerConnection {
            backend,
            config,
            dispatcher,
            client: None,
            partitions: HashMap::new(),
            in_flight: 0,
            max_in_flight,
            paused: false,
            polling: None,
            committing: false,
            commit_interval,
            drain_timeout,
            stopping: false,
            drained: None,
            backlog: Vec::new(),
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.polling.is_some() {
            return;
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let credit = self.max_in_flight.saturating_sub(self.in_flight);
        let handle = ctx.spawn(client.poll(credit, POLL_TIMEOUT).into_actor(self).map(
            |result, act, ctx| {
                act.polling = None;
                match result {
                    Ok(events) => act.on_events(events, ctx),
                    Err(e) if !act.stopping => {
                        fail(ctx, format!("poll failed: {e}"));
                        return;
                    }
                    Err(_) => return,
                }
                act.poll(ctx);
            },
        ));
        self.polling = Some((handle, credit));
    }

    fn on_events(&mut self, events: Vec<ConsumerEvent>, ctx: &mut Context<Self>) {
        for event in events {
            match event {
                ConsumerEvent::Revoked(tps) => {
                    let now = Instant::now();
                    for tp in tps {
                        self.partitions.entry(tp).or_default().revoking_since = Some(now);
                    }
                    ctx.run_later(self.drain_timeout, |act, ctx| act.finish_revokes(true, ctx));
                    self.finish_revokes(false, ctx);
                }
                ConsumerEvent::Assigned(tps) => {
                    tracing::debug!(group = %self.config.group, ?tps, "assigned");
                    for tp in tps {
                        self.partitions.insert(tp, Partition::default());
                    }
                }
                ConsumerEvent::Records(records) => {
                    let mut batch = Vec::with_capacity(records.len());
                    for record in records {
                        let tp = record.topic_partition();
                        let Some(p) = self.partitions.get_mut(&tp) else {
                            continue;
                        };
                        if p.revoking_since.is_some() {
                            continue;
                        }
                        let wm = p
                            .watermark
                            .get_or_insert_with(|| Watermark::new(record.offset));
                        if wm.track(record.offset) {
                            self.in_flight += 1;
                            batch.push(Arc::new(record));
                        }
                    }
                    self.deliver(batch, ctx);
                }
            }
        }
        if self.in_flight >= self.max_in_flight && !self.paused {
            self.set_paused(true);
        }
    }

    fn deliver(&mut self, mut batch: Vec<Arc<Record>>, ctx: &mut Context<Self>) {
        if !self.backlog.is_empty() {
            let mut all = std::mem::take(&mut self.backlog);
            all.append(&mut batch);
            batch = all;
        }
        if batch.is_empty() {
            return;
        }
        match (self.dispatcher)() {
            Some(target) if target.connected() => target.do_send(Deliver {
                records: batch,
                from: ctx.address().recipient(),
            }),
            _ => {
                // The dispatcher is restarting: keep the records and try again shortly.
                self.backlog = batch;
                ctx.run_later(REDELIVER_DELAY, |act, ctx| act.deliver(Vec::new(), ctx));
            }
        }
    }

    fn set_paused(&mut self, paused: bool) {
        let Some(client) = &self.client else { return };
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
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

    fn commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        let Some(client) = self.client.clone() else { return };
        let offsets = self.committable(|p| p.revoking_since.is_none());
        if offsets.is_empty() {
            return;
        }
        self.committing = true;
        ctx.spawn(client.commit(offsets.clone()).into_actor(self).map(
            move |result, act, _| {
                act.committing = false;
                match result {
                    Ok(()) => act.mark_committed(&offsets),
                    Err(e) => tracing::warn!(error = %e, "commit failed; retrying next interval"),
                }
            },
        ));
    }

    fn committable(&self, filter: impl Fn(&Partition) -> bool) -> Vec<(TopicPartition, i64)> {
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

    fn mark_committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, o) in offsets {
            if let Some(w) = self.partitions.get_mut(tp).and_then(|p| p.watermark.as_mut()) {
                w.committed(*o);
            }
        }
    }

    /// Commits and releases revoked partitions whose work is done (or, when
    /// `force`, whose drain deadline passed: their unfinished records will be
    /// read again by the new owner).
    fn finish_revokes(&mut self, force: bool, ctx: &mut Context<Self>) {
        let Some(client) = self.client.clone() else { return };
        let deadline = self.drain_timeout;
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
        for tp in &ready {
            if let Some(p) = self.partitions.remove(tp) {
                if let Some(w) = p.watermark {
                    self.in_flight -= w.in_flight();
                    if let Some(o) = w.to_commit() {
                        offsets.push((tp.clone(), o));
                    }
                }
            }
        }
        tracing::debug!(group = %self.config.group, ?ready, "releasing revoked partitions");
        ctx.spawn(
            async move {
                if !offsets.is_empty() {
                    if let Err(e) = client.commit(offsets).await {
                        tracing::warn!(error = %e, "commit on revoke failed");
                    }
                }
                if let Err(e) = client.release(&ready) {
                    tracing::warn!(error = %e, "release failed");
                }
            }
            .into_actor(self),
        );
        self.after_progress(ctx);
    }

    /// Re-evaluates flow control and shutdown after records finished.
    fn after_progress(&mut self, ctx: &mut Context<Self>) {
        if self.paused && self.in_flight <= self.max_in_flight / 2 {
            self.set_paused(false);
        }
        if let Some((handle, 0)) = self.polling {
            if self.in_flight < self.max_in_flight {
                ctx.cancel_future(handle);
                self.polling = None;
                self.poll(ctx);
            }
        }
        if self.stopping && self.in_flight == 0 {
            if let Some(tx) = self.drained.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Actor for ConsumerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.backend.consumer(self.config.clone()) {
            Ok(client) => self.client = Some(client),
            Err(e) => {
                fail(ctx, format!("cannot join group {}: {e}", self.config.group));
                return;
            }
        }
        ctx.run_interval(self.commit_interval, |act, ctx| act.commit(ctx));
        self.poll(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(client) = self.client.take() {
            client.close();
        }
    }
}

impl Handler<Completed> for ConsumerConnection {
    type Result = ();

    fn handle(&mut self, msg: Completed, ctx: &mut Context<Self>) {
        for (tp, offset) in msg.0 {
            if let Some(w) = self.partitions.get_mut(&tp).and_then(|p| p.watermark.as_mut()) {
                if w.complete(offset) {
                    self.in_flight -= 1;
                }
            }
        }
        self.finish_revokes(false, ctx);
        self.after_progress(ctx);
    }
}

impl Handler<Shutdown> for ConsumerConnection {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some((handle, _)) = self.polling.take() {
            ctx.cancel_future(handle);
        }
        let (tx, rx) = oneshot::channel();
        if self.in_flight == 0 {
            let _ = tx.send(());
        } else {
            self.drained = Some(tx);
        }
        let drain = self.drain_timeout;
        let group = self.config.group.clone();
        Box::pin(
            async move {
                if tokio::time::timeout(drain, rx).await.is_err() {
                    tracing::warn!(%group, "drain timeout on shutdown; unfinished records will be read again");
                }
            }
            .into_actor(self)
            .then(|(), act, _| {
                let offsets = act.committable(|_| true);
                let client = act.client.clone();
                async move {
                    match client {
                        Some(c) if !offsets.is_empty() => c.commit(offsets).await,
                        _ => Ok(()),
                    }
                }
                .into_actor(act)
            })
            .map(|result, act, ctx| {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "final commit failed");
                }
                if let Some(client) = act.client.take() {
                    client.close();
                }
                ctx.stop();
            }),
        )
    }
}
