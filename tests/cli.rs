//! The `kafkactor` command, run as a process against Apache Kafka: its
//! answers (`--json`), its exit codes, bad input (an unreachable broker, an
//! unknown topic or group, a malformed time) and a replay interrupted by
//! Ctrl-C and resumed. Built with the `cli` feature.
#![cfg(feature = "cli")]

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafkactor::prelude::*;
use kafkactor::App;
use serde_json::Value;
use support::*;

/// Runs `kafkactor` with `args` against `brokers`, within 60 s.
fn kafkactor(brokers: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafkactor"));
    command.arg("--brokers").arg(brokers).args(args);
    run(command, args)
}

/// Runs `kafkactor` with `args` in directory `dir`, with the variables
/// `env` (and without `KAFKACTOR_BROKERS`): it finds its broker in the
/// configuration.
fn kafkactor_in(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kafkactor"));
    command
        .current_dir(dir)
        .env_remove("KAFKACTOR_BROKERS")
        .env_remove("KAFKACTOR_PROFILE")
        .envs(env.iter().copied())
        .args(args);
    run(command, args)
}

/// Runs `command` (`kafkactor` with `args`) to its end, within 60 s.
fn run(mut command: Command, args: &[&str]) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kafkactor starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("waits").is_none() {
        assert!(Instant::now() < deadline, "kafkactor {args:?} within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An application on `tb` rejecting every record of `topic`, with `n`
/// orders published and dead-lettered.
async fn dead_letters(tb: &TestBroker, topic: &str, group: &str, n: u64) -> App {
    tb.topics(&[topic]).await;
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic).group(group),
            probe(&log, "a", Arc::new(|_| Outcome::reject("bad order"))),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, topic, &orders(n, 5)).await;
    let dlq = format!("{topic}.dlq");
    tb.until_records(&dlq, n as usize).await;
    tb.until_committed(group, topic, Duration::from_secs(30))
        .await;
    app
}

/// The command reads the application's configuration as the application
/// does (the file in the working directory or named, a profile over it,
/// the environment over both), and says why when it cannot.
#[actix::test]
async fn the_command_reads_the_applications_configuration() {
    let tb = or_skip!(TestBroker::kafka(2));
    let brokers = tb.bootstrap().unwrap().to_string();
    let (topic, group) = (unique("cli-orders"), unique("cli-shop"));
    let dlq = format!("{topic}.dlq");
    dead_letters(&tb, &topic, &group, 3)
        .await
        .shutdown()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(unique("kafkactor-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kafkactor.toml");
    std::fs::write(
        &file,
        format!(
            "[default.brokers.main]\nbootstrap = \"127.0.0.1:1\"\n\
             [default.brokers.local]\npartitions = 1\n\
             [staging.brokers.main]\nbootstrap = \"{brokers}\"\n"
        ),
    )
    .unwrap();
    let listed = |out: &Output| json(out)["dead_letters"].as_array().unwrap().len();
    let list = ["--json", "--timeout", "5s", "dlq", "list", dlq.as_str()];

    // kafkactor.toml of the working directory, in the profile asked for.
    let a = [&["--profile", "staging", "--broker", "main"][..], &list].concat();
    assert_eq!(listed(&kafkactor_in(&dir, &[], &a)), 3);
    // The file named, in the profile KAFKACTOR_PROFILE names.
    let named = file.to_str().unwrap();
    let b = [&["--config", named, "--broker", "main"][..], &list].concat();
    let staging = [("KAFKACTOR_PROFILE", "staging")];
    assert_eq!(
        listed(&kafkactor_in(&std::env::temp_dir(), &staging, &b)),
        3
    );
    // The environment over the file.
    let c = [&["--broker", "main"][..], &list].concat();
    let env = [("KAFKACTOR_BROKERS__MAIN__BOOTSTRAP", brokers.as_str())];
    assert_eq!(listed(&kafkactor_in(&dir, &env, &c)), 3);

    // Why it cannot: each a failure (1) saying so.
    for (extra, why) in [
        (&["--profile", "staging"][..], "say which with --broker"),
        (
            &["--broker", "orders"][..],
            "broker \"orders\" is not defined",
        ),
        (&["--broker", "local"][..], "is the embedded broker"),
    ] {
        let out = kafkactor_in(&dir, &[], &[extra, &list].concat());
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{extra:?}: {}", stderr(&out));
    }
    std::fs::write(&file, "[default.brokers.main]\nbootstrp = \"x\"\n").unwrap();
    let out = kafkactor_in(&dir, &[], &list);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("bootstrp"), "{}", stderr(&out));
    assert!(stderr(&out).contains("kafkactor.toml"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreachable_broker_is_said_and_fails() {
    let out = kafkactor(
        "127.0.0.1:1",
        &["--timeout", "2s", "dlq", "list", "orders.dlq"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no answer from Apache Kafka at 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "nothing half written");
}

#[test]
fn a_malformed_time_is_bad_usage() {
    let out = kafkactor(
        "127.0.0.1:1",
        &["dlq", "replay", "orders.dlq", "--since", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}

#[actix::test]
async fn dead_letters_are_listed_shown_replayed_once_and_lag_and_tail_read() {
    let tb = or_skip!(TestBroker::kafka(2));
    let brokers = tb.bootstrap().unwrap().to_string();
    let topic = unique("cli-orders");
    let group = unique("cli-shop");
    let dlq = format!("{topic}.dlq");
    let app = dead_letters(&tb, &topic, &group, 30).await;
    app.shutdown().await.unwrap();

    let listed = json(&kafkactor(
        &brokers,
        &["--json", "dlq", "list", &dlq, "--limit", "100"],
    ));
    let rows = listed["dead_letters"].as_array().unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows
        .iter()
        .all(|r| r["kind"] == "rejected" && r["reason"] == "bad order"));
    assert!(rows.iter().all(|r| r["original_topic"] == topic.as_str()));

    let (p, offset) = (
        rows[0]["partition"].to_string(),
        rows[0]["offset"].to_string(),
    );
    let shown = json(&kafkactor(
        &brokers,
        &["--json", "dlq", "show", &dlq, &p, &offset],
    ));
    assert_eq!(shown["headers"]["x-error-kind"], "rejected");
    assert!(
        shown["payload"]["id"].is_u64(),
        "decoded by content type: {shown}"
    );

    let dry = json(&kafkactor(
        &brokers,
        &["--json", "dlq", "replay", &dlq, "--dry-run"],
    ));
    assert_eq!(
        (dry["matched"].as_u64(), dry["sent"].as_u64()),
        (Some(30), Some(30))
    );
    let only = json(&kafkactor(
        &brokers,
        &[
            "--json",
            "dlq",
            "replay",
            &dlq,
            "--dry-run",
            "--kind",
            "decode",
        ],
    ));
    assert_eq!(only["matched"].as_u64(), Some(0), "{only}");

    let lag = kafkactor(
        &brokers,
        &["--json", "lag", "--group", &group, "--topic", &topic],
    );
    assert_eq!(json(&lag)["records"].as_i64(), Some(0), "all committed");

    let sent = json(&kafkactor(
        &brokers,
        &["--json", "dlq", "replay", &dlq, "--rate", "500"],
    ));
    assert_eq!(sent["sent"].as_u64(), Some(30), "{sent}");
    let lag = json(&kafkactor(
        &brokers,
        &["--json", "lag", "--group", &group, "--topic", &topic],
    ));
    assert_eq!(
        lag["records"].as_i64(),
        Some(30),
        "the replays wait for the group"
    );
    assert!(lag["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["seconds"].as_f64().is_some()));
    let again = json(&kafkactor(&brokers, &["--json", "dlq", "replay", &dlq]));
    assert_eq!(
        again["sent"].as_u64(),
        Some(0),
        "the same range sends nothing: {again}"
    );
    assert_eq!(tb.records(&topic).await.len(), 60, "each sent back once");

    let tail = kafkactor(
        &brokers,
        &["--json", "tail", &topic, "--from-beginning", "--count", "5"],
    );
    assert!(tail.status.success(), "{}", stderr(&tail));
    let lines: Vec<Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document a line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["payload"]["key"].is_string()));

    let unknown = kafkactor(&brokers, &["dlq", "list", "no-such-topic-here"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no topic `no-such-topic-here`"),
        "{}",
        stderr(&unknown)
    );
    let nobody = kafkactor(
        &brokers,
        &["lag", "--group", "nobody-here", "--topic", &topic],
    );
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        stderr(&nobody).contains("committed nothing"),
        "{}",
        stderr(&nobody)
    );
}

#[actix::test]
async fn a_replay_interrupted_by_ctrl_c_resumes_without_sending_twice() {
    const N: u64 = 100;
    let tb = or_skip!(TestBroker::kafka(2));
    let brokers = tb.bootstrap().unwrap().to_string();
    let topic = unique("cli-refunds");
    let group = unique("cli-payouts");
    let dlq = format!("{topic}.dlq");
    let app = dead_letters(&tb, &topic, &group, N).await;
    app.shutdown().await.unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_kafkactor"))
        .args([
            "--brokers",
            &brokers,
            "--json",
            "dlq",
            "replay",
            &dlq,
            "--rate",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kafkactor starts");
    // Some are sent, not all (100 at 20 a second take 5 s).
    tb.until_records(&topic, (N + 6) as usize).await;
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let out = child.wait_with_output().expect("its output");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resumes where this one stopped"),
        "{}",
        stderr(&out)
    );
    let first: Value = serde_json::from_slice(&out.stdout).expect("its report");
    assert_eq!(first["cancelled"], true);
    let sent_first = first["sent"].as_u64().unwrap();
    assert!(sent_first > 5 && sent_first < N, "{first}");

    let rest = json(&kafkactor(&brokers, &["--json", "dlq", "replay", &dlq]));
    assert_eq!(
        sent_first + rest["sent"].as_u64().unwrap(),
        N,
        "{first} then {rest}"
    );
    assert_eq!(
        tb.records(&topic).await.len() as u64,
        2 * N,
        "each sent back once"
    );
}

#[actix::test]
async fn the_retry_path_and_the_delay_buckets_are_shown() {
    let tb = or_skip!(TestBroker::kafka(2));
    let brokers = tb.bootstrap().unwrap().to_string();
    let topic = unique("cli-waits");
    let group = unique("cli-waiting");
    let prefix = unique("cli-delay");
    tb.topics(&[topic.as_str()]).await;
    // k-0 fails and waits a minute in the retry topic; its later records follow it.
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| {
        if d.message().key == "k-0" {
            Outcome::retry("not yet")
        } else {
            Outcome::Ack
        }
    });
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .delays(kafkactor::Delays::default().topic_prefix(&prefix))
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(
                    RetryPolicy::exponential(3, Duration::from_secs(60))
                        .max_backoff(Duration::from_secs(60))
                        .jitter(0.0)
                        .via_retry_topic(kafkactor::RetryTopic::Ordered),
                ),
            probe(&Log::default(), "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(20, 4)).await;
    app.producer()
        .send(
            Publish::to(topic.as_str())
                .key("later")
                .delay(Duration::from_secs(120))
                .message(&orders(1, 1)[0])
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let retry_topic = format!("{topic}.{group}.retry");
    tb.until_records(&retry_topic, 5).await;

    let retries = json(&kafkactor(
        &brokers,
        &["--json", "retries", "--group", &group, "--topic", &topic],
    ));
    assert_eq!(retries["records"].as_u64(), Some(5), "{retries}");
    let parts = retries["partitions"].as_array().unwrap();
    assert_eq!(
        parts
            .iter()
            .filter_map(|p| p["parked_keys"].as_u64())
            .sum::<u64>(),
        1,
        "{retries}"
    );
    assert!(
        parts
            .iter()
            .any(|p| p["next_due_in_seconds"].as_f64().is_some_and(|s| s > 30.0)),
        "{retries}"
    );

    let delays = json(&kafkactor(
        &brokers,
        &["--json", "delays", "--prefix", &prefix],
    ));
    assert_eq!(delays["records"].as_u64(), Some(1), "{delays}");
    let bucket = delays["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["records"] == 1)
        .cloned()
        .unwrap();
    assert!(
        bucket["first_due_in_seconds"].as_f64().unwrap() > 60.0,
        "{delays}"
    );

    let nobody = kafkactor(
        &brokers,
        &["retries", "--group", "nobody-here", "--topic", &topic],
    );
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        stderr(&nobody).contains("no retry topic"),
        "{}",
        stderr(&nobody)
    );
    app.shutdown().await.unwrap();
}

/// `kafkactor asyncapi` writes a running application's document as its
/// HTTP endpoint serves it, with no broker to ask; an address where no
/// application answers is a clear error and exit code 1.
#[actix::test]
async fn asyncapi_writes_a_running_applications_document() {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .serve_http("127.0.0.1:0")
        .handle(
            Subscription::to("orders").group("billing"),
            |_: Delivery<Order>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let addr = app.http_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(unique("asyncapi"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("billing.asyncapi.json");
    let from = format!("http://{addr}");
    let args = [
        "asyncapi",
        "--from",
        &from,
        "--output",
        file.to_str().unwrap(),
    ];
    // In a directory with no configuration, and no Kafka to ask.
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kafkactor_in(&dir, &[("KAFKACTOR_BROKERS", "127.0.0.1:1")], &args)
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(&written, app.asyncapi());
    assert_eq!(
        written["operations"]["receive.billing.orders"]["action"],
        "receive"
    );
    app.shutdown().await.unwrap();

    // Nobody answers there any more.
    let out = tokio::task::spawn_blocking(move || {
        kafkactor_in(&dir, &[], &["asyncapi", "--from", &from, "--timeout", "2s"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/asyncapi"),
        "{stderr}"
    );
}
