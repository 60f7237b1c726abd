//! Configuration from a file and the environment: the brokers an
//! application (and the `kafkactor` command) connects to, by name. See
//! [`Config`]; tests in `tests.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Profile};
use serde::Deserialize;

use crate::broker::Broker;
use crate::error::{Error, Result};

/// The file [`Config::load`] reads, in the working directory.
pub(crate) const FILE: &str = "kafkactor.toml";

/// The environment variable naming the profile to select.
pub(crate) const PROFILE_VAR: &str = "KAFKACTOR_PROFILE";

/// Setting names whose values are hidden when the configuration is shown.
const SECRET_PARTS: [&str; 5] = ["password", "secret", "jaas", "token", "key"];

/// The configuration of an application: its brokers, by name, from a file
/// and the environment.
///
/// ```toml
/// # kafkactor.toml
/// [default.brokers.main]
/// bootstrap = "127.0.0.1:9092"          # Apache Kafka
/// topic_partitions = 6                  # of the topics kafkactor creates
/// [default.brokers.main.settings]       # librdkafka settings, passed through
/// "security.protocol" = "SASL_SSL"
/// "sasl.password" = "..."
///
/// [default.brokers.local]               # no bootstrap: the embedded broker
/// partitions = 3
///
/// [production.brokers.main]             # a profile: over `default`
/// bootstrap = "kafka-1.prod:9092,kafka-2.prod:9092"
/// ```
///
/// Layers, each over the one before: the `default` profile of the file,
/// the selected profile of the file (`KAFKACTOR_PROFILE`, or the one asked
/// for), then `KAFKACTOR_BROKERS__<NAME>__<KEY>` environment variables
/// (`KAFKACTOR_BROKERS__MAIN__BOOTSTRAP=kafka:9092`). An unknown key, a
/// value of the wrong type, a missing file, a table outside a profile or a
/// broker name not defined is an [`Error::Config`] naming the key and
/// where it came from. Shown ([`Display`](std::fmt::Display)), the
/// configuration hides the values of settings that look secret
/// (passwords, secrets, keys, tokens, JAAS configurations).
///
/// ```no_run
/// # fn main() -> Result<(), kafkactor::Error> {
/// let config = kafkactor::Config::load()?;
/// let app = kafkactor::Kafkactor::builder().broker(config.broker("main")?);
/// # let _ = app; Ok(()) }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    brokers: BTreeMap<String, BrokerConfig>,
    /// Where it was read from, for messages.
    #[serde(skip)]
    source: String,
}

/// One broker of a [`Config`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrokerConfig {
    /// Apache Kafka's bootstrap servers; absent: the embedded broker.
    bootstrap: Option<String>,
    /// The embedded broker's partitions per topic.
    partitions: Option<i32>,
    /// Partitions of the topics kafkactor creates on Kafka.
    topic_partitions: Option<i32>,
    /// librdkafka settings, passed through to every Kafka client.
    #[serde(default)]
    settings: BTreeMap<String, Setting>,
}

/// A librdkafka setting's value as a file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Setting {
    Text(String),
    Number(i64),
    Flag(bool),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Text(s) => f.write_str(s),
            Setting::Number(n) => write!(f, "{n}"),
            Setting::Flag(b) => write!(f, "{b}"),
        }
    }
}

impl Config {
    /// `kafkactor.toml` in the working directory (when there is one) in
    /// the profile `KAFKACTOR_PROFILE` names (`default` otherwise), with
    /// the environment over it.
    pub fn load() -> Result<Config> {
        let file = Path::new(FILE);
        Config::load_from(file.exists().then_some(file), None)
    }

    /// `file` (which must exist) in the profile `KAFKACTOR_PROFILE` names
    /// (`default` otherwise), with the environment over it.
    pub fn from_file(file: impl AsRef<Path>) -> Result<Config> {
        Config::load_from(Some(file.as_ref()), None)
    }

    /// `file` (when given: it must exist) in `profile` (when given;
    /// otherwise the one `KAFKACTOR_PROFILE` names, or `default`), with the
    /// environment over it.
    pub fn load_from(file: Option<&Path>, profile: Option<&str>) -> Result<Config> {
        let profile = match profile {
            Some(p) => Profile::new(p),
            None => Profile::from_env_or(PROFILE_VAR, Profile::Default),
        };
        let mut figment = Figment::new();
        let mut source = String::from("the environment");
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::Config(format!(
                    "configuration file {} not found",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(PathBuf::from(file)).nested());
            source = format!("{} and the environment", file.display());
        }
        // Only the variables of this configuration (KAFKACTOR_BROKERS, the
        // command's address, and KAFKACTOR_PROFILE are not).
        let env = Env::prefixed("KAFKACTOR_")
            .filter(|key| key.as_str().to_ascii_lowercase().starts_with("brokers__"))
            .split("__")
            .global();
        let figment = figment.merge(env);
        if let Some(misplaced) = figment
            .profiles()
            .find(|p| p.as_str() == "brokers" || p.as_str() == "settings")
        {
            return Err(Error::Config(format!(
                "[{misplaced}] at the top of {}: a file's tables are profiles, \
                 write [default.{misplaced}...] (or [<profile>.{misplaced}...])",
                file.map_or_else(|| "the file".to_string(), |f| f.display().to_string())
            )));
        }
        let mut config: Config = figment
            .select(profile.clone())
            .extract()
            .map_err(|e| Error::Config(describe(e)))?;
        config.source = format!("{source} (profile {profile})");
        for (name, broker) in &config.brokers {
            broker.check(name, &config.source)?;
        }
        Ok(config)
    }

    /// The names of the brokers defined.
    pub fn broker_names(&self) -> impl Iterator<Item = &str> {
        self.brokers.keys().map(String::as_str)
    }

    /// The broker named `name`, with its settings.
    pub fn broker(&self, name: &str) -> Result<Broker> {
        let Some(config) = self.brokers.get(name) else {
            let defined: Vec<&str> = self.broker_names().collect();
            return Err(Error::Config(format!(
                "broker {name:?} is not defined in {} (defined: {})",
                self.source,
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            )));
        };
        config.broker()
    }
}

impl BrokerConfig {
    /// Refuses what cannot make a broker, naming the key.
    fn check(&self, name: &str, source: &str) -> Result<()> {
        let key = |k: &str| format!("brokers.{name}.{k} in {source}");
        for (k, v) in [
            ("partitions", self.partitions),
            ("topic_partitions", self.topic_partitions),
        ] {
            if v.is_some_and(|v| v < 1) {
                return Err(Error::Config(format!("{}: must be at least 1", key(k))));
            }
        }
        match &self.bootstrap {
            Some(b) if b.trim().is_empty() => {
                Err(Error::Config(format!("{}: empty", key("bootstrap"))))
            }
            Some(_) if self.partitions.is_some() => Err(Error::Config(format!(
                "{}: only for the embedded broker (this one has a bootstrap)",
                key("partitions")
            ))),
            None if !self.settings.is_empty() || self.topic_partitions.is_some() => {
                Err(Error::Config(format!(
                    "{}: only for Apache Kafka (this one has no bootstrap)",
                    key(if self.settings.is_empty() {
                        "topic_partitions"
                    } else {
                        "settings"
                    })
                )))
            }
            _ => Ok(()),
        }
    }

    fn broker(&self) -> Result<Broker> {
        match &self.bootstrap {
            Some(bootstrap) => kafka(bootstrap, self),
            None => Broker::memory_with_partitions(self.partitions.unwrap_or(3)),
        }
    }
}

#[cfg(feature = "kafka")]
fn kafka(bootstrap: &str, config: &BrokerConfig) -> Result<Broker> {
    let broker = config
        .settings
        .iter()
        .fold(Broker::kafka(bootstrap), |b, (k, v)| {
            b.set(k, v.to_string())
        });
    Ok(match config.topic_partitions {
        Some(n) => broker.topic_partitions(n),
        None => broker,
    })
}

#[cfg(not(feature = "kafka"))]
fn kafka(_: &str, _: &BrokerConfig) -> Result<Broker> {
    Err(Error::Config(
        "a broker with a bootstrap needs kafkactor's `kafka` feature".into(),
    ))
}

/// A figment error as one message per failure, each with its key and
/// where its value came from.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the value of setting `key` is hidden when shown.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_PARTS.iter().any(|part| key.contains(part))
}

/// The effective configuration, as TOML, secrets hidden.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# from {}", self.source)?;
        for (name, b) in &self.brokers {
            writeln!(f, "[brokers.{name}]")?;
            if let Some(bootstrap) = &b.bootstrap {
                writeln!(f, "bootstrap = {bootstrap:?}")?;
            }
            if let Some(p) = b.partitions {
                writeln!(f, "partitions = {p}")?;
            }
            if let Some(p) = b.topic_partitions {
                writeln!(f, "topic_partitions = {p}")?;
            }
            if !b.settings.is_empty() {
                writeln!(f, "[brokers.{name}.settings]")?;
                for (k, v) in &b.settings {
                    let v = if is_secret(k) {
                        "***".to_string()
                    } else {
                        v.to_string()
                    };
                    writeln!(f, "{k:?} = {v:?}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
