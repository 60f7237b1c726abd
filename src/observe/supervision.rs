//! Counts the supervision tree's restarts and escalations
//! (`kafkactor_actor_restarts_total`, `kafkactor_escalations_total`) from
//! its lifecycle events.

use kafkactor_actors::{Events, SupervisionEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::metrics::Metrics;

/// The task counting the events; stops counting when dropped.
#[derive(Debug)]
pub(crate) struct Counting(JoinHandle<()>);

impl Drop for Counting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts counting the events published to `events` from now on.
pub(crate) fn count_events(events: &Events, metrics: &Metrics) -> Counting {
    let mut rx = events.subscribe();
    let metrics = metrics.clone();
    Counting(actix_rt::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => count(&metrics, &event),
                // Events missed while the task was behind are not counted.
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "supervision events missed by the metrics")
                }
                Err(RecvError::Closed) => return,
            }
        }
    }))
}

fn count(metrics: &Metrics, event: &SupervisionEvent) {
    let c = metrics.collectors();
    match event {
        SupervisionEvent::Restarted {
            supervisor, child, ..
        } => c.restarts.with_label_values(&[supervisor, child]).inc(),
        SupervisionEvent::Escalated { supervisor, .. } => {
            c.escalations.with_label_values(&[supervisor]).inc()
        }
        _ => {}
    }
}
