//! Request-reply: callers send requests and await typed replies, which
//! come back on a reply partition each caller reads without a group;
//! responders answer from their handlers (`Delivery::reply`).
//!
//! 1,000 concurrent requests from two callers to two responders are each
//! answered once, to their own caller (a reply that comes twice is
//! counted, never handed to a request). With a responder killed and
//! stopped mid-stream, a caller gets its own reply or times out, never
//! another's. A request the responder fails for good gets an error reply
//! at once (rejected, undecodable); a request nobody answers times out
//! with a typed error; a reply of another type is a typed decode error;
//! a reply that comes after its caller gave up is counted. On the embedded
//! broker and Apache Kafka (and the mock cluster for the first).
//! A request the responder cannot route or decode is answered the same way.
//! A caller's reply reader killed mid-stream misses no reply: each
//! incarnation resumes where the last one left off.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafkactor::prelude::*;
use kafkactor::{Error, Failure, Replies, Requester};
use serde::{Deserialize, Serialize};
use support::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Ask {
    caller: u32,
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Answer {
    caller: u32,
    n: u64,
    doubled: u64,
    responder: String,
}

/// A responder in `group`: doubles `n` (taking `pause` first), rejects
/// multiples of `reject` (none when 0), and counts what it answered.
async fn responder(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    name: &'static str,
    reject: u64,
    answered: Arc<AtomicU64>,
) -> App {
    responder_pausing(tb, topic, group, name, reject, answered, Duration::ZERO).await
}

async fn responder_pausing(
    tb: &TestBroker,
    topic: &str,
    group: &str,
    name: &'static str,
    reject: u64,
    answered: Arc<AtomicU64>,
    pause: Duration,
) -> App {
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic).group(group).concurrency(4),
            move |d: Delivery<Ask>| {
                let answered = answered.clone();
                async move {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    let ask = d.message();
                    if reject > 0 && ask.n % reject == 0 {
                        return Err(Failure::reject(format!("{} is refused", ask.n)));
                    }
                    d.reply(&Answer {
                        caller: ask.caller,
                        n: ask.n,
                        doubled: ask.n * 2,
                        responder: name.to_string(),
                    })
                    .await?;
                    answered.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
        )
        .start()
        .await
        .unwrap()
}

/// A caller reading `partition` of `replies`.
async fn caller(tb: &TestBroker, replies: &str, partition: i32) -> App {
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .replies(Replies::on(replies).partition(partition))
        .start()
        .await
        .unwrap()
}

/// `count` concurrent requests of `caller` to `topic`, numbered from
/// `from`: each one's answer.
async fn ask_all(
    requester: &Requester,
    topic: &str,
    caller: u32,
    from: u64,
    count: u64,
    timeout: Duration,
) -> Vec<(u64, kafkactor::Result<Answer>)> {
    join_all((from..from + count).map(|n| {
        let requester = requester.clone();
        let topic = topic.to_string();
        async move {
            let ask = Publish::to(&topic)
                .key(format!("k-{}", n % 50))
                .message(&Ask { caller, n })
                .unwrap();
            (n, requester.request::<Answer>(ask, timeout).await)
        }
    }))
    .await
}

async fn concurrent_requests(tb: TestBroker) {
    let (requests, replies) = (unique("requests"), unique("replies"));
    tb.topics(&[&requests]).await;
    tb.topic(&replies).await;
    let group = unique("doubler");
    let answered = Arc::new(AtomicU64::new(0));
    let r1 = responder(&tb, &requests, &group, "r1", 0, answered.clone()).await;
    let r2 = responder(&tb, &requests, &group, "r2", 0, answered.clone()).await;
    // Both responders in the group before the requests (a rebalance under
    // way hands records out twice: then a request is answered twice).
    for r in [&r1, &r2] {
        let patience = tb.patience(Duration::from_secs(10));
        until_owned("each responder owns a partition", patience, r, |n| n >= 1).await;
    }
    let (c1, c2) = (
        caller(&tb, &replies, 0).await,
        caller(&tb, &replies, 1).await,
    );
    let (q1, q2) = (c1.requester(), c2.requester());
    let timeout = tb.patience(Duration::from_secs(20));
    let (a1, a2) = futures_util::join!(
        ask_all(&q1, &requests, 1, 0, 500, timeout),
        ask_all(&q2, &requests, 2, 500, 500, timeout)
    );
    let mut responders = std::collections::HashSet::new();
    for (caller, answers) in [(1, a1), (2, a2)] {
        assert_eq!(answers.len(), 500);
        for (n, answer) in answers {
            let answer = answer.unwrap_or_else(|e| panic!("request {n} of caller {caller}: {e}"));
            assert_eq!(
                (answer.caller, answer.n, answer.doubled),
                (caller, n, n * 2)
            );
            responders.insert(answer.responder);
        }
    }
    // Each caller got one answer per request, its own. A record handed out
    // twice (at least once: the group rebalancing mid-stream) is answered
    // twice; the second reply is counted, never handed to a request.
    eventually(
        "every extra answer counted as unmatched",
        Duration::from_secs(10),
        || {
            let extra = answered.load(Ordering::Relaxed).saturating_sub(1_000);
            q1.unmatched_replies() + q2.unmatched_replies() == extra
        },
    )
    .await;
    assert!(answered.load(Ordering::Relaxed) >= 1_000);
    for app in [c1, c2, r1, r2] {
        app.shutdown().await.unwrap();
    }
    assert_eq!(responders.len(), 2, "both responders answered");
}

on_every_broker!(
    a_thousand_concurrent_requests_each_get_their_own_reply,
    super::concurrent_requests,
    2
);

async fn responder_killed(tb: TestBroker) {
    let (requests, replies) = (unique("requests"), unique("replies"));
    tb.topics(&[&requests]).await;
    tb.topic(&replies).await;
    let group = unique("doubler");
    let answered = Arc::new(AtomicU64::new(0));
    // A few milliseconds a request: the kill lands mid-stream.
    let pause = Duration::from_millis(5);
    let r1 = responder_pausing(&tb, &requests, &group, "r1", 0, answered.clone(), pause).await;
    let r2 = responder_pausing(&tb, &requests, &group, "r2", 0, answered.clone(), pause).await;
    let (c1, c2) = (
        caller(&tb, &replies, 0).await,
        caller(&tb, &replies, 1).await,
    );
    let (q1, q2) = (c1.requester(), c2.requester());
    let timeout = tb.patience(Duration::from_secs(15));
    let asking = async {
        futures_util::join!(
            ask_all(&q1, &requests, 1, 0, 500, timeout),
            ask_all(&q2, &requests, 2, 500, 500, timeout)
        )
    };
    let killing = async {
        // Mid-stream: once some are answered, r2's handlers and its
        // connection are killed, then r2 is stopped.
        eventually("some requests answered", timeout, || {
            answered.load(Ordering::Relaxed) >= 100
        })
        .await;
        let group = group.clone();
        let path = format!("subscription:{group}:{requests}");
        r2.fail_actor(&format!("{path}/handlers/handler-0"), "killed")
            .await
            .unwrap();
        r2.fail_actor(&format!("{path}/consumer-connection"), "killed")
            .await
            .unwrap();
        let at_kill = answered.load(Ordering::Relaxed);
        r2.shutdown().await.unwrap();
        at_kill
    };
    let ((a1, a2), at_kill) = futures_util::join!(asking, killing);
    assert!(
        at_kill < 900,
        "the kill came after {at_kill} answers: not mid-stream"
    );
    let mut timed_out = 0;
    for (caller, answers) in [(1, a1), (2, a2)] {
        for (n, answer) in answers {
            match answer {
                Ok(answer) => {
                    assert_eq!(
                        (answer.caller, answer.n, answer.doubled),
                        (caller, n, n * 2)
                    )
                }
                Err(Error::NoReply { .. }) => timed_out += 1,
                Err(e) => panic!("request {n} of caller {caller}: {e}"),
            }
        }
    }
    // r1 takes over r2's partitions and answers what r2 left (on Kafka
    // after a rebalance, well within the timeout): a record is never
    // lost, so no caller times out here.
    assert_eq!(timed_out, 0, "requests left unanswered");
    for app in [c1, c2, r1] {
        app.shutdown().await.unwrap();
    }
}

on_memory_and_kafka!(
    a_responder_killed_mid_stream_answers_nobody_elses_caller,
    super::responder_killed,
    2
);

async fn failures_answer_at_once(tb: TestBroker) {
    let (requests, replies) = (unique("requests"), unique("replies"));
    tb.topics(&[&requests]).await;
    let r = responder(&tb, &requests, &unique("g"), "r", 10, Arc::default()).await;
    let c = caller(&tb, &replies, 0).await;
    let q = c.requester();
    let timeout = tb.patience(Duration::from_secs(20));
    // Rejected by the handler: an error reply, long before the timeout.
    let started = Instant::now();
    let ask = Publish::to(&requests)
        .message(&Ask { caller: 1, n: 20 })
        .unwrap();
    match q.request::<Answer>(ask, timeout).await {
        Err(Error::Refused { kind, reason }) => {
            assert_eq!(kind, "rejected");
            assert_eq!(reason, "20 is refused");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < timeout / 2, "{:?}", started.elapsed());
    // Not an `Ask`: dead-lettered unhandled, answered as such.
    let other = Publish::to(&requests).message(&"not an ask").unwrap();
    match q.request::<Answer>(other, timeout).await {
        Err(Error::Refused { kind, .. }) => assert_eq!(kind, "unroutable"),
        other => panic!("{other:?}"),
    }
    let garbage = Publish::to(&requests)
        .message(&"not an ask")
        .unwrap()
        .type_name("Ask");
    match q.request::<Answer>(garbage, timeout).await {
        Err(Error::Refused { kind, .. }) => assert_eq!(kind, "decode"),
        other => panic!("{other:?}"),
    }
    // Answered, but not with what the caller expects: a typed error.
    let ask = Publish::to(&requests)
        .message(&Ask { caller: 1, n: 3 })
        .unwrap();
    match q.request::<String>(ask, timeout).await {
        Err(Error::Decode(_)) => {}
        other => panic!("{other:?}"),
    }
    // And a good one still works.
    let ask = Publish::to(&requests)
        .message(&Ask { caller: 1, n: 4 })
        .unwrap();
    assert_eq!(q.request::<Answer>(ask, timeout).await.unwrap().doubled, 8);
    r.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

on_memory_and_kafka!(
    a_failed_request_is_answered_with_an_error_at_once,
    super::failures_answer_at_once,
    2
);

async fn nobody_answers(tb: TestBroker) {
    let (nobody, replies) = (unique("nobody"), unique("replies"));
    tb.topics(&[&nobody]).await;
    let c = caller(&tb, &replies, 0).await;
    let started = Instant::now();
    let ask = Publish::to(&nobody)
        .message(&Ask { caller: 1, n: 1 })
        .unwrap();
    let answer = c
        .requester()
        .request::<Answer>(ask, Duration::from_millis(500))
        .await;
    assert_eq!(
        answer,
        Err(Error::NoReply {
            topic: nobody.clone(),
            timeout_ms: 500
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    c.shutdown().await.unwrap();
}

on_memory_and_kafka!(a_request_nobody_answers_times_out, super::nobody_answers, 2);

async fn late_reply(tb: TestBroker) {
    let (requests, replies) = (unique("requests"), unique("replies"));
    tb.topics(&[&requests]).await;
    let r = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(requests.as_str()).group(unique("slow").as_str()),
            |d: Delivery<Ask>| async move {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                d.reply(&d.message().n).await?;
                Ok::<_, Failure>(())
            },
        )
        .start()
        .await
        .unwrap();
    let c = caller(&tb, &replies, 0).await;
    let q = c.requester();
    // The first one waits long enough (the group forms meanwhile on
    // Kafka); the second gives up before its reply comes.
    let ask = |n| {
        Publish::to(&requests)
            .message(&Ask { caller: 1, n })
            .unwrap()
    };
    let patient = tb.patience(Duration::from_secs(10));
    assert_eq!(q.request::<u64>(ask(1), patient).await.unwrap(), 1);
    let answer = q.request::<u64>(ask(2), Duration::from_millis(300)).await;
    assert!(matches!(answer, Err(Error::NoReply { .. })), "{answer:?}");
    eventually("the late reply counted", Duration::from_secs(10), || {
        q.unmatched_replies() == 1
    })
    .await;
    let metrics = c.metrics_text().await;
    assert!(
        metrics.contains("kafkactor_replies_unmatched_total 1"),
        "{metrics}"
    );
    r.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

on_memory_and_kafka!(a_late_reply_is_counted, super::late_reply, 2);

#[actix::test]
async fn bad_settings_are_typed_errors() {
    let tb = TestBroker::memory(2);
    // No reply topic: a request says how to get one.
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .start()
        .await
        .unwrap();
    let ask = Publish::to("somewhere").message(&1u8).unwrap();
    let refused = app
        .requester()
        .request::<u8>(ask, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Config(m) if m.contains("AppBuilder::replies")),
        "{refused}"
    );
    app.shutdown().await.unwrap();
    // A partition the reply topic does not have.
    let topic = unique("replies");
    tb.topic(&topic).await;
    let refused = Kafkactor::builder()
        .broker(tb.broker.clone())
        .replies(Replies::on(&topic).partition(5))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Config(m) if m.contains("no partition 5")),
        "{refused}"
    );
    // Not a topic name.
    let refused = Kafkactor::builder()
        .broker(tb.broker.clone())
        .replies(Replies::on("no spaces allowed"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::InvalidTopic(_)), "{refused}");
}

async fn reader_killed(tb: TestBroker) {
    let (requests, replies) = (unique("requests"), unique("replies"));
    tb.topics(&[&requests]).await;
    let answered = Arc::new(AtomicU64::new(0));
    let pause = Duration::from_millis(2);
    let r = responder_pausing(
        &tb,
        &requests,
        &unique("g"),
        "r",
        0,
        answered.clone(),
        pause,
    )
    .await;
    let c = caller(&tb, &replies, 0).await;
    let q = c.requester();
    let timeout = tb.patience(Duration::from_secs(15));
    let asking = ask_all(&q, &requests, 1, 0, 400, timeout);
    let killing = async {
        eventually("some requests answered", timeout, || {
            answered.load(Ordering::Relaxed) >= 50
        })
        .await;
        // The reply reader, killed twice mid-stream: each incarnation
        // resumes where the last one left off.
        let path = format!("replies:{replies}[0]");
        for _ in 0..2 {
            // Once it runs again (the supervisor restarts it after a backoff).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.fail_actor(&path, "killed").await {
                    Ok(()) => break,
                    Err(Error::Unavailable(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => panic!("killing the reader: {e}"),
                }
            }
        }
        answered.load(Ordering::Relaxed)
    };
    let (answers, at_kill) = futures_util::join!(asking, killing);
    assert!(
        at_kill < 400,
        "the kills came after every answer: not mid-stream"
    );
    for (n, answer) in answers {
        let answer = answer.unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!((answer.n, answer.doubled), (n, n * 2));
    }
    r.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
}

on_memory_and_kafka!(
    a_reply_reader_killed_mid_stream_misses_no_reply,
    super::reader_killed,
    2
);
