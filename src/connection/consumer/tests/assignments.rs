//! Polls and assignments: group events that arrive while the connection
//! has no credit are never lost, and an assignment repeated without a
//! revocation returns the credit of what it replaced.

use crate::connection::protocol::Completed;

use super::*;

/// An assignment answered to a poll made without credit, just as credit
/// frees up, reaches the connection: it never drops a poll it made.
#[actix::test]
async fn an_assignment_answered_while_credit_frees_up_is_not_lost() {
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let fake = Fake::default();
    {
        let mut script = fake.0.lock().unwrap();
        script.answers.push_back(vec![
            ConsumerEvent::Assigned(vec![p0.clone()]),
            ConsumerEvent::Records(vec![record(&p0, 0)]),
        ]);
    }
    let sink = Sink::default();
    let conn = connection(&fake, sink.start(), 1);
    until("a poll without credit", || {
        fake.0.lock().unwrap().polls == [1, 0]
    })
    .await;
    // Record 0 finishes: a commit is scheduled (and stays pending), and
    // the credit freed ends the poll without credit; the next one brings
    // record 1.
    fake.0
        .lock()
        .unwrap()
        .answers
        .push_back(vec![ConsumerEvent::Records(vec![record(&p0, 1)])]);
    conn.do_send(Completed(vec![record(&p0, 0)], Vec::new()));
    until("a poll without credit again", || {
        fake.0.lock().unwrap().polls == [1, 0, 1, 0]
    })
    .await;
    // The client answers that poll with an assignment, and in the same
    // turn record 1 finishes: credit frees up before the connection has
    // taken the answer.
    fake.fire(vec![ConsumerEvent::Assigned(vec![p1.clone()])]);
    conn.do_send(Completed(vec![record(&p0, 1)], Vec::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !conn.send(Owned).await.unwrap().contains(&p1) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the assignment"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fake.0.lock().unwrap().lost, 0, "an answer was dropped");
}

/// A partition assigned again without a revocation in between: what was
/// in flight of the first assignment gives its credit back.
#[actix::test]
async fn a_repeated_assignment_returns_the_credit_of_what_it_replaced() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    {
        let mut script = fake.0.lock().unwrap();
        script.answers.push_back(vec![
            ConsumerEvent::Assigned(vec![p0.clone()]),
            ConsumerEvent::Records(vec![record(&p0, 0), record(&p0, 1)]),
        ]);
        script
            .answers
            .push_back(vec![ConsumerEvent::Assigned(vec![p0.clone()])]);
    }
    let sink = Sink::default();
    let _conn = connection(&fake, sink.start(), 4);
    // After the second assignment nothing is in flight: the next poll has
    // the whole credit.
    until("a poll after the second assignment", || {
        fake.0.lock().unwrap().polls.len() >= 3
    })
    .await;
    assert_eq!(fake.0.lock().unwrap().polls, [4, 2, 4]);
}
