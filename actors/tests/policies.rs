//! Restart policies (permanent, transient, temporary) and the ways a child can
//! fail: a panic in a handler, in a spawned future, in a `ResponseActFuture`,
//! and `fail(ctx, reason)`.

mod support;

use kafkactor_actors::prelude::*;
use support::*;

fn one(spec: ChildSpec, events: &Events) -> SupervisorHandle {
    Supervisor::new("root")
        .backoff(Backoff::none())
        .restart_limit(100, std::time::Duration::from_secs(10))
        .events(events.clone())
        .child(spec)
        .start_root()
}

#[actix::test]
async fn permanent_restarts_after_a_normal_exit_and_after_a_failure() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (spec, p) = worker("p", &log);
    let root = one(spec, &events);
    rx.expect(&["started root/p"]).await;

    current(&p).await.0.do_send(Quit);
    // A normal exit is not a failure: no Failed event, but a restart.
    rx.expect(&["restarting root/p 0ns", "restarted root/p 1"])
        .await;
    assert_eq!(p.last_exit(), Some((1, Exit::Normal)));

    newer_than(&p, 1).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/p panicked: boom",
        "restarting root/p 0ns",
        "restarted root/p 2",
    ])
    .await;
    assert_eq!(newer_than(&p, 2).await.1, 3);

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn transient_restarts_only_after_a_failure() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (spec, t) = worker("t", &log);
    let root = one(spec.restart(Restart::Transient), &events);
    rx.expect(&["started root/t"]).await;

    current(&t).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/t panicked: boom",
        "restarting root/t 0ns",
        "restarted root/t 1",
    ])
    .await;

    newer_than(&t, 1)
        .await
        .0
        .do_send(FailWith("lost connection"));
    rx.expect(&[
        "failed root/t failed: lost connection",
        "restarting root/t 0ns",
        "restarted root/t 2",
    ])
    .await;

    newer_than(&t, 2).await.0.do_send(Quit);
    rx.expect(&["stopped root/t normal exit"]).await;
    assert_eq!(t.last_exit(), Some((3, Exit::Normal)));
    assert!(
        t.get().is_none(),
        "a transient child that exited normally stays stopped"
    );

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.assert_drained();
    assert_eq!(log.count("t started"), 3);
}

#[actix::test]
async fn temporary_is_never_restarted() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (crashes, crashes_ref) = worker("crashes", &log);
    let (quits, quits_ref) = worker("quits", &log);
    let root = Supervisor::new("root")
        .backoff(Backoff::none())
        .events(events.clone())
        .child(crashes.restart(Restart::Temporary))
        .child(quits.restart(Restart::Temporary))
        .start_root();
    rx.expect(&["started root/crashes", "started root/quits"])
        .await;

    current(&crashes_ref).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/crashes panicked: boom",
        "stopped root/crashes panicked: boom",
    ])
    .await;
    current(&quits_ref).await.0.do_send(Quit);
    rx.expect(&["stopped root/quits normal exit"]).await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.assert_drained();
    assert_eq!(log.count("crashes started"), 1);
    assert_eq!(log.count("quits started"), 1);
}

/// Every way a child can fail, and the exit it is reported with.
#[actix::test]
async fn failures_are_caught_wherever_they_happen_in_the_child() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (spec, w) = worker("w", &log);
    let root = one(spec, &events);
    rx.expect(&["started root/w"]).await;

    current(&w).await.0.do_send(Crash("in handler"));
    rx.expect(&[
        "failed root/w panicked: in handler",
        "restarting root/w 0ns",
        "restarted root/w 1",
    ])
    .await;
    assert_eq!(
        w.last_exit(),
        Some((1, Exit::Panicked("in handler".into())))
    );

    newer_than(&w, 1)
        .await
        .0
        .do_send(CrashSpawned("in ctx.spawn"));
    rx.expect(&[
        "failed root/w panicked: in ctx.spawn",
        "restarting root/w 0ns",
        "restarted root/w 2",
    ])
    .await;
    assert_eq!(
        w.last_exit(),
        Some((2, Exit::Panicked("in ctx.spawn".into())))
    );

    newer_than(&w, 2)
        .await
        .0
        .do_send(CrashInResponse("in ResponseActFuture"));
    rx.expect(&[
        "failed root/w panicked: in ResponseActFuture",
        "restarting root/w 0ns",
        "restarted root/w 3",
    ])
    .await;

    newer_than(&w, 3).await.0.do_send(FailWith("gave up"));
    rx.expect(&[
        "failed root/w failed: gave up",
        "restarting root/w 0ns",
        "restarted root/w 4",
    ])
    .await;
    assert_eq!(w.last_exit(), Some((4, Exit::Failed("gave up".into()))));

    // The fifth incarnation works.
    let (addr, n) = newer_than(&w, 4).await;
    assert_eq!(n, 5);
    assert_eq!(within("ping", addr.send(Ping)).await.unwrap(), "w");
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

/// actix runs a `ResponseFuture` on a detached task: a panic there is not
/// caught as a failure of the child (see the crate docs). The caller's
/// request fails, and the child keeps running.
#[actix::test]
async fn a_panic_in_a_response_future_does_not_fail_the_child() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (spec, w) = worker("w", &log);
    let root = one(spec, &events);
    rx.expect(&["started root/w"]).await;
    let (addr, n) = current(&w).await;

    let reply = within("reply", addr.send(CrashInDetachedFuture("detached"))).await;
    assert!(reply.is_err(), "the request fails: {reply:?}");
    // Still the same incarnation, answering, and nothing was supervised.
    assert_eq!(within("ping", addr.send(Ping)).await.unwrap(), "w");
    assert_eq!(current(&w).await.1, n);
    rx.assert_drained();
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}
