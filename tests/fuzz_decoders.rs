//! Fuzzing of every decoder of bytes from a broker (or the outbox table):
//! records' headers as the consume path reads them, payloads through the
//! MessagePack and JSON codecs, `traceparent` and `tracestate`, content
//! types, the delay headers of bucket records, outbox rows' headers. Each
//! takes generated inputs (valid seeds mutated: bytes flipped, inserted,
//! deleted, cut, spliced, interesting tokens; and random bytes) and must
//! never panic. `KAFKACTOR_FUZZ_INPUTS` inputs per decoder (default 20,000
//! in the suite; `scripts/fuzz.sh` runs 10,000,000 in release),
//! `KAFKACTOR_FUZZ_SEED` to vary the run. A panic prints the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::Bytes;
use kafkactor::fuzz_targets;
use kafkactor::{header, Headers, Record};

/// Generated inputs for one decoder.
struct Gen {
    rng: fastrand::Rng,
    seeds: Vec<Vec<u8>>,
}

/// Tokens that parsers trip on.
const TOKENS: &[&[u8]] = &[
    b"-",
    b"00",
    b"ff",
    b"01",
    b"0",
    b"-1",
    b" ",
    b";",
    b"=",
    b",",
    b"\0",
    b"\xff",
    b"\xc0",
    b"\xe2\x82",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"2147483648",
    b"1e309",
    b"NaN",
    b"application/json",
    b"application/msgpack",
    b"; charset=utf-8",
    b"identity",
    b"gzip",
    b"x-",
    b"\xde\xad\xbe\xef",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\u0000",
    b"\xdb\xff\xff\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x92",
    b"\x81",
    b"\xa1a",
];

impl Gen {
    fn new(seed: u64, seeds: Vec<Vec<u8>>) -> Self {
        Gen {
            rng: fastrand::Rng::with_seed(seed),
            seeds,
        }
    }

    /// Random bytes, up to `max` of them.
    fn random(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.usize(..=max);
        (0..n).map(|_| self.rng.u8(..)).collect()
    }

    /// A seed, mutated one to six times; sometimes random bytes.
    fn next(&mut self) -> Vec<u8> {
        if self.rng.u8(..) < 16 || self.seeds.is_empty() {
            return self.random(64);
        }
        let mut input = self.seeds[self.rng.usize(..self.seeds.len())].clone();
        for _ in 0..self.rng.usize(1..=6) {
            self.mutate(&mut input);
        }
        input
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let at = |rng: &mut fastrand::Rng, len: usize| rng.usize(..=len);
        match self.rng.u8(..8) {
            0 if !input.is_empty() => {
                let i = self.rng.usize(..input.len());
                input[i] ^= 1 << self.rng.u8(..8);
            }
            1 if !input.is_empty() => {
                let i = self.rng.usize(..input.len());
                input[i] = self.rng.u8(..);
            }
            2 => {
                let i = at(&mut self.rng, input.len());
                input.insert(i, self.rng.u8(..));
            }
            3 if !input.is_empty() => {
                let i = self.rng.usize(..input.len());
                let j = (i + self.rng.usize(1..=8)).min(input.len());
                input.drain(i..j);
            }
            4 => {
                let i = at(&mut self.rng, input.len());
                input.truncate(i);
            }
            5 => {
                let token = TOKENS[self.rng.usize(..TOKENS.len())];
                let i = at(&mut self.rng, input.len());
                input.splice(i..i, token.iter().copied());
            }
            6 if !self.seeds.is_empty() => {
                let other = &self.seeds[self.rng.usize(..self.seeds.len())];
                let from = self.rng.usize(..=other.len());
                let i = at(&mut self.rng, input.len());
                let tail = other[from..].to_vec();
                input.truncate(i);
                input.extend(tail);
            }
            _ if !input.is_empty() => {
                let i = self.rng.usize(..input.len());
                let j = (i + self.rng.usize(1..=8)).min(input.len());
                let copy = input[i..j].to_vec();
                let k = at(&mut self.rng, input.len());
                input.splice(k..k, copy);
            }
            _ => input.push(self.rng.u8(..)),
        }
    }
}

/// How many inputs each decoder takes, and the run's seed.
fn settings() -> (u64, u64) {
    let inputs = std::env::var("KAFKACTOR_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("KAFKACTOR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b61_666b);
    (inputs, seed)
}

/// Runs `decoder` on `inputs` generated inputs; a panic fails the test
/// with the input. Prints the count and time.
/// `decoder` generates an input with `gen`, describes it in its second
/// argument, then decodes it.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, mut decoder: impl FnMut(&mut Gen, &mut String)) {
    let (inputs, seed) = settings();
    let mut gen = Gen::new(seed ^ fxhash(name), seeds);
    // Panics are caught and reported with their input; the default hook
    // would print each one as well.
    let started = Instant::now();
    for i in 0..inputs {
        let mut described = String::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| decoder(&mut gen, &mut described)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: input {i} panicked ({message}): {described}");
        }
    }
    let took = started.elapsed();
    println!(
        "{name}: {inputs} inputs in {:.1} s ({:.0} inputs/s), no panic",
        took.as_secs_f64(),
        inputs as f64 / took.as_secs_f64().max(1e-9)
    );
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every well-known header name, and a few others.
fn header_names() -> Vec<&'static str> {
    vec![
        header::MESSAGE_ID,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TYPE_NAME,
        header::TIMESTAMP,
        header::TRACEPARENT,
        header::TRACESTATE,
        header::TENANT,
        header::CORRELATION_ID,
        header::REPLY_TO,
        header::ATTEMPT,
        header::ORIGINAL_TOPIC,
        header::ORIGINAL_PARTITION,
        header::ORIGINAL_OFFSET,
        header::GROUP,
        header::DELIVER_AT,
        header::DELIVER_PARTITION,
        header::ERROR_KIND,
        header::ERROR_REASON,
        header::FAILED_AT,
        header::PAYLOAD_DROPPED,
        header::PAYLOAD_SIZE,
        header::IDEMPOTENCY_KEY,
        "x-custom",
        "",
    ]
}

/// Valid values of the well-known headers, to mutate.
fn header_values() -> Vec<Vec<u8>> {
    [
        "0192f8a4-1c2b-7def-8a3b-2c4d5e6f7a8b",
        "application/msgpack",
        "application/json; charset=utf-8",
        "identity",
        "OrderPlaced",
        "1733526000000",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "acme",
        "3",
        "orders",
        "2",
        "4711",
        "billing",
        "rejected",
        "the handler said no",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// A record whose headers, key and payload come from `gen`: one to eight
/// headers, each a known name (sometimes mutated) with a mutated value,
/// sometimes null; returns it and how to print it.
fn generated_record(gen: &mut Gen, payload: Option<Vec<u8>>) -> (Record, String) {
    let names = header_names();
    let mut headers = Headers::new();
    let mut shown = Vec::new();
    for _ in 0..gen.rng.usize(0..=8) {
        let name = if gen.rng.u8(..) < 32 {
            String::from_utf8_lossy(&gen.next()).into_owned()
        } else {
            names[gen.rng.usize(..names.len())].to_string()
        };
        if gen.rng.u8(..) < 16 {
            shown.push(format!("{name:?}: null"));
            headers.append_null(name);
        } else {
            let value = gen.next();
            shown.push(format!("{name:?}: {:02x?}", value));
            headers.append(name, Bytes::from(value));
        }
    }
    let key = (gen.rng.bool()).then(|| Bytes::from(gen.random(16)));
    // Sometimes a tombstone.
    let payload = (gen.rng.u8(..) >= 8).then(|| payload.unwrap_or_else(|| gen.random(32)));
    let shown = format!(
        "headers [{}], key {key:02x?}, payload {payload:02x?}",
        shown.join(", ")
    );
    let record = fuzz_targets::record(key, headers, payload.map(Bytes::from));
    (record, shown)
}

#[test]
fn record_headers_on_the_consume_path() {
    fuzz("envelope", header_values(), |gen, shown| {
        let record;
        (record, *shown) = generated_record(gen, None);
        fuzz_targets::envelope(&record);
    });
}

#[test]
fn payloads_through_the_codecs() {
    let content_types: [Option<&[u8]>; 5] = [
        None,
        Some(b"application/msgpack"),
        Some(b"application/json"),
        Some(b"application/json; charset=utf-8"),
        Some(b"application/x-msgpack"),
    ];
    fuzz("payload", fuzz_targets::payload_seeds(), |gen, shown| {
        let payload = gen.next();
        let mut headers = Headers::new();
        let ct = content_types[gen.rng.usize(..content_types.len())];
        if let Some(ct) = ct {
            headers.append(header::CONTENT_TYPE, Bytes::copy_from_slice(ct));
        }
        *shown = format!("content type {ct:?}, payload {payload:02x?}");
        let tombstone = gen.rng.u8(..) < 4;
        let record =
            fuzz_targets::record(None, headers, (!tombstone).then(|| Bytes::from(payload)));
        fuzz_targets::payload(&record);
    });
}

#[test]
fn content_types_and_encodings() {
    let seeds = [
        "application/msgpack",
        "application/json",
        "Application/JSON ; charset=utf-8",
        "application/vnd.msgpack",
        "identity",
        "gzip",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("content-type", seeds, |gen, shown| {
        let (ct, enc) = (gen.next(), gen.next());
        *shown = format!("content-type {ct:02x?}, content-encoding {enc:02x?}");
        let mut headers = Headers::new();
        headers.append(header::CONTENT_TYPE, Bytes::from(ct.clone()));
        if gen.rng.bool() {
            headers.append(header::CONTENT_ENCODING, Bytes::from(enc.clone()));
        }
        let record = fuzz_targets::record(None, headers, Some(Bytes::from_static(b"\xc0")));
        fuzz_targets::payload(&record);
    });
}

#[test]
fn traceparents() {
    let seeds = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "  00-00000000000000000000000000000001-0000000000000001-03  ",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("traceparent", seeds, |gen, shown| {
        let value = gen.next();
        *shown = format!("{value:02x?}");
        fuzz_targets::traceparent(&value);
    });
}

#[cfg(feature = "otel")]
#[test]
fn tracestates() {
    let seeds = [
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "a@b=c",
        "k=v",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("tracestate", seeds, |gen, shown| {
        let value = gen.next();
        *shown = format!("{value:02x?}");
        fuzz_targets::tracestate(&value);
    });
}

#[test]
fn delay_headers_of_bucket_records() {
    let seeds = ["1733526000000", "orders", "2", "-1", "0", "reminders.v2"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    fuzz("delay headers", seeds, |gen, shown| {
        let mut headers = Headers::new();
        let mut parts = Vec::new();
        for name in [
            header::DELIVER_AT,
            header::ORIGINAL_TOPIC,
            header::DELIVER_PARTITION,
        ] {
            if gen.rng.u8(..) < 230 {
                let value = gen.next();
                parts.push(format!("{name}: {value:02x?}"));
                headers.append(name, Bytes::from(value));
            }
        }
        *shown = parts.join(", ");
        let record = fuzz_targets::record(None, headers, Some(Bytes::new()));
        fuzz_targets::delay_headers(&record);
    });
}

/// Headers as an outbox row's column holds them.
#[cfg(feature = "postgres")]
fn outbox_column(headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

#[cfg(feature = "postgres")]
#[test]
fn outbox_rows_headers() {
    let seeds = vec![
        outbox_column(&[("x-tenant", Some(b"acme")), ("x-null", None)]),
        outbox_column(&[(header::MESSAGE_ID, Some(b"0192f8a4")), ("", Some(b""))]),
        outbox_column(&[]),
    ];
    fuzz("outbox headers", seeds, |gen, shown| {
        let column = gen.next();
        *shown = format!("{column:02x?}");
        fuzz_targets::outbox_headers(&column);
    });
}
