//! A record whose header name is not UTF-8 (the protocol does not check;
//! any C client can write one) is consumed like any other, the name read
//! as the Java client reads it (invalid bytes replaced by U+FFFD), and the
//! records behind it flow. rdkafka's own header reader unwraps the name's
//! conversion: the consumer's polling thread panicked on it at every
//! restart and the partition never moved again. On Apache Kafka and
//! librdkafka's mock cluster.

mod support;

use std::ffi::c_char;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkactor::prelude::*;
use rdkafka::bindings as rdsys;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use support::*;

/// Headers with one header named `x-n?me` whose third byte is 0xff (not
/// UTF-8), written through librdkafka's own header list.
fn headers_with_a_bad_name() -> OwnedHeaders {
    let headers = OwnedHeaders::new().insert(Header {
        key: "x-name",
        value: Some("v"),
    });
    // `BorrowedHeaders` is librdkafka's header list itself, by address.
    let list = headers.as_borrowed() as *const _ as *const rdsys::rd_kafka_headers_t;
    let (mut name, mut value, mut size): (*const c_char, *const std::ffi::c_void, usize) =
        (std::ptr::null(), std::ptr::null(), 0);
    // SAFETY: the list is valid and owned by `headers`; its first header's
    // name is a NUL-terminated allocation of 7 bytes, changed in place
    // (same length) before anything reads it again.
    unsafe {
        let err = rdsys::rd_kafka_header_get_all(list, 0, &mut name, &mut value, &mut size);
        assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        *(name as *mut u8).add(3) = 0xff;
    }
    headers
}

/// Each record handled: its message and its header names.
type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

async fn a_header_name_that_is_not_utf8_is_read_lossily(tb: TestBroker) {
    let (topic, group) = (unique("names"), unique("g"));
    tb.topics(&[&topic]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", tb.bootstrap().unwrap())
        .create()
        .unwrap();
    let send = |payload: String, headers: Option<OwnedHeaders>| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let mut record = FutureRecord::<str, str>::to(&topic)
                .key("k")
                .payload(&payload);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    };
    send("\"first\"".into(), Some(headers_with_a_bad_name())).await;
    for i in 0..5 {
        send(format!("\"after-{i}\""), None).await;
    }
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .default_content_type(kafkactor::ContentType::Json),
            move |d: Delivery<String>| {
                let names = d.headers().iter().map(|(n, _)| n.to_string()).collect();
                log.lock().unwrap().push((d.message().clone(), names));
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    eventually(
        "every record handled",
        tb.patience(Duration::from_secs(10)),
        || seen.lock().unwrap().len() == 6,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    app.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "first");
    assert_eq!(seen[0].1, ["x-n\u{fffd}me"]);
}

on_every_kafka_broker!(
    header_names_that_are_not_utf8,
    super::a_header_name_that_is_not_utf8_is_read_lossily,
    1
);
