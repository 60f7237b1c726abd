//! `kafkactor lag`: how far a group is behind, per topic and partition, in
//! records and in seconds (since the oldest record it has not committed
//! was written).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{partitions, Ended, Out};
use crate::broker::BrokerBackend;
use crate::envelope::now_ms;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub(crate) struct Lag {
    /// The consumer group (a subscription's `group`).
    #[arg(long)]
    group: String,
    /// The topics it reads (repeatable).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
}

impl Lag {
    pub(crate) async fn run(self, backend: &Arc<dyn BrokerBackend>, out: Out) -> Result<Ended> {
        let mut rows = Vec::new();
        let mut committed_any = false;
        for topic in &self.topics {
            partitions(backend, topic).await?;
            let marks = backend.watermarks(topic).await?;
            let committed = backend.committed(&self.group, topic).await?;
            for (p, &(low, high)) in marks.iter().enumerate() {
                let at = committed.get(p).copied().flatten();
                committed_any |= at.is_some();
                let from = crate::broker::position(&committed, p, low);
                let behind = (high - from).max(0);
                // The oldest record not committed: how long it has waited.
                let seconds = if behind > 0 {
                    let oldest = backend.read_range(topic, p as i32, from, 1).await?;
                    oldest
                        .first()
                        .map(|r| ((now_ms() - r.timestamp_ms).max(0) as f64) / 1000.0)
                } else {
                    Some(0.0)
                };
                rows.push(json!({
                    "topic": topic,
                    "partition": p,
                    "committed": at,
                    "end": high,
                    "records": behind,
                    "seconds": seconds,
                }));
            }
        }
        if !committed_any {
            return Err(Error::Config(format!(
                "group `{}` has committed nothing on {}: is it the right group?",
                self.group,
                self.topics.join(", ")
            )));
        }
        let total: i64 = rows.iter().filter_map(|r| r["records"].as_i64()).sum();
        let value = json!({ "group": self.group, "records": total, "partitions": rows });
        out.print(&value, || text(&self.group, total, &rows));
        Ok(Ended::Done)
    }
}

fn text(group: &str, total: i64, rows: &[Value]) -> String {
    let mut out = format!("group {group}: {total} records behind\n");
    out += "topic  partition  committed  end  records  seconds\n";
    for r in rows {
        out += &format!(
            "{}  {}  {}  {}  {}  {}\n",
            r["topic"].as_str().unwrap_or_default(),
            r["partition"],
            r["committed"],
            r["end"],
            r["records"],
            r["seconds"],
        );
    }
    out
}
