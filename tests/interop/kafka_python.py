#!/usr/bin/env python3
"""The other side of tests/kafka_python_interop.rs: kafka-python, a Kafka
client with its own protocol implementation (not librdkafka).

  kafka_python.py produce BROKERS TOPIC N   writes N keyed JSON records with
      an `origin` header (kafka-python's default partitioner, murmur2 as in
      Java) and prints, per record, {"key", "partition", "offset"}
  kafka_python.py consume BROKERS TOPIC N   reads N records from the start
      of every partition and prints, per record, its key, partition, offset,
      headers and payload (bytes as hex)
  kafka_python.py consume_committed BROKERS TOPIC N   the same as a
      read_committed consumer (records of transactions not committed are
      never shown), and then 3 s more: whatever else is there is printed
      too (duplicates, or more than was expected)

One JSON object per line on stdout; exits non-zero when it cannot finish
within 60 s.
"""

import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def produce(brokers, topic, n):
    producer = KafkaProducer(bootstrap_servers=brokers, acks="all")
    futures = []
    for i in range(n):
        key = f"py-{i}"
        value = json.dumps({"sensor": key, "celsius": i + 0.5}).encode()
        futures.append((key, producer.send(topic, key=key.encode(), value=value, headers=[("origin", b"kafka-python")])))
    producer.flush(timeout=60)
    for key, future in futures:
        meta = future.get(timeout=60)
        print(json.dumps({"key": key, "partition": meta.partition, "offset": meta.offset}))
    producer.close()


def consume(brokers, topic, n, isolation_level="read_uncommitted", linger=0.0):
    consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, consumer_timeout_ms=1000,
                             isolation_level=isolation_level)
    deadline = time.monotonic() + 60
    partitions = None
    while partitions is None and time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            time.sleep(0.2)
    if partitions is None:
        sys.exit(f"no metadata for {topic}")
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    seen = 0
    until = None
    while time.monotonic() < deadline:
        if seen >= n:
            until = until or time.monotonic() + linger
            if time.monotonic() >= until:
                break
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                print(json.dumps({
                    "key": r.key.decode() if r.key is not None else None,
                    "partition": r.partition,
                    "offset": r.offset,
                    "headers": {k: (v.hex() if v is not None else None) for k, v in r.headers},
                    "payload": r.value.hex() if r.value is not None else None,
                }))
                seen += 1
    consumer.close()
    if seen < n:
        sys.exit(f"read {seen} of {n} records within 60 s")


if __name__ == "__main__":
    command, brokers, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    def consume_committed(brokers, topic, n):
        consume(brokers, topic, n, isolation_level="read_committed", linger=3.0)
    {"produce": produce, "consume": consume, "consume_committed": consume_committed}[command](brokers, topic, n)
