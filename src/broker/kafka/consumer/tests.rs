//! Unit tests of the consumer: how far the polling thread reads ahead
//! while the actor has no credit.

use super::polling::{MAX_READ_AHEAD_BYTES, MIN_READ_AHEAD};
use super::shared::lock;
use super::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

/// Reads `n` records of `size` bytes spread over 8 partitions with a
/// member whose connection takes 50 of them and then has no credit;
/// returns what it read ahead meanwhile: records and bytes.
async fn read_ahead(prefetch: usize, n: usize, size: usize) -> (usize, usize) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", 8, 1).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let payload = vec![b'x'; size];
    for i in 0..n {
        let key = i.to_string();
        let record = BaseRecord::<str, [u8]>::to("t").key(&key).payload(&payload);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let kafka = KafkaConfig::new(mock.bootstrap_servers());
    let consumer = KafkaConsumer::start(
        &kafka,
        ConsumerConfig {
            group: "g".into(),
            topics: vec!["t".into()],
            reset: OffsetReset::Earliest,
            revoke_timeout: Duration::from_secs(5),
            prefetch,
            fetch_wait: Some(Duration::from_millis(10)),
        },
    )
    .unwrap();
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while taken < 50 && Instant::now() < deadline {
        for event in consumer
            .poll(50 - taken, Duration::from_millis(100))
            .await
            .unwrap()
        {
            if let ConsumerEvent::Records(records) = event {
                taken += records.len();
            }
        }
    }
    assert_eq!(taken, 50);
    // No credit: it goes on polling (the group's events come in polls)
    // until it pauses.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let events = consumer.poll(0, Duration::from_millis(100)).await.unwrap();
        assert!(events
            .iter()
            .all(|e| !matches!(e, ConsumerEvent::Records(r) if !r.is_empty())));
    }
    let stash = lock(&consumer.shared.stash);
    let seen = (stash.records.len(), stash.bytes);
    drop(stash);
    consumer.close();
    seen
}

/// With a small `max_in_flight` it reads ahead `MIN_READ_AHEAD`
/// records, then pauses, however many wait.
#[actix_rt::test]
async fn read_ahead_is_bounded_in_records() {
    let (records, _) = read_ahead(50, 3_000, 1).await;
    assert!(
        (MIN_READ_AHEAD * 9 / 10..=MIN_READ_AHEAD + 1).contains(&records),
        "{records} records read ahead"
    );
}

/// Large records: it pauses at `MAX_READ_AHEAD_BYTES`, however many
/// records its `max_in_flight` allows (before, up to 10,000 records of
/// any size: 80 MiB here).
#[actix_rt::test]
async fn read_ahead_is_bounded_in_bytes() {
    let (records, bytes) = read_ahead(100_000, 2_800, 8 << 10).await;
    assert!(
        (MAX_READ_AHEAD_BYTES * 9 / 10..=MAX_READ_AHEAD_BYTES + (9 << 10)).contains(&bytes),
        "{records} records, {bytes} bytes read ahead"
    );
}
