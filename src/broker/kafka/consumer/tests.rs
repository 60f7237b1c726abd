//! Unit tests of the consumer: what it reads ahead while the actor has no
//! credit, and that taking resumes where it stopped.

use super::queues::queued;
use super::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

/// A mock cluster with `n` records of `size` bytes in topic `t`'s one
/// partition. (The mock keeps the last 5 MiB of a partition: the records
/// must fit.)
fn cluster(n: usize, size: usize) -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    // Room for every record at once: librdkafka's default of 100,000 queued
    // records is fewer than the largest test writes, and how many are
    // delivered while the loop runs depends on the machine.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set(
            "queue.buffering.max.messages",
            (n + 1).max(100_000).to_string(),
        )
        .create()
        .unwrap();
    let payload = vec![b'x'; size];
    for i in 0..n {
        let key = i.to_string();
        let record = BaseRecord::<str, [u8]>::to("t").key(&key).payload(&payload);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    mock
}

fn member(
    mock: &MockCluster<'static, DefaultProducerContext>,
    prefetch: usize,
    settings: &[(&str, &str)],
) -> KafkaConsumer {
    let kafka = settings.iter().fold(
        KafkaConfig::new(mock.bootstrap_servers()),
        |kafka, (k, v)| kafka.set(k.to_string(), v.to_string()),
    );
    KafkaConsumer::start(
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
    .unwrap()
}

/// Takes up to `n` records, asking for `n - taken` at a time, within 30 s.
async fn take(consumer: &KafkaConsumer, n: usize) -> Vec<Arc<crate::envelope::Record>> {
    let mut taken = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while taken.len() < n && Instant::now() < deadline {
        for event in consumer
            .poll(n - taken.len(), Duration::from_millis(100))
            .await
            .unwrap()
        {
            if let ConsumerEvent::Records(records) = event {
                taken.extend(records);
            }
        }
    }
    taken
}

/// Polls with no credit for 3 s: no record is handed out meanwhile, and
/// librdkafka reads ahead until the partition's queue is full.
/// Returns how many records it holds then.
async fn without_credit(consumer: &KafkaConsumer) -> usize {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let events = consumer.poll(0, Duration::from_millis(100)).await.unwrap();
        assert!(events
            .iter()
            .all(|e| !matches!(e, ConsumerEvent::Records(r) if !r.is_empty())));
    }
    let inner = consumer.consumer.upgrade().unwrap();
    queued(&inner, &TopicPartition::new("t", 0))
}

/// With a small `max_in_flight`, librdkafka holds about `MIN_QUEUED`
/// records of the partition (and one fetch more), however many wait;
/// taking then resumes at the next offset, and nothing is skipped.
#[actix_rt::test]
async fn read_ahead_is_bounded_in_records_and_taking_resumes() {
    let n = 120_000;
    let mock = cluster(n, 1);
    let consumer = member(&mock, 50, &[]);
    let first = take(&consumer, 50).await;
    assert_eq!(first.len(), 50);
    let held = without_credit(&consumer).await;
    assert!(
        (MIN_QUEUED * 9 / 10..MIN_QUEUED * 2).contains(&held),
        "{held} records read ahead"
    );
    let rest = take(&consumer, n - 50).await;
    let offsets: Vec<i64> = first.iter().chain(&rest).map(|r| r.offset).collect();
    let wrong = offsets.iter().enumerate().find(|(i, o)| **o != *i as i64);
    assert!(
        offsets.len() == n && wrong.is_none(),
        "{} records taken, first out of place: {wrong:?} (held {held})",
        offsets.len()
    );
    consumer.close();
}

/// Large records: librdkafka holds about `queued.max.messages.kbytes` of
/// the partition (and one fetch more), however many records its
/// `max_in_flight` allows. The user's setting wins over the default
/// ([`QUEUED_KBYTES`], more than the mock keeps of a partition).
#[actix_rt::test]
async fn read_ahead_is_bounded_in_bytes() {
    let size = 2 << 10;
    let mock = cluster(2_300, size);
    let consumer = member(&mock, 100_000, &[("queued.max.messages.kbytes", "2048")]);
    assert_eq!(take(&consumer, 50).await.len(), 50);
    let bytes = without_credit(&consumer).await * size;
    let bound = 2048 << 10;
    assert!(
        (bound * 9 / 10..bound + (3 << 19)).contains(&bytes),
        "{bytes} bytes read ahead"
    );
    consumer.close();
}
