//! Criterion micro-benchmarks of the per-record steps on kafkactor's hot
//! path: the payload codec, the partitioner, the commit watermark and the
//! dispatcher's routing decision. `cargo bench --bench micro`; the
//! side-by-side scenarios are in `compare.rs`.

use std::hint::black_box;

use actix::prelude::*;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafkactor::bench_internals::{dispatch_decision, record, Watermark};
use kafkactor::prelude::*;
use kafkactor::{header, partition_for_key, Headers};
use serde::{Deserialize, Serialize};

/// The 128-byte struct the side-by-side scenarios publish.
#[derive(Serialize, Deserialize, Clone)]
struct Sample {
    id: u64,
    customer: String,
    amount_cents: u64,
    note: String,
}

fn sample() -> Sample {
    Sample {
        id: 42,
        customer: "customer-000042".into(),
        amount_cents: 12_345,
        note: "x".repeat(64),
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for ct in [ContentType::MsgPack, ContentType::Json] {
        let value = sample();
        let bytes = ct.encode(&value).unwrap();
        group.bench_function(format!("{}/encode", ct.mime()), |b| {
            b.iter(|| ct.encode(black_box(&value)).unwrap())
        });
        group.bench_function(format!("{}/decode", ct.mime()), |b| {
            b.iter(|| ct.decode::<Sample>(black_box(&bytes)).unwrap())
        });
        group.bench_function(format!("{}/round_trip", ct.mime()), |b| {
            b.iter(|| {
                let bytes = ct.encode(black_box(&value)).unwrap();
                ct.decode::<Sample>(&bytes).unwrap()
            })
        });
    }
    group.finish();
}

fn partitioner(c: &mut Criterion) {
    let keys: Vec<String> = (0..1_000).map(|i| format!("customer-{i:06}")).collect();
    let mut group = c.benchmark_group("partitioner");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("murmur2/1000 keys/12 partitions", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| partition_for_key(black_box(k.as_bytes()), 12))
                .sum::<i32>()
        })
    });
    group.finish();
}

fn watermark(c: &mut Criterion) {
    const N: i64 = 1_000;
    let mut group = c.benchmark_group("watermark");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("track+complete/in order", |b| {
        b.iter_batched(
            || Watermark::<()>::new(0),
            |mut w| {
                for o in 0..N {
                    w.track(o, ());
                }
                for o in 0..N {
                    w.complete(o);
                }
                w.to_commit()
            },
            BatchSize::SmallInput,
        )
    });
    // Four lanes finishing round-robin: completions arrive out of order.
    group.bench_function("track+complete/4 lanes interleaved", |b| {
        b.iter_batched(
            || Watermark::<()>::new(0),
            |mut w| {
                for o in 0..N {
                    w.track(o, ());
                }
                for lane in 0..4 {
                    for k in (0..N / 4).rev() {
                        w.complete(lane + 4 * k);
                    }
                }
                w.to_commit()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

struct Orders;
impl Actor for Orders {
    type Context = Context<Self>;
}
#[derive(Deserialize)]
struct OrderPlaced;
#[derive(Deserialize)]
struct OrderCancelled;
#[derive(Deserialize)]
struct OrderShipped;
impl Handler<Delivery<OrderPlaced>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, _: Delivery<OrderPlaced>, _: &mut Context<Self>) -> Outcome {
        Outcome::Ack
    }
}
impl Handler<Delivery<OrderCancelled>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, _: Delivery<OrderCancelled>, _: &mut Context<Self>) -> Outcome {
        Outcome::Ack
    }
}
impl Handler<Delivery<OrderShipped>> for Orders {
    type Result = Outcome;
    fn handle(&mut self, _: Delivery<OrderShipped>, _: &mut Context<Self>) -> Outcome {
        Outcome::Ack
    }
}

fn routing(c: &mut Criterion) {
    let routes = Routes::<Orders>::new()
        .route::<OrderPlaced>()
        .route::<OrderCancelled>()
        .route::<OrderShipped>();
    let mut headers = Headers::new();
    headers.insert(header::CONTENT_TYPE, "application/msgpack");
    headers.insert(header::TYPE_NAME, "OrderShipped");
    let rec = record(
        "orders",
        7,
        Some(Bytes::from_static(b"customer-000042")),
        headers,
        ContentType::MsgPack.encode(&sample()).unwrap(),
    );
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("route+content type+lane/3 types/4 lanes", |b| {
        b.iter(|| dispatch_decision(&routes, black_box(&rec), 4).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec, partitioner, watermark, routing);
criterion_main!(benches);
