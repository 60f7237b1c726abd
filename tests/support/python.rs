//! kafka-python (a Kafka client with its own protocol implementation, not
//! librdkafka) run by the tests: `tests/interop/kafka_python.py`.

/// Runs tests/interop/kafka_python.py (kafka-python, a client with its own
/// protocol implementation; `scripts/test.sh` installs it) and parses the
/// JSON line it prints per record.
pub async fn kafka_python(
    command: &str,
    brokers: &str,
    topic: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/kafka_python.py");
    let out = tokio::task::spawn_blocking({
        let args = [
            script.to_string(),
            command.into(),
            brokers.into(),
            topic.into(),
            n.to_string(),
        ];
        move || std::process::Command::new("python3").args(args).output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "kafka_python.py {command} failed (is kafka-python installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The bytes of a hex string as kafka_python.py prints them.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
