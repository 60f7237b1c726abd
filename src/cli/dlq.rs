//! `kafkactor dlq`: a dead-letter topic's records listed, one shown, and
//! all or some replayed (a [`Replay`] with a progress bar, stopped at a
//! record boundary by Ctrl-C).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{partitions, render, Ended, Out};
use crate::broker::{Broker, BrokerBackend};
use crate::envelope::{header, Record};
use crate::error::{Error, Result};
use crate::replay::{Replay, ReplayReport};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Dlq {
    /// Lists the dead letters: where each is, why it failed, where it came from.
    List {
        topic: String,
        /// At most this many, from the oldest of each partition.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Shows one dead letter: headers and payload, decoded.
    Show {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// Sends dead letters back to their topics: resumable under its name,
    /// up to the end the topic had when it started, each once.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    topic: String,
    /// Sends them to this topic instead of their `x-original-topic`.
    #[arg(long)]
    to: Option<String>,
    /// At most this many records a second.
    #[arg(long)]
    rate: Option<f64>,
    /// At most this many records sent or parked.
    #[arg(long)]
    limit: Option<u64>,
    /// Counts what would be sent and parked; writes and commits nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only records whose `x-error-kind` is one of these (repeatable:
    /// rejected, retries-exhausted, decode, ...).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Only records whose `x-error-reason` contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Only records that failed at or after this time (RFC 3339, or ms
    /// since the Unix epoch).
    #[arg(long, value_parser = time)]
    since: Option<SystemTime>,
    /// Only records that failed before this time.
    #[arg(long, value_parser = time)]
    until: Option<SystemTime>,
    /// Parks a record replayed this many times already.
    #[arg(long, default_value_t = 3)]
    max_replays: u32,
    /// The run's name: its progress is kept under it (default: one derived
    /// from the selection, so the same command resumes).
    #[arg(long)]
    name: Option<String>,
}

impl Dlq {
    pub(crate) async fn run(
        self,
        broker: &Broker,
        backend: &Arc<dyn BrokerBackend>,
        out: Out,
    ) -> Result<Ended> {
        match self {
            Dlq::List { topic, limit } => list(backend, &topic, limit, out).await,
            Dlq::Show {
                topic,
                partition,
                offset,
            } => show(backend, &topic, partition, offset, out).await,
            Dlq::Replay(args) => args.run(broker, out).await,
        }
    }
}

async fn list(
    backend: &Arc<dyn BrokerBackend>,
    topic: &str,
    limit: usize,
    out: Out,
) -> Result<Ended> {
    let n = partitions(backend, topic).await?;
    let mut records = Vec::new();
    for p in 0..n {
        records.extend(backend.read_range(topic, p, 0, limit).await?);
    }
    records.sort_by_key(|r| (failed_at(r), r.partition, r.offset));
    records.truncate(limit);
    let rows: Vec<Value> = records.iter().map(summary).collect();
    out.print(&json!({ "topic": topic, "dead_letters": rows }), || {
        let mut text = String::from("partition  offset  failed-at  kind  from  key  reason\n");
        for r in &rows {
            text += &format!(
                "{}  {}  {}  {}  {}  {}  {}\n",
                r["partition"],
                r["offset"],
                r["failed_at"],
                r["kind"].as_str().unwrap_or("-"),
                r["original_topic"].as_str().unwrap_or("-"),
                r["key"].as_str().unwrap_or("-"),
                r["reason"].as_str().unwrap_or("-"),
            );
        }
        text
    });
    Ok(Ended::Done)
}

/// One dead letter in a line: where, when, why, from where.
fn summary(r: &Record) -> Value {
    let failure = r.dead_lettered();
    let failure = failure.as_ref();
    json!({
        "partition": r.partition,
        "offset": r.offset,
        "failed_at": failed_at(r),
        "kind": failure.map(|f| &f.kind_name),
        "reason": failure.map(|f| &f.reason),
        "original_topic": failure.and_then(|f| f.original_topic.as_ref()),
        "replays": failure.map_or(0, |f| f.replays),
        "key": r.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
    })
}

fn failed_at(r: &Record) -> i64 {
    r.dead_lettered()
        .and_then(|f| f.failed_at_ms)
        .unwrap_or(r.timestamp_ms)
}

async fn show(
    backend: &Arc<dyn BrokerBackend>,
    topic: &str,
    partition: i32,
    offset: i64,
    out: Out,
) -> Result<Ended> {
    let n = partitions(backend, topic).await?;
    if !(0..n).contains(&partition) {
        return Err(Error::Config(format!(
            "`{topic}` has partitions 0 to {}, not {partition}",
            n - 1
        )));
    }
    let record = backend
        .read_range(topic, partition, offset, 1)
        .await?
        .into_iter()
        .find(|r| r.offset == offset)
        .ok_or_else(|| {
            Error::Config(format!(
                "no record at {topic} [{partition}] offset {offset}"
            ))
        })?;
    out.print(&render::record(&record), || render::record_text(&record));
    Ok(Ended::Done)
}

impl ReplayArgs {
    /// The replay the arguments ask for, under its name.
    fn replay(&self) -> Replay {
        let mut replay = Replay::from(self.topic.as_str())
            .name(self.name.clone().unwrap_or_else(|| self.derived_name()))
            .max_replays(self.max_replays)
            .failed_between(self.since, self.until);
        if let Some(to) = &self.to {
            replay = replay.to(to.as_str());
        }
        if let Some(rate) = self.rate {
            replay = replay.rate(rate);
        }
        if let Some(limit) = self.limit {
            replay = replay.limit(limit);
        }
        if self.dry_run {
            replay = replay.dry_run();
        }
        let (kinds, reason, key) = (self.kinds.clone(), self.reason.clone(), self.key.clone());
        if kinds.is_empty() && reason.is_none() && key.is_none() {
            return replay;
        }
        replay.filter(move |r| {
            let header = |name| r.headers.get_str(name).unwrap_or_default();
            (kinds.is_empty() || kinds.iter().any(|k| k == header(header::ERROR_KIND)))
                && reason
                    .as_deref()
                    .is_none_or(|text| header(header::ERROR_REASON).contains(text))
                && key
                    .as_deref()
                    .is_none_or(|key| r.key.as_deref() == Some(key.as_bytes()))
        })
    }

    /// A name for the selection: the same command line resumes the same run.
    fn derived_name(&self) -> String {
        let mut hasher = rustc_hash::FxHasher::default();
        (
            &self.to,
            &self.kinds,
            &self.reason,
            &self.key,
            self.since.map(crate::publish::epoch_ms_rounded_up),
            self.until.map(crate::publish::epoch_ms_rounded_up),
        )
            .hash(&mut hasher);
        format!("cli-{:016x}", hasher.finish())
    }

    async fn run(self, broker: &Broker, out: Out) -> Result<Ended> {
        let replay = self.replay();
        let name = self.name.clone().unwrap_or_else(|| self.derived_name());
        let run = replay.start(broker).await?;
        let bar = indicatif::ProgressBar::new(run.progress().remaining);
        if out.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} dead letters [{elapsed}] {per_sec} {msg}",
            )
            .expect("a valid template"),
        );
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut cancelled = false;
        let control = run.control();
        let finished = run.finished();
        tokio::pin!(finished);
        let report = loop {
            tokio::select! {
                report = &mut finished => break report?,
                _ = &mut interrupted, if !cancelled => {
                    cancelled = true;
                    bar.set_message("stopping at a record boundary");
                    control.cancel();
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let progress = control.progress();
                    bar.set_position(progress.sent + progress.parked + progress.skipped);
                }
            }
        };
        bar.finish_and_clear();
        let value = report_json(&report, &self.topic, &name);
        out.print(&value, || report_text(&report, &self.topic, &name));
        if report.cancelled {
            eprintln!(
                "interrupted: {} records left; the same command (run `{name}`) resumes where this one stopped",
                report.remaining
            );
            return Ok(Ended::Interrupted);
        }
        Ok(Ended::Done)
    }
}

fn report_json(report: &ReplayReport, topic: &str, name: &str) -> Value {
    json!({
        "topic": topic,
        "run": name,
        "group": report.group,
        "matched": report.matched,
        "sent": report.sent,
        "parked": report.parked,
        "skipped": report.skipped,
        "remaining": report.remaining,
        "dry_run": report.dry_run,
        "cancelled": report.cancelled,
        "limit_reached": report.limit_reached,
    })
}

fn report_text(report: &ReplayReport, topic: &str, name: &str) -> String {
    let verb = if report.dry_run { "would send" } else { "sent" };
    format!(
        "{topic} (run `{name}`): {verb} {}, parked {}, passed over {}, left {}\n",
        report.sent, report.parked, report.skipped, report.remaining
    )
}

/// RFC 3339 (`2026-12-07T10:00:00Z`) or milliseconds since the Unix epoch.
fn time(s: &str) -> std::result::Result<SystemTime, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(SystemTime::from)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time or epoch milliseconds: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_or_say_why() {
        assert_eq!(
            time("1000"),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(
            time("1970-01-01T00:00:02Z"),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(2))
        );
        assert!(time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
