//! `kafkactor retries` and `kafkactor delays`: what waits in a group's
//! retry topic (records, parked keys, when the next is due) and in the
//! delay buckets (records, and when they fall due), per partition.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{partitions, Ended, Out};
use crate::broker::BrokerBackend;
use crate::buckets::Delays;
use crate::envelope::{header, now_ms, Record};
use crate::error::{Error, Result};

/// Most records read from one partition to describe its backlog.
const MOST: usize = 100_000;

#[derive(Debug, clap::Args)]
pub(crate) struct Retries {
    /// The subscription's group.
    #[arg(long)]
    group: String,
    /// Its topics (repeatable): their retry topics are `<topic>.<group>.retry`.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DelayBacklog {
    /// The buckets' topic prefix (`Delays::topic_prefix`).
    #[arg(long)]
    prefix: Option<String>,
    /// The Republisher's group (`Delays::group`).
    #[arg(long)]
    group: Option<String>,
    /// The buckets' lengths, when not the default ones (e.g. `1s,5s,30s`).
    #[arg(long, value_delimiter = ',', value_parser = super::duration)]
    buckets: Vec<std::time::Duration>,
}

/// One partition's backlog: records from the group's position to the end.
struct Backlog {
    partition: usize,
    committed: Option<i64>,
    end: i64,
    records: Vec<Record>,
}

/// The backlog of every partition of `topic` for `group` (at most
/// [`MOST`] records read of each).
async fn backlog(
    backend: &Arc<dyn BrokerBackend>,
    group: &str,
    topic: &str,
) -> Result<Vec<Backlog>> {
    partitions(backend, topic).await?;
    let marks = backend.watermarks(topic).await?;
    let committed = backend.committed(group, topic).await?;
    let mut out = Vec::with_capacity(marks.len());
    for (p, &(low, high)) in marks.iter().enumerate() {
        let at = committed.get(p).copied().flatten();
        let from = crate::broker::position(&committed, p, low);
        let records = if high > from {
            backend.read_range(topic, p as i32, from, MOST).await?
        } else {
            Vec::new()
        };
        out.push(Backlog {
            partition: p,
            committed: at,
            end: high,
            records,
        });
    }
    Ok(out)
}

/// The earliest and latest of header `name` (ms since the Unix epoch,
/// positive) among `records`.
fn span_of(records: &[Record], name: &str) -> (Option<i64>, Option<i64>) {
    // A record that only follows its parked key is due at once (0).
    let times = records
        .iter()
        .filter_map(|r| r.headers.get_str(name).and_then(|t| t.parse::<i64>().ok()))
        .filter(|&t| t > 0);
    times.fold((None, None), |(lo, hi), t| {
        (
            Some(lo.map_or(t, |l: i64| l.min(t))),
            Some(hi.map_or(t, |h: i64| h.max(t))),
        )
    })
}

/// Seconds from now until `at` (ms since the Unix epoch); negative: past.
fn seconds_until(at: Option<i64>) -> Value {
    at.map_or(Value::Null, |at| json!((at - now_ms()) as f64 / 1000.0))
}

impl Retries {
    pub(crate) async fn run(self, backend: &Arc<dyn BrokerBackend>, out: Out) -> Result<Ended> {
        let mut rows = Vec::new();
        for topic in &self.topics {
            let retry = crate::topics::retry(topic, &self.group);
            if backend.partitions(&retry).await?.is_none() {
                return Err(Error::Config(format!(
                    "no retry topic `{retry}`: group `{}` does not retry `{topic}` through one",
                    self.group
                )));
            }
            for b in backlog(backend, &self.group, &retry).await? {
                let keys: HashSet<Option<&[u8]>> =
                    b.records.iter().map(|r| r.key.as_deref()).collect();
                let (next_due, _) = span_of(&b.records, header::NOT_BEFORE);
                rows.push(json!({
                    "topic": topic,
                    "retry_topic": retry,
                    "partition": b.partition,
                    "committed": b.committed,
                    "end": b.end,
                    "records": b.records.len(),
                    "parked_keys": keys.len(),
                    "next_due_in_seconds": seconds_until(next_due),
                }));
            }
        }
        let total: u64 = rows.iter().filter_map(|r| r["records"].as_u64()).sum();
        let value = json!({ "group": self.group, "records": total, "partitions": rows });
        out.print(&value, || {
            let mut text = format!("group {}: {total} records in the retry path\n", self.group);
            text += "topic  partition  records  parked-keys  next-due-in-s\n";
            for r in &rows {
                text += &format!(
                    "{}  {}  {}  {}  {}\n",
                    r["topic"].as_str().unwrap_or_default(),
                    r["partition"],
                    r["records"],
                    r["parked_keys"],
                    r["next_due_in_seconds"]
                );
            }
            text
        });
        Ok(Ended::Done)
    }
}

impl DelayBacklog {
    pub(crate) async fn run(self, backend: &Arc<dyn BrokerBackend>, out: Out) -> Result<Ended> {
        let mut delays = Delays::default();
        if let Some(prefix) = &self.prefix {
            delays = delays.topic_prefix(prefix);
        }
        if let Some(group) = &self.group {
            delays = delays.group(group);
        }
        if !self.buckets.is_empty() {
            delays = delays.buckets(self.buckets.clone());
        }
        let plan = delays.plan()?;
        let group = delays.group_name().to_string();
        let mut rows = Vec::new();
        for topic in plan.topics() {
            if backend.partitions(&topic).await?.is_none() {
                continue; // never used
            }
            let backlogs = backlog(backend, &group, &topic).await?;
            let records: Vec<Record> = backlogs.into_iter().flat_map(|b| b.records).collect();
            let (first, last) = span_of(&records, header::DELIVER_AT);
            rows.push(json!({
                "bucket": topic,
                "records": records.len(),
                "first_due_in_seconds": seconds_until(first),
                "last_due_in_seconds": seconds_until(last),
            }));
        }
        let total: u64 = rows.iter().filter_map(|r| r["records"].as_u64()).sum();
        let value = json!({ "group": group, "records": total, "buckets": rows });
        out.print(&value, || {
            let mut text = format!("{total} delayed records waiting (group {group})\n");
            text += "bucket  records  first-due-in-s  last-due-in-s\n";
            for r in &rows {
                text += &format!(
                    "{}  {}  {}  {}\n",
                    r["bucket"].as_str().unwrap_or_default(),
                    r["records"],
                    r["first_due_in_seconds"],
                    r["last_due_in_seconds"]
                );
            }
            text
        });
        Ok(Ended::Done)
    }
}
