//! A handler that panics on every record exhausts its restart limit: by
//! configuration, the records go to the dead-letter topic (the service keeps
//! running) or the escalation reaches the application with a clear reason.
//! Nothing hangs and nothing is lost.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kafkactor::actors::Backoff;
use kafkactor::prelude::*;
use kafkactor::{header, Error, OnRestartLimit};
use support::*;

#[actix::test]
async fn past_the_restart_limit_failing_records_are_dead_lettered_at_once() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("g");
    let log = Log::default();
    // Odd ids crash the handler; even ids are fine.
    let behaviour: Behaviour = Arc::new(|d: &Delivery<Order>| {
        if d.message().id % 2 == 1 {
            panic!("cannot handle order {}", d.message().id);
        }
        Outcome::Ack
    });
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .concurrency(2)
                .retry(RetryPolicy::exponential(3, Duration::from_millis(1)))
                .restart_limit(5, Duration::from_secs(30))
                .restart_backoff(Backoff::none())
                .on_restart_limit(OnRestartLimit::DeadLetter),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(200, 10)).await;
    let memory = broker.as_memory().unwrap();
    eventually("every record has a fate", Duration::from_secs(30), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    app.shutdown().await.unwrap();

    let dead = memory.records(&format!("{topic}.dlq"));
    assert_eq!(dead.len(), 100, "each crashing record dead-lettered once");
    let (mut limited, mut first_attempt) = (0, 0);
    for r in &dead {
        let order: Order = rmp_serde::from_slice(&r.payload).unwrap();
        assert_eq!(order.id % 2, 1);
        assert_eq!(r.headers.get_str(header::ERROR_KIND), Some("panic"));
        let reason = r.headers.get_str(header::ERROR_REASON).unwrap();
        assert!(
            reason.contains(&format!("cannot handle order {}", order.id)),
            "{reason}"
        );
        if reason.contains("restart limit exceeded") {
            limited += 1;
            first_attempt += (r.headers.get_str(header::ATTEMPT) == Some("1")) as usize;
        }
    }
    // The first few exhaust their retries; once past the limit, records are
    // dead-lettered on their first failure.
    assert!(
        limited >= 95,
        "{limited} of 100 dead-lettered past the limit"
    );
    assert!(
        first_attempt >= 95,
        "{first_attempt} of 100 dead-lettered without retries"
    );
    // The records the handler can handle were all handled, once.
    let acked = log.counts();
    assert_eq!(acked.len(), 100);
    assert!(acked.keys().all(|id| id % 2 == 0));
}

#[actix::test]
async fn with_escalate_the_application_stops_with_the_reason_and_loses_nothing() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let group = unique("g");
    let crashing: Behaviour =
        Arc::new(|d: &Delivery<Order>| panic!("poison order {}", d.message().id));
    let mut app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                // Fewer restarts allowed than attempts: the limit is reached
                // before any record exhausts its retries.
                .retry(RetryPolicy::exponential(3, Duration::from_millis(1)))
                .restart_limit(2, Duration::from_secs(30))
                .restart_backoff(Backoff::none())
                .on_restart_limit(OnRestartLimit::Escalate)
                // In-flight records cannot finish once the handlers are gone:
                // bound the drain that escalation still allows.
                .drain_timeout(Duration::from_millis(300)),
            probe(&Log::default(), "crashing", crashing),
        )
        .start()
        .await
        .unwrap();
    publish_all(&app, &topic, &orders(50, 5)).await;

    let result = tokio::time::timeout(Duration::from_secs(20), app.wait())
        .await
        .expect("no hang");
    match result {
        Err(Error::Escalated(reason)) => {
            assert!(reason.contains("poison order"), "{reason}");
            assert!(reason.contains("more than 2 restarts"), "{reason}");
        }
        other => panic!("expected an escalation, got {other:?}"),
    }
    let memory = broker.as_memory().unwrap();
    assert!(
        memory.records(&format!("{topic}.dlq")).is_empty(),
        "escalation dead-letters nothing"
    );
    assert_eq!(memory.lag(&group, &topic), 50, "nothing was committed");
    app.shutdown().await.expect_err("already escalated");

    // The fixed service picks everything up.
    let log = Log::default();
    let fixed = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(group.as_str()),
            probe(&log, "fixed", ack()),
        )
        .start()
        .await
        .unwrap();
    eventually("all handled after the fix", Duration::from_secs(10), || {
        log.len() >= 50
    })
    .await;
    fixed.shutdown().await.unwrap();
    assert_eq!(log.counts().len(), 50);
}

/// A handler that panics on every record passes its restart limit, and
/// every record is dead-lettered: the application is not ready
/// (`/health/ready` answers 503) with a `handlers:<group>` check naming
/// the restart limit and the dead letters; once records are handled again
/// and the limit's window has passed, it is ready again. Before, readiness
/// answered ready throughout.
#[actix::test]
async fn a_crash_loop_shows_in_readiness() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let broker = Broker::memory();
    let (topic, group) = (unique("orders"), unique("g"));
    let healthy = Arc::new(AtomicBool::new(false));
    let fine = healthy.clone();
    let behaviour: Behaviour = Arc::new(move |d: &Delivery<Order>| {
        if !fine.load(Ordering::SeqCst) {
            panic!("cannot handle order {}", d.message().id);
        }
        Outcome::Ack
    });
    let log = Log::default();
    let app = Kafkactor::builder()
        .broker(broker.clone())
        .serve_http("127.0.0.1:0")
        .subscribe(
            Subscription::to(topic.as_str())
                .group(group.as_str())
                .retry(RetryPolicy::exponential(2, Duration::from_millis(1)))
                .restart_limit(3, Duration::from_secs(2))
                .restart_backoff(Backoff::none())
                .on_restart_limit(OnRestartLimit::DeadLetter),
            probe(&log, "a", behaviour),
        )
        .start()
        .await
        .unwrap();
    let addr = app.http_addr().unwrap();
    let check = |health: &kafkactor::Health| {
        health
            .checks
            .iter()
            .find(|c| c.name == format!("handlers:{group}"))
            .cloned()
            .expect("the handlers' check")
    };
    assert!(check(&app.health().await).ok);
    publish_all(&app, &topic, &orders(150, 10)).await;
    let memory = broker.as_memory().unwrap();
    eventually(
        "every record dead-lettered",
        Duration::from_secs(30),
        || memory.lag(&group, &topic) == 0,
    )
    .await;
    assert_eq!(memory.records(&format!("{topic}.dlq")).len(), 150);
    let health = app.health().await;
    let failing = check(&health);
    assert!(!health.ready && !failing.ok, "{health:?}");
    assert!(
        failing.detail.contains("restart limit exceeded")
            && failing
                .detail
                .contains("the last 100 records finished were all dead-lettered"),
        "{}",
        failing.detail
    );
    let (status, body) = support::http::http_get(addr, "/health/ready")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("restart limit exceeded"), "{body}");

    // The handler works again: ready once a record is acknowledged and the
    // restart limit's window has passed.
    healthy.store(true, Ordering::SeqCst);
    publish_all(&app, &topic, &orders(1, 1)).await;
    eventually_async("ready again", Duration::from_secs(10), || async {
        app.health().await.ready
    })
    .await;
    let (status, _) = support::http::http_get(addr, "/health/ready")
        .await
        .unwrap();
    assert_eq!(status, 200);
    app.shutdown().await.unwrap();
}
