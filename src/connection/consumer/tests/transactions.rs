//! A transactional subscription's commits: its outputs are committed with
//! their offsets on shutdown and on revocation, whatever a transaction
//! under way does meanwhile, and without the outputs the broker refuses; a
//! transaction of unknown outcome fails the connection.

use crate::connection::protocol::Completed;

use super::*;

/// An output named `name`, to `partition` of topic `out`.
fn output(name: &str, partition: Option<i32>) -> OutgoingRecord {
    OutgoingRecord {
        topic: Arc::from("out"),
        partition,
        key: None,
        headers: Headers::new(),
        payload: Some(bytes::Bytes::copy_from_slice(name.as_bytes())),
        timestamp_ms: 0,
    }
}

/// Records `0..n` of `p0` read, each finished with one output named after
/// its offset (`bad` goes to a partition the broker refuses).
async fn read_and_finish(
    fake: &Fake,
    conn: &Addr<ConsumerConnection>,
    p0: &TopicPartition,
    n: i64,
    bad: Option<i64>,
) {
    until("the first poll", || {
        fake.0.lock().unwrap().pending.is_some()
    })
    .await;
    fake.fire(vec![
        ConsumerEvent::Assigned(vec![p0.clone()]),
        ConsumerEvent::Records((0..n).map(|o| record(p0, o)).collect()),
    ]);
    until("the records tracked", || {
        fake.0.lock().unwrap().polls.len() >= 2
    })
    .await;
    let outputs = (0..n)
        .map(|o| {
            let partition = (Some(o) == bad).then_some(7);
            (record(p0, o), vec![output(&format!("o{o}"), partition)])
        })
        .collect();
    conn.send(Completed((0..n).map(|o| record(p0, o)).collect(), outputs))
        .await
        .unwrap();
}

fn transactional(commit_interval: Duration) -> ConsumerSettings {
    ConsumerSettings {
        commit_interval,
        transactional: Some(crate::broker::PartitionCounts::default()),
        ..settings(100)
    }
}

/// Shutdown of a transactional subscription's connection with outputs
/// pending (no periodic commit ran: a long interval): the final commit is
/// one transaction holding every output with the offsets. It was a plain
/// commit of the offsets, which dropped the outputs.
#[actix::test]
async fn the_final_commit_writes_the_outputs_pending() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    let conn = start(
        &fake,
        Sink::default().start(),
        transactional(Duration::from_secs(60)),
    );
    read_and_finish(&fake, &conn, &p0, 3, None).await;
    conn.send(kafkactor_actors::Shutdown).await.unwrap();
    let script = fake.0.lock().unwrap();
    assert!(
        script.commits.is_empty(),
        "plain commits: {:?}",
        script.commits
    );
    assert_eq!(
        script.transactions,
        [(
            vec!["o0".into(), "o1".into(), "o2".into()],
            vec![(p0.clone(), 3)]
        )]
    );
}

/// A periodic transaction holding a partition's outputs is under way when
/// the partition is revoked, and then fails: the revocation waits for it
/// and commits the partition's offsets with those outputs. It committed
/// the offsets at once, and the failed transaction's outputs were dropped.
#[actix::test]
async fn a_revocation_keeps_the_outputs_of_a_failed_transaction() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().hold_transactions = true;
    let _conn = {
        let conn = start(
            &fake,
            Sink::default().start(),
            transactional(Duration::from_millis(1)),
        );
        read_and_finish(&fake, &conn, &p0, 3, None).await;
        conn
    };
    until("a periodic transaction under way", || {
        !fake.0.lock().unwrap().held.is_empty()
    })
    .await;
    fake.fire(vec![ConsumerEvent::Revoked(vec![p0.clone()])]);
    until("the revocation seen", || {
        fake.0.lock().unwrap().polls.len() >= 3
    })
    .await;
    // The transaction under way fails as a whole; from now on they commit.
    let (_, failed) = {
        let mut script = fake.0.lock().unwrap();
        script.hold_transactions = false;
        script.held.pop_front().unwrap()
    };
    let _ = failed.send(Err(crate::Error::commit("broker went away", true).into()));
    until("the revoked partition committed", || {
        !fake.0.lock().unwrap().transactions.is_empty()
    })
    .await;
    let script = fake.0.lock().unwrap();
    assert_eq!(
        script.transactions,
        [(
            vec!["o0".into(), "o1".into(), "o2".into()],
            vec![(p0.clone(), 3)]
        )]
    );
}

/// One output the broker refuses (a partition its topic does not have):
/// its record is handed back to be dead-lettered and the partition is not
/// committed past it; the outputs of the other records commit, those below
/// it at once, those above once it is settled. Every transaction failed
/// with the same outputs before.
#[actix::test]
async fn a_refused_output_is_isolated_and_the_rest_commits() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().partitions = Some(1);
    let sink = Sink::default();
    let refused = sink.refused.clone();
    let conn = start(&fake, sink.start(), transactional(Duration::from_millis(1)));
    read_and_finish(&fake, &conn, &p0, 3, Some(1)).await;
    until("record 1 handed back", || *refused.lock().unwrap() == [1]).await;
    until("the outputs below it committed", || {
        !fake.0.lock().unwrap().transactions.is_empty()
    })
    .await;
    assert_eq!(
        fake.0.lock().unwrap().transactions,
        [(vec!["o0".to_string()], vec![(p0.clone(), 1)])]
    );
    // Dead-lettered: its fate is final again, and the rest commits.
    conn.send(Completed(vec![record(&p0, 1)], Vec::new()))
        .await
        .unwrap();
    until("the rest committed", || {
        fake.0.lock().unwrap().transactions.len() == 2
    })
    .await;
    assert_eq!(
        fake.0.lock().unwrap().transactions[1],
        (vec!["o2".to_string()], vec![(p0.clone(), 3)])
    );
}

/// A transaction whose outcome the client could not find out (the broker
/// went away while it committed): the connection neither writes its
/// outputs again (they may be visible already) nor drops them (they may
/// not be): it fails, and its next incarnation reads the committed offsets
/// afresh. Before, the outputs were written again in the next transaction
/// (95 outputs twice in a soak with one Kafka kill).
#[actix::test]
async fn a_transaction_of_unknown_outcome_fails_the_connection() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().hold_transactions = true;
    let conn = start(
        &fake,
        Sink::default().start(),
        transactional(Duration::from_millis(1)),
    );
    read_and_finish(&fake, &conn, &p0, 3, None).await;
    until("a transaction under way", || {
        !fake.0.lock().unwrap().held.is_empty()
    })
    .await;
    let (_, tx) = fake.0.lock().unwrap().held.pop_front().unwrap();
    let _ = tx.send(Err(TransactionFailed {
        error: crate::Error::commit("the broker went away", true),
        refused: Vec::new(),
        undetermined: true,
    }));
    until("the connection failed", || !conn.connected()).await;
    let script = fake.0.lock().unwrap();
    assert!(
        script.held.is_empty() && script.transactions.is_empty(),
        "written again"
    );
}
