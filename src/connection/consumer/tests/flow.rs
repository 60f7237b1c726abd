//! Flow control: the window is refilled in batches, not a record at a
//! time as places free up.

use crate::connection::protocol::Completed;

use super::*;

/// With 256 records in flight finishing one by one, no poll takes fewer
/// than 64 records: the next poll with credit waits until 64 places are
/// free, and then takes all of them.
#[actix::test]
async fn the_window_is_refilled_in_batches() {
    let p0 = TopicPartition::new("t", 0);
    let fake = Fake::default();
    fake.0.lock().unwrap().answers.push_back(vec![
        ConsumerEvent::Assigned(vec![p0.clone()]),
        ConsumerEvent::Records((0..256).map(|o| record(&p0, o)).collect()),
    ]);
    let sink = Sink::default();
    let conn = connection(&fake, sink.start(), 256);
    until("a poll without credit", || {
        fake.0.lock().unwrap().polls == [256, 0]
    })
    .await;
    for offset in 0..100 {
        conn.send(Completed(vec![record(&p0, offset)], Vec::new()))
            .await
            .unwrap();
    }
    until("a poll with credit", || {
        fake.0.lock().unwrap().polls.len() >= 3
    })
    .await;
    // The poll without credit is woken (answered empty) once 64 places
    // are free; the next takes the places free by then.
    let polls = fake.0.lock().unwrap().polls.clone();
    assert!(
        polls.len() == 3 && polls[..2] == [256, 0] && (64..=100).contains(&polls[2]),
        "{polls:?}"
    );
}
