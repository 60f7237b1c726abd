//! The `lineage` actor: publishes the lineage events the application's
//! taps hand it (see `observe/lineage.rs`) to the lineage topic, through
//! the application's Producer.
//!
//! Messages: none from other actors; it takes the events from the taps'
//! queue itself, up to [`BATCH`] at a time. `Shutdown` publishes what the
//! queue holds then (the subscriptions, stopped before it, made their last
//! events), then stops it.
//!
//! Owns: nothing but its turn at the queue, which outlives it (shared by
//! its incarnations, as the Producer's intake is).
//!
//! A restart: the batch being published at the failure is published or
//! lost with it (lineage is telemetry: at most once); the next incarnation
//! takes the queue where it was.

use std::sync::Arc;

use actix::prelude::*;
use kafkactor_actors::Shutdown;
use tokio::sync::{mpsc, Mutex};

use crate::observe::lineage::Event;
use crate::producer::{ProducerHandle, PublishBatch};
use crate::publish::Publish;

/// Most events published in one batch.
const BATCH: usize = 512;

/// The taps' queue, taken in turn by each incarnation of the actor.
pub(crate) type EventQueue = Arc<Mutex<mpsc::Receiver<Event>>>;

pub(crate) struct LineagePublisher {
    topic: Arc<str>,
    events: EventQueue,
    producer: ProducerHandle,
    /// The loop taking the queue, while it runs.
    running: Option<SpawnHandle>,
}

impl LineagePublisher {
    pub(crate) fn new(topic: Arc<str>, events: EventQueue, producer: ProducerHandle) -> Self {
        LineagePublisher {
            topic,
            events,
            producer,
            running: None,
        }
    }
}

impl Actor for LineagePublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (topic, events, producer) = (
            self.topic.clone(),
            self.events.clone(),
            self.producer.clone(),
        );
        self.running = Some(
            ctx.spawn(
                publish_all(topic, events, producer)
                    .into_actor(self)
                    .map(|(), _, ctx| ctx.stop()),
            ),
        );
    }
}

/// Publishes the queue's events until every tap is gone or the
/// application's Producer stops.
async fn publish_all(topic: Arc<str>, events: EventQueue, producer: ProducerHandle) {
    // Held while this incarnation runs: dropped with it, for the next.
    let mut queue = events.lock().await;
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        if !publish(&topic, &producer, &mut batch).await {
            return;
        }
    }
}

/// Publishes what the queue holds now, then returns.
async fn publish_queued(topic: Arc<str>, events: EventQueue, producer: ProducerHandle) {
    let mut queue = events.lock().await;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        if batch.is_empty() || !publish(&topic, &producer, &mut batch).await {
            return;
        }
    }
}

/// Publishes `batch` (emptied); false once the application's Producer is gone.
async fn publish(topic: &Arc<str>, producer: &ProducerHandle, batch: &mut Vec<Event>) -> bool {
    let publishes: Vec<Publish> = batch
        .drain(..)
        .filter_map(|event| {
            let key = match &event {
                Event::Published { message_id, .. } | Event::Handled { message_id, .. } => {
                    message_id.clone()
                }
            };
            let publish = Publish::to(&**topic).json().message(&event).ok()?;
            Some(match key {
                Some(key) => publish.key(key),
                None => publish,
            })
        })
        .collect();
    match producer.send_batch(PublishBatch(publishes)).await {
        Ok(outcomes) => {
            for e in outcomes.into_iter().filter_map(Result::err) {
                tracing::warn!(topic = %topic, error = %e, "a lineage event was not published");
            }
            true
        }
        Err(_) => false, // the application stopped
    }
}

impl Handler<Shutdown> for LineagePublisher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        // The loop gives the queue up; a batch it was handing to the
        // Producer may be cut (lineage is telemetry: at most once).
        if let Some(running) = self.running.take() {
            ctx.cancel_future(running);
        }
        let (topic, events, producer) = (
            self.topic.clone(),
            self.events.clone(),
            self.producer.clone(),
        );
        Box::pin(
            publish_queued(topic, events, producer)
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        )
    }
}
