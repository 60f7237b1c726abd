//! The application's AsyncAPI 3.0 document: its channels (the topics its
//! subscriptions read, their retry and dead-letter topics, the topics it
//! declares it publishes to), the operations on them (receive with the
//! consumer group, send), and its message types with their JSON Schemas
//! (through `schemars`, for the types declared with
//! [`AsyncApi::message`] or [`AsyncApi::publishes`]).
//!
//! Served at `/asyncapi` and `/asyncapi.json` by the HTTP endpoint
//! ([`AppBuilder::serve_http`](crate::AppBuilder::serve_http)) and
//! returned by [`App::asyncapi`](crate::App::asyncapi). Two message types
//! with one name (`shop::Order` and `billing::Order`) are refused at start
//! with [`Error::Config`]: the document would merge them.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::codec::{type_name_of, ContentType};
use crate::envelope::header;
use crate::error::{Error, Result};
use crate::topics;

/// What a message type's schema is made by.
type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

/// A message type declared to the document.
#[derive(Clone)]
struct Declared {
    /// Its name on the wire (the type-name header).
    name: &'static str,
    /// Its Rust path, to tell two types of one name apart.
    path: &'static str,
    schema: SchemaFn,
}

/// What the AsyncAPI document says beyond what the subscriptions show:
/// its title and version, the JSON Schemas of message types, and the
/// topics the application publishes to.
///
/// ```
/// use kafkactor::prelude::*;
/// use kafkactor::AsyncApi;
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)] struct OrderPlaced { id: u64 }
/// # #[derive(serde::Serialize, schemars::JsonSchema)] struct Invoice { order: u64 }
/// let builder = Kafkactor::builder().asyncapi(
///     AsyncApi::new("billing", "1.4.0")
///         .description("Bills orders and sends invoices.")
///         .message::<OrderPlaced>()
///         .publishes::<Invoice>("invoices"),
/// );
/// ```
#[derive(Clone)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    messages: Vec<Declared>,
    /// Topics published to, with the name and Rust path of the message
    /// sent there.
    sends: Vec<(String, &'static str, &'static str)>,
}

impl std::fmt::Debug for AsyncApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncApi")
            .field("title", &self.title)
            .field("version", &self.version)
            .field(
                "messages",
                &self.messages.iter().map(|m| m.path).collect::<Vec<_>>(),
            )
            .field("sends", &self.sends)
            .finish()
    }
}

impl Default for AsyncApi {
    fn default() -> Self {
        AsyncApi::new("kafkactor application", "0.0.0")
    }
}

impl AsyncApi {
    /// A document titled `title` at `version` (the application's).
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        AsyncApi {
            title: title.into(),
            version: version.into(),
            description: None,
            messages: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// What the application does, in a sentence or two.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The JSON Schema of message type `T`, for its records wherever the
    /// document shows them (subscribed, retried, dead-lettered, sent).
    pub fn message<T: JsonSchema + 'static>(mut self) -> Self {
        self.declare::<T>();
        self
    }

    /// The application publishes `T` to `topic`: a send operation, and
    /// `T`'s schema.
    pub fn publishes<T: JsonSchema + 'static>(mut self, topic: impl Into<String>) -> Self {
        self.declare::<T>();
        self.sends.push((
            topic.into(),
            type_name_of::<T>(),
            std::any::type_name::<T>(),
        ));
        self
    }

    fn declare<T: JsonSchema + 'static>(&mut self) {
        let path = std::any::type_name::<T>();
        if !self.messages.iter().any(|m| m.path == path) {
            self.messages.push(Declared {
                name: type_name_of::<T>(),
                path,
                schema: |generator| generator.subschema_for::<T>(),
            });
        }
    }
}

/// A subscription as the document shows it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    /// Its message types: (name on the wire, Rust path); a route taking
    /// any record (`Raw`) has the name `Raw`.
    pub(crate) types: Vec<(String, &'static str)>,
    /// Its dead-letter topic, when it set one.
    pub(crate) dead_letter: Option<String>,
    /// Whether it retries through retry topics.
    pub(crate) retry_topics: bool,
    /// How records without a content type are read.
    pub(crate) content_type: ContentType,
}

/// The headers every kafkactor record may carry.
fn headers_schema(dead_letter: bool) -> Value {
    let text = |description: &str| json!({ "type": "string", "description": description });
    let mut properties = Map::new();
    for (name, description) in [
        (header::MESSAGE_ID, "UUIDv7 of the message"),
        (
            header::TYPE_NAME,
            "the message type's name, by which it is routed",
        ),
        (
            header::CONTENT_TYPE,
            "application/msgpack (default) or application/json",
        ),
        (
            header::TIMESTAMP,
            "when it was published, ms since the Unix epoch",
        ),
        (header::TRACEPARENT, "W3C trace context"),
        (header::TENANT, "the tenant it belongs to"),
        (
            header::CORRELATION_ID,
            "the correlation id of a conversation",
        ),
        (header::REPLY_TO, "where a reply goes (request-reply)"),
        (header::ATTEMPT, "the attempt that wrote it, from 1"),
    ] {
        properties.insert(name.into(), text(description));
    }
    if dead_letter {
        for (name, description) in [
            (header::ERROR_KIND, "rejected, retries-exhausted, panic, decode, unroutable, too-large, timeout or output-refused"),
            (header::ERROR_REASON, "why it failed"),
            (header::ORIGINAL_TOPIC, "the topic it was first read from"),
            (header::ORIGINAL_PARTITION, "the partition it was first read from"),
            (header::ORIGINAL_OFFSET, "the offset it was first read at"),
            (header::GROUP, "the group that gave up on it"),
            (header::FAILED_AT, "when it failed for good, ms since the Unix epoch"),
            (header::REPLAY_COUNT, "how many times it was replayed"),
        ] {
            properties.insert(name.into(), text(description));
        }
    }
    json!({ "type": "object", "properties": properties })
}

/// The document for `spec` and `received`.
pub(crate) fn document(spec: &AsyncApi, received: &[Received]) -> Result<Value> {
    // One type per name, over everything the document names.
    let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
    let mentioned = spec.messages.iter().map(|m| (m.name, m.path)).chain(
        received
            .iter()
            .flat_map(|r| r.types.iter().map(|(n, p)| (n.as_str(), *p))),
    );
    for (name, path) in mentioned {
        if let Some(other) = paths.insert(name, path) {
            if other != path {
                return Err(Error::Config(format!(
                    "two message types are named {name}: {other} and {path}; the AsyncAPI \
                     document (and routing by type name) cannot tell them apart: rename one, \
                     or route it under another name (Routes::route_named)"
                )));
            }
        }
    }

    let mut generator = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut messages = Map::new();
    let mut message = |name: &str,
                       path: &str,
                       dead_letter: bool,
                       content_type: ContentType|
     -> String {
        let id = if dead_letter {
            format!("{name}.dead-letter")
        } else {
            name.to_string()
        };
        if !messages.contains_key(&id) {
            let payload = match spec.messages.iter().find(|m| m.path == path) {
                Some(declared) => (declared.schema)(&mut generator).to_value(),
                None if path.ends_with("::Raw") => {
                    json!({ "description": "any payload, as bytes" })
                }
                None => json!({
                    "description": format!("{name}: no schema declared (AsyncApi::message::<{name}>())")
                }),
            };
            let mut m = json!({
                "name": name,
                "contentType": content_type.mime(),
                "headers": headers_schema(dead_letter),
                "payload": payload,
            });
            if dead_letter {
                m["summary"] = json!(format!("a {name} that failed for good, with why"));
            }
            messages.insert(id.clone(), m);
        }
        id
    };

    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut channel = |topic: &str, ids: &[String]| -> String {
        let key = channel_key(topic);
        let entry = channels
            .entry(key.clone())
            .or_insert_with(|| json!({ "address": topic, "messages": {} }));
        for id in ids {
            entry["messages"][id] = json!({ "$ref": format!("#/components/messages/{id}") });
        }
        key
    };
    let refs = |key: &str, ids: &[String]| -> Value {
        ids.iter()
            .map(|id| json!({ "$ref": format!("#/channels/{key}/messages/{id}") }))
            .collect()
    };

    for r in received {
        let ids: Vec<String> = r
            .types
            .iter()
            .map(|(n, p)| message(n, p, false, r.content_type))
            .collect();
        let dead_ids: Vec<String> = r
            .types
            .iter()
            .map(|(n, p)| message(n, p, true, r.content_type))
            .collect();
        let group = json!({ "kafka": { "groupId": { "type": "string", "enum": [r.group] }, "bindingVersion": "0.5.0" } });
        for topic in &r.topics {
            let key = channel(topic, &ids);
            operations.insert(
                operation_key("receive", &r.group, topic),
                json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{key}") },
                    "messages": refs(&key, &ids),
                    "summary": format!("group {} handles {topic}", r.group),
                    "bindings": group.clone(),
                }),
            );
            let dead = topics::dead_letter(topic, r.dead_letter.as_deref());
            let key = channel(&dead, &dead_ids);
            operations.insert(
                operation_key("dead-letter", &r.group, topic),
                json!({
                    "action": "send",
                    "channel": { "$ref": format!("#/channels/{key}") },
                    "messages": refs(&key, &dead_ids),
                    "summary": format!("records of {topic} that group {} failed for good", r.group),
                }),
            );
            if r.retry_topics {
                let retry = topics::retry(topic, &r.group);
                let key = channel(&retry, &ids);
                for action in ["send", "receive"] {
                    operations.insert(
                        operation_key(&format!("retry-{action}"), &r.group, topic),
                        json!({
                            "action": action,
                            "channel": { "$ref": format!("#/channels/{key}") },
                            "messages": refs(&key, &ids),
                            "summary": format!("records of {topic} group {} retries, in key order", r.group),
                            "bindings": group.clone(),
                        }),
                    );
                }
            }
        }
    }
    for (topic, name, path) in &spec.sends {
        let ids = [message(name, path, false, ContentType::MsgPack)];
        let key = channel(topic, &ids);
        operations.insert(
            operation_key("send", name, topic),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{key}") },
                "messages": refs(&key, &ids),
                "summary": format!("publishes {name} to {topic}"),
            }),
        );
    }
    // Every declared type has a message, subscribed or sent or not.
    for declared in &spec.messages {
        message(declared.name, declared.path, false, ContentType::MsgPack);
    }
    let schemas = generator.take_definitions(true);

    let mut info = json!({ "title": spec.title, "version": spec.version });
    if let Some(description) = &spec.description {
        info["description"] = json!(description);
    }
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": info,
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages, "schemas": schemas },
    }))
}

/// A channel's key: its topic, with anything but letters, digits, `_`,
/// `-` and `.` replaced by `_`.
fn channel_key(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn operation_key(action: &str, who: &str, topic: &str) -> String {
    channel_key(&format!("{action}.{who}.{topic}"))
}
