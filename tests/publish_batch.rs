//! `PublishBatch`: many records in one message to the Producer, answered
//! once with every outcome in the batch's order; a record that cannot be
//! published fails alone (its typed error in its place) and the others are
//! written, in order. On the embedded broker, Apache Kafka and the mock
//! cluster.

mod support;

use kafkactor::prelude::*;
use support::*;

async fn a_batch_is_answered_in_order_with_each_outcome(tb: TestBroker) {
    let topic = unique("batch");
    tb.topics(&[&topic]).await;
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .max_record_bytes(1_000)
        .start()
        .await
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..20u64 {
        let publish = if i == 7 {
            // Too large: refused before it reaches the broker.
            Publish::to(topic.as_str())
                .key("k")
                .payload(vec![0u8; 2_000])
        } else {
            Publish::to(topic.as_str()).key("k").message(&i).unwrap()
        };
        batch.push(publish);
    }
    let outcomes = app
        .producer()
        .send_batch(PublishBatch(batch))
        .await
        .expect("the Producer answers");
    assert_eq!(outcomes.len(), 20, "one outcome per record");
    let mut offsets = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (7, Err(Error::RecordTooLarge { size, max })) => {
                assert!(*size >= 2_000 && *max == 1_000, "{size} {max}")
            }
            (7, other) => panic!("record 7 should be too large: {other:?}"),
            (_, Ok(PublishOutcome::Direct { offset, .. })) => offsets.push(*offset),
            (i, other) => panic!("record {i}: {other:?}"),
        }
    }
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "one key, one partition: offsets follow the batch's order: {offsets:?}"
    );
    let written: Vec<u64> = tb
        .records(&topic)
        .await
        .iter()
        .map(|r| rmp_serde::from_slice(&r.payload).unwrap())
        .collect();
    let expected: Vec<u64> = (0..20).filter(|&i| i != 7).collect();
    assert_eq!(
        written, expected,
        "every other record written once, in order"
    );
    // An empty batch is answered too.
    let none = app.producer().send_batch(PublishBatch(Vec::new())).await;
    assert_eq!(none.expect("the Producer answers").len(), 0);
    app.shutdown().await.unwrap();
}
on_every_broker!(
    batch_outcomes,
    super::a_batch_is_answered_in_order_with_each_outcome,
    2
);
