//! Shared helpers for the behaviour tests: a probe handler that records what
//! it handled, and polling with deadlines (never bare sleeps).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use kafkactor::prelude::*;
use serde::{Deserialize, Serialize};

/// The test message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: u64,
    pub key: String,
    /// Position among the orders of `key`, from 0.
    pub seq: u64,
}

/// One handling of a record, as the probe saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub key: String,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    pub attempt: u32,
    pub app: &'static str,
}

/// Decides the outcome of a delivery.
pub type Behaviour = Arc<dyn Fn(&Delivery<Order>) -> Outcome + Send + Sync>;

/// Everything the probes handled, in handling order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Ids acknowledged, with how many times each was handled.
    pub fn counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for s in self.0.lock().unwrap().iter() {
            *counts.entry(s.id).or_default() += 1;
        }
        counts
    }

    pub fn push(&self, seen: Seen) {
        self.0.lock().unwrap().push(seen);
    }
}

/// A handler actor that logs every delivery and answers what `behaviour` says.
pub struct Probe {
    pub log: Log,
    pub behaviour: Behaviour,
    pub app: &'static str,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Delivery<Order>> for Probe {
    type Result = Outcome;

    fn handle(&mut self, d: Delivery<Order>, _: &mut Context<Self>) -> Outcome {
        let outcome = (self.behaviour)(&d);
        let m = d.message();
        self.log.push(Seen {
            id: m.id,
            key: m.key.clone(),
            seq: m.seq,
            partition: d.partition(),
            offset: d.offset(),
            attempt: d.attempt(),
            app: self.app,
        });
        outcome
    }
}

/// A factory of probes sharing `log`.
pub fn probe(log: &Log, app: &'static str, behaviour: Behaviour) -> impl Fn() -> Probe + 'static {
    let log = log.clone();
    move || Probe {
        log: log.clone(),
        behaviour: behaviour.clone(),
        app,
    }
}

/// Acknowledges everything.
pub fn ack() -> Behaviour {
    Arc::new(|_| Outcome::Ack)
}

/// `n` orders over `keys` keys (`k-0` ..), ids from 0, `seq` counting per key.
pub fn orders(n: u64, keys: u64) -> Vec<Order> {
    (0..n)
        .map(|id| Order {
            id,
            key: format!("k-{}", id % keys),
            seq: id / keys,
        })
        .collect()
}

/// Publishes `orders` keyed by their key, in order, waiting for each.
pub async fn publish_all(app: &App, topic: &str, orders: &[Order]) {
    let producer = app.producer();
    for o in orders {
        producer
            .send(Publish::to(topic).key(&o.key).message(o).unwrap())
            .await
            .expect("producer mailbox")
            .expect("publish");
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout`
/// passes; panics with `what` on timeout.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`eventually`] for an async condition.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that, per key, `seq` strictly increases in handling order (for
/// acknowledged deliveries: each key's records were handled once, in order).
pub fn assert_key_order(seen: &[Seen]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for s in seen {
        if let Some(&prev) = last.get(s.key.as_str()) {
            assert!(
                s.seq > prev,
                "key {} handled seq {} after seq {} (offset {})",
                s.key,
                s.seq,
                prev,
                s.offset
            );
        }
        last.insert(&s.key, s.seq);
    }
}

/// A unique name for topics and groups of one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
