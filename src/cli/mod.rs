//! The `kafkactor` command: what the people who operate kafkactor
//! services do against Kafka, from a shell or a script.
//!
//! ```text
//! kafkactor [--brokers ADDR | --config FILE [--profile P] [--broker NAME]]
//!           [-X key=value].. [--json] <command>
//!   dlq list TOPIC             the dead letters, with why each failed
//!   dlq show TOPIC P OFFSET    one dead letter, headers and payload
//!   dlq replay TOPIC ..        send them back (see `Replay`), resumable
//!   lag --group G --topic T..  per partition: records and seconds behind
//!   retries --group G --topic T..  the retry path: records, parked keys, next due
//!   delays                     the delay buckets: records, when they fall due
//!   tail TOPIC                 records as they arrive, decoded
//! ```
//!
//! Every command answers in text, or with `--json` in one JSON document
//! (`tail`: one per line). Exit codes: 0 done, 1 failed (the message says
//! why: an unknown topic or group, an unreachable broker, a write that
//! failed), 2 bad usage (a malformed filter or time), 130 interrupted
//! (Ctrl-C; a replay stops at a record boundary and says how to resume).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::broker::{Broker, BrokerBackend};
use crate::config::Config;
use crate::error::{Error, Result};

mod asyncapi;
mod backlog;
mod dlq;
mod lag;
mod render;
mod tail;

/// Operate kafkactor services on Apache Kafka: dead letters, lag, tails.
#[derive(Debug, Parser)]
#[command(
    name = "kafkactor",
    version,
    about = "Operate kafkactor services on Apache Kafka: dead letters, lag, tails"
)]
struct Cli {
    /// Kafka's bootstrap servers (over the configuration; without either,
    /// 127.0.0.1:9092).
    #[arg(long, env = "KAFKACTOR_BROKERS", global = true)]
    brokers: Option<String>,
    /// The application's configuration file (default: `kafkactor.toml`
    /// when the working directory has one), read as the application reads
    /// it: profile, then `KAFKACTOR_BROKERS__<NAME>__<KEY>` variables.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// The profile of the configuration (default: `KAFKACTOR_PROFILE`, or
    /// `default`).
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Which broker of the configuration (default: its only one).
    #[arg(long, global = true)]
    broker: Option<String>,
    /// A librdkafka client setting, `key=value` (repeatable), e.g.
    /// `-X security.protocol=SSL`.
    #[arg(short = 'X', value_parser = setting, global = true)]
    settings: Vec<(String, String)>,
    /// Answers as JSON (one document; `tail`: one per line).
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the broker to answer at all.
    #[arg(long, default_value = "10s", value_parser = duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead-letter topics: list, show, replay.
    #[command(subcommand)]
    Dlq(dlq::Dlq),
    /// How far a group is behind on its topics, per partition.
    Lag(lag::Lag),
    /// Prints a topic's records as they arrive, decoded by content type.
    Tail(tail::Tail),
    /// What waits in a group's retry topics: records, parked keys, next due.
    Retries(backlog::Retries),
    /// What waits in the delay buckets, and when it falls due.
    Delays(backlog::DelayBacklog),
    /// Writes a running application's AsyncAPI document (from its HTTP
    /// endpoint; needs no broker).
    Asyncapi(asyncapi::Fetch),
}

/// How a command ended, beyond success.
pub(crate) enum Ended {
    Done,
    /// Ctrl-C: what was under way finished first.
    Interrupted,
}

/// Runs the command line of this process; the process's exit code.
#[doc(hidden)]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let system = actix::System::new();
    match system.block_on(run(cli)) {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Interrupted) => ExitCode::from(130),
        Err(Error::Config(why)) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<Ended> {
    let cli = match cli.command {
        Command::Asyncapi(command) => return command.run(cli.timeout).await,
        _ => cli,
    };
    let broker = cli
        .settings
        .iter()
        .fold(broker_of(&cli)?, |broker, (key, value)| {
            broker.set(key, value)
        });
    // Refused settings are said here.
    let backend = broker.backend()?;
    backend.probe(cli.timeout).await.map_err(|e| {
        Error::Unavailable(format!(
            "no answer from {} within {:?}: {e}",
            backend.describe(),
            cli.timeout
        ))
    })?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Dlq(command) => command.run(&broker, &backend, out).await,
        Command::Lag(command) => command.run(&backend, out).await,
        Command::Tail(command) => command.run(&backend, out).await,
        Command::Retries(command) => command.run(&backend, out).await,
        Command::Delays(command) => command.run(&backend, out).await,
        Command::Asyncapi(_) => unreachable!("answered before the broker is asked"),
    }
}

/// The Kafka the command works against: `--brokers` (or
/// `KAFKACTOR_BROKERS`), else a broker of the application's configuration,
/// else 127.0.0.1:9092.
fn broker_of(cli: &Cli) -> Result<Broker> {
    if let Some(brokers) = &cli.brokers {
        return Ok(Broker::kafka(brokers.clone()));
    }
    let default_file = std::path::Path::new(crate::config::FILE);
    let file = match &cli.config {
        Some(file) => Some(file.as_path()),
        None => default_file.exists().then_some(default_file),
    };
    if file.is_none() && cli.broker.is_none() && cli.profile.is_none() {
        return Ok(Broker::kafka("127.0.0.1:9092"));
    }
    let config = Config::load_from(file, cli.profile.as_deref())?;
    let name = match &cli.broker {
        Some(name) => name.clone(),
        None => {
            let names: Vec<&str> = config.broker_names().collect();
            match names[..] {
                [only] => only.to_string(),
                _ => {
                    return Err(Error::Config(format!(
                        "the configuration defines {} brokers ({}): say which with --broker",
                        names.len(),
                        names.join(", ")
                    )))
                }
            }
        }
    };
    let broker = config.broker(&name)?;
    if broker.is_memory() {
        return Err(Error::Config(format!(
            "broker {name:?} is the embedded broker (no bootstrap): the command works against Apache Kafka"
        )));
    }
    Ok(broker)
}

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `text` when not asked for JSON.
    pub(crate) fn print(self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            print!("{}", text());
        }
    }
}

/// The partitions of `topic`, or an error naming it when it does not exist.
pub(crate) async fn partitions(backend: &Arc<dyn BrokerBackend>, topic: &str) -> Result<i32> {
    backend
        .partitions(topic)
        .await?
        .ok_or_else(|| Error::Config(format!("no topic `{topic}` on {}", backend.describe())))
}

/// `key=value`.
fn setting(s: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not key=value"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// `500ms`, `10s`, `5m`, `2h` or a number of seconds.
pub(crate) fn duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (500ms, 10s, 5m, 2h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_settings_parse_or_say_why() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert!(duration("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(duration("soon").unwrap_err().contains("not a duration"));
        assert_eq!(setting("a=b"), Ok(("a".into(), "b".into())));
        assert!(setting("ab").is_err());
    }
}
