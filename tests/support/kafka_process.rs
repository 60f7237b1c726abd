//! An Apache Kafka broker process of a test's own, for faults only a real
//! broker allows: killed with SIGKILL and started again on the same data
//! directory and port. `scripts/kafka.sh format` and `run` do the work (the
//! same settings as the suite's shared broker).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct KafkaProcess {
    dir: PathBuf,
    addr: String,
    child: Option<Child>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

impl KafkaProcess {
    /// Formats a fresh broker in a temporary folder and starts it; returns
    /// once it answers a metadata request. None (the test skips) where the
    /// suite runs without Apache Kafka (`KAFKACTOR_TEST_BROKERS` unset).
    pub async fn start() -> Option<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`start`](Self::start), with these broker settings added.
    pub async fn start_with(settings: &[(&str, &str)]) -> Option<Self> {
        super::service("KAFKACTOR_TEST_BROKERS", "Apache Kafka")?;
        Some(Self::launch(settings).await)
    }

    /// Formats and starts a broker whatever the environment says (the
    /// chaos soak's, which needs no other).
    #[allow(dead_code)]
    pub async fn launch(settings: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kafkactor-test-kafka-{}-{}",
            std::process::id(),
            super::unique("b")
        ));
        let out = Command::new("bash")
            .arg(script().join("kafka.sh"))
            .arg("format")
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/kafka.sh format");
        assert!(out.status.success(), "scripts/kafka.sh format failed");
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        if !settings.is_empty() {
            use std::io::Write;
            let mut props = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("server.properties"))
                .unwrap();
            for (k, v) in settings {
                writeln!(props, "{k}={v}").unwrap();
            }
        }
        let mut kafka = KafkaProcess {
            dir,
            addr,
            child: None,
        };
        kafka.run().await;
        kafka
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Starts the broker on its data directory and port and waits until it
    /// answers a metadata request (bounded).
    async fn run(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let child = Command::new("bash")
            .arg(script().join("kafka.sh"))
            .arg("run")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("scripts/kafka.sh run");
        self.child = Some(child);
        let (addr, metadata) = (self.addr.clone(), script().join("kafka_metadata.py"));
        let ready = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(metadata)
                .arg(addr)
                .arg("120")
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .await
        .unwrap();
        assert!(
            ready,
            "Kafka did not come up on {}; see {}/server.log",
            self.addr,
            self.dir.display()
        );
    }

    /// Kills the broker with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// Starts the killed broker again, on the same data and port.
    pub async fn restart(&mut self) {
        self.run().await
    }

    /// How long to wait for a broker that was killed to be back (its log
    /// recovery and the group coordinator's reload take seconds).
    pub fn recovery() -> Duration {
        Duration::from_secs(120)
    }
}

impl Drop for KafkaProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
