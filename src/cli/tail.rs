//! `kafkactor tail TOPIC`: a topic's records as they arrive (or from its
//! beginning), decoded by content type, headers shown; until Ctrl-C, a
//! count of records, or a quiet spell.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{duration, partitions, render, Ended, Out};
use crate::broker::BrokerBackend;
use crate::error::Result;

/// How often the partitions are read again while nothing arrives.
const POLL: Duration = Duration::from_millis(200);

/// Most records read from one partition at a time.
const BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub(crate) struct Tail {
    topic: String,
    /// Starts at the topic's beginning instead of its end.
    #[arg(long)]
    from_beginning: bool,
    /// Stops after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Stops once nothing arrived for this long (e.g. `5s`).
    #[arg(long, value_parser = duration)]
    idle: Option<Duration>,
}

impl Tail {
    pub(crate) async fn run(self, backend: &Arc<dyn BrokerBackend>, out: Out) -> Result<Ended> {
        let n = partitions(backend, &self.topic).await?;
        let marks = backend.watermarks(&self.topic).await?;
        let mut next: Vec<i64> = (0..n as usize)
            .map(|p| {
                let (low, high) = marks.get(p).copied().unwrap_or((0, 0));
                if self.from_beginning {
                    low
                } else {
                    high
                }
            })
            .collect();
        let mut shown = 0u64;
        let mut last = Instant::now();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let mut any = false;
            for (p, from) in next.iter_mut().enumerate() {
                let records = backend
                    .read_range(&self.topic, p as i32, *from, BATCH)
                    .await?;
                for record in records {
                    *from = record.offset + 1;
                    any = true;
                    out.print(&render::record(&record), || render::record_text(&record));
                    shown += 1;
                    if self.count.is_some_and(|count| shown >= count) {
                        return Ok(Ended::Done);
                    }
                }
            }
            if any {
                last = Instant::now();
                continue;
            }
            if self.idle.is_some_and(|idle| last.elapsed() >= idle) {
                return Ok(Ended::Done);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut interrupted => return Ok(Ended::Interrupted),
            }
        }
    }
}
