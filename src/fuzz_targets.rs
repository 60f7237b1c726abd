//! Every decoder of bytes that come from a broker (or the outbox table),
//! as the runtime runs it, for the fuzzing harness
//! (`tests/fuzz_decoders.rs`, `scripts/fuzz.sh`): none may panic, whatever
//! the bytes.
//!
//! Hidden from the documentation and not part of the API: nothing here is
//! covered by semver. Each function calls the code the runtime itself
//! runs, not a copy of it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::buckets::{Delays, Plan};
use crate::codec::{content_type_of, ContentType};
use crate::dead_letter::{dead_letter_record, DeadLetterRecord, FailureKind};
use crate::delay::republisher::due_of;
use crate::delivery::Delivery;
use crate::envelope::{header, Headers, Record};
use crate::idempotency::{Idempotency, MemoryStore};
use crate::observe::trace::{inherit, TraceContext};

/// A record as a consumer connection hands it over (`None`: a tombstone).
pub fn record(key: Option<Bytes>, headers: Headers, payload: Option<Bytes>) -> Record {
    Record::new(Arc::from("orders"), 0, 7, key, headers, payload, 0)
}

/// A message type with a bit of everything serde decodes.
#[derive(Debug, Serialize, Deserialize)]
#[allow(dead_code)]
struct Shaped {
    id: u64,
    name: String,
    tags: Option<Vec<String>>,
    amounts: HashMap<String, f64>,
    kind: Kind,
    nested: Option<Box<Shaped>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(dead_code)]
enum Kind {
    Plain,
    Tuple(i32, bool),
    Struct { at: i64 },
}

/// A record's headers as the consume path reads them, before and around
/// its handler's call: the content type and encoding, the route (its type
/// name), the trace context and what a handler's publish inherits of it
/// (tenant, correlation id, traceparent, tracestate), what a `Delivery`
/// answers (message id, tenant, correlation id, trace context), its
/// idempotency key, and the dead letter made of it.
pub fn envelope(record: &Record) {
    let _ = content_type_of(&record.headers, ContentType::MsgPack);
    let _ = record.headers.get(header::TYPE_NAME);
    let _ = TraceContext::of(record);
    let mut inherited = Headers::new();
    let _ = inherit(&mut inherited, record, None);
    let mut given = Headers::new();
    given.insert(header::TENANT, "t");
    let _ = inherit(&mut given, record, TraceContext::of(record));
    let delivery = Delivery::new((), Arc::new(record.clone()), 1);
    let _ = (
        delivery.message_id(),
        delivery.tenant(),
        delivery.correlation_id(),
        delivery.trace_context(),
        delivery.key_str(),
        delivery.is_tombstone(),
        format!("{delivery:?}"),
    );
    static IDEMPOTENCY: OnceLock<[Idempotency; 2]> = OnceLock::new();
    let keyed = IDEMPOTENCY.get_or_init(|| {
        let by_id = Idempotency::new(MemoryStore::new(1));
        let by_key = Idempotency::new(MemoryStore::new(1)).key_header(header::IDEMPOTENCY_KEY);
        [by_id, by_key]
    });
    for idempotency in keyed {
        let _ = idempotency.key_of("group", record);
    }
    let dead = dead_letter_record(DeadLetterRecord {
        record: Arc::new(record.clone()),
        topic: Arc::from("t.dlq"),
        group: Arc::from("g"),
        kind: FailureKind::Decode,
        reason: String::from_utf8_lossy(record.payload.as_ref()).into_owned(),
        attempts: 3,
    });
    let _ = dead.byte_size();
}

/// A record's payload decoded as its handler's message would be: with its
/// declared content type (or MessagePack), as several message types, a
/// tombstone as null.
pub fn payload(record: &Record) {
    let Ok(ct) = content_type_of(&record.headers, ContentType::MsgPack) else {
        return;
    };
    if record.is_tombstone() {
        let _ = ct.decode_null::<Option<Shaped>>();
        let _ = ct.decode_null::<String>();
        return;
    }
    let bytes = &record.payload;
    let _ = ct.decode::<Shaped>(bytes);
    let _ = ct.decode::<serde_json::Value>(bytes);
    let _ = ct.decode::<String>(bytes);
    let _ = ct.decode::<Vec<u64>>(bytes);
    let _ = ct.decode::<Option<(i8, u16, f32, char)>>(bytes);
    let _ = ct.decode::<HashMap<String, Vec<Option<bool>>>>(bytes);
    let _ = ct.decode::<Kind>(bytes);
}

/// Valid payloads of the message types [`payload`] decodes, in both
/// codecs: the seeds a fuzzer mutates.
pub fn payload_seeds() -> Vec<Vec<u8>> {
    let shaped = Shaped {
        id: 7,
        name: "order".into(),
        tags: Some(vec!["a".into(), "".into()]),
        amounts: HashMap::from([("eur".into(), 12.5), ("usd".into(), -0.0)]),
        kind: Kind::Tuple(-3, true),
        nested: Some(Box::new(Shaped {
            id: u64::MAX,
            name: "\u{e9}".into(),
            tags: None,
            amounts: HashMap::new(),
            kind: Kind::Struct { at: i64::MIN },
            nested: None,
        })),
    };
    let map = HashMap::from([("k".to_string(), vec![Some(true), None])]);
    let mut seeds = Vec::new();
    for ct in [ContentType::MsgPack, ContentType::Json] {
        let encoded = [
            ct.encode(&shaped),
            ct.encode(&Kind::Plain),
            ct.encode("a string"),
            ct.encode(&vec![1u64, 2, 3]),
            ct.encode(&Some((1i8, 2u16, 3.5f32, 'c'))),
            ct.encode(&map),
        ];
        seeds.extend(encoded.into_iter().flatten().map(|b| b.to_vec()));
    }
    seeds
}

/// A `traceparent` value.
pub fn traceparent(value: &[u8]) {
    if let Some(ctx) = TraceContext::parse(value) {
        let _ = ctx.to_string();
        let _ = ctx.child();
    }
}

/// A `tracestate` value, as the `otel` feature reads it for a handler's
/// span.
#[cfg(feature = "otel")]
pub fn tracestate(value: &[u8]) {
    if let Ok(s) = std::str::from_utf8(value) {
        let _ = s.parse::<opentelemetry::trace::TraceState>();
    }
}

/// A bucket record's delay headers (`x-deliver-at`, `x-original-topic`,
/// `x-deliver-partition`) as the Republisher reads them.
pub fn delay_headers(record: &Record) {
    static PLAN: OnceLock<Arc<Plan>> = OnceLock::new();
    let plan = PLAN.get_or_init(|| Delays::default().plan().expect("the default plan"));
    let _ = due_of(plan, record);
}

/// An outbox row's headers column, and the record it makes.
#[cfg(feature = "postgres")]
pub fn outbox_headers(bytes: &[u8]) {
    if let Ok(headers) = crate::outbox::row::decode_headers(bytes) {
        let mut publish = crate::Publish::to("t");
        publish.headers = headers;
        let _ = publish.validate();
    }
}
