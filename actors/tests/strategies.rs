//! Restart strategies: which children a supervisor restarts when one exits,
//! and in which order it stops and starts them.

mod support;

use std::time::Duration;

use kafkactor_actors::prelude::*;
use support::*;

fn three(
    strategy: Strategy,
    events: &Events,
    log: &Log,
) -> (SupervisorHandle, [ChildRef<Worker>; 3]) {
    let (a, a_ref) = worker("a", log);
    let (b, b_ref) = worker("b", log);
    let (c, c_ref) = worker("c", log);
    let root = Supervisor::new("root")
        .strategy(strategy)
        .backoff(Backoff::none())
        .events(events.clone())
        .child(a)
        .child(b)
        .child(c)
        .start_root();
    (root, [a_ref, b_ref, c_ref])
}

#[actix::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (root, [a, b, c]) = three(Strategy::OneForOne, &events, &log);
    rx.expect(&["started root/a", "started root/b", "started root/c"])
        .await;
    let (b1, n) = current(&b).await;

    b1.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/b panicked: boom",
        "restarting root/b 0ns",
        "restarted root/b 1",
    ])
    .await;
    let (_, n2) = newer_than(&b, n).await;
    assert_eq!(n2, n + 1);
    assert_eq!(current(&a).await.1, 1, "a kept its first incarnation");
    assert_eq!(current(&c).await.1, 1, "c kept its first incarnation");
    assert_eq!(log.count("a stopped") + log.count("c stopped"), 0);

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped root/c normal exit",
        "stopped root/b normal exit",
        "stopped root/a normal exit",
    ])
    .await;
    rx.assert_drained();
}

#[actix::test]
async fn one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (root, [a, b, c]) = three(Strategy::OneForAll, &events, &log);
    rx.expect(&["started root/a", "started root/b", "started root/c"])
        .await;
    let (b1, _) = current(&b).await;

    b1.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/b panicked: boom",
        "restarting root/a 0ns",
        "restarting root/b 0ns",
        "restarting root/c 0ns",
        "stopped root/c normal exit",
        "stopped root/a normal exit",
        "restarted root/a 1",
        "restarted root/b 1",
        "restarted root/c 1",
    ])
    .await;
    for (name, child) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(
            current(child).await.1,
            2,
            "{name} is on its second incarnation"
        );
    }
    // The survivors were asked to stop in reverse declared order.
    let shutdowns: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.ends_with("shutdown"))
        .collect();
    assert_eq!(shutdowns, ["c shutdown", "a shutdown"]);

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (root, [a, b, c]) = three(Strategy::RestForOne, &events, &log);
    rx.expect(&["started root/a", "started root/b", "started root/c"])
        .await;
    let (b1, _) = current(&b).await;

    b1.do_send(FailWith("bad input"));
    rx.expect(&[
        "failed root/b failed: bad input",
        "restarting root/b 0ns",
        "restarting root/c 0ns",
        "stopped root/c normal exit",
        "restarted root/b 1",
        "restarted root/c 1",
    ])
    .await;
    assert_eq!(
        current(&a).await.1,
        1,
        "a, declared before b, was left alone"
    );
    assert_eq!(current(&b).await.1, 2);
    assert_eq!(current(&c).await.1, 2);
    assert_eq!(log.count("a stopped"), 0);

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn one_for_all_does_not_restart_a_temporary_sibling() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (t, t_ref) = worker("t", &log);
    let (b, b_ref) = worker("b", &log);
    let root = Supervisor::new("root")
        .strategy(Strategy::OneForAll)
        .backoff(Backoff::none())
        .events(events.clone())
        .child(t.restart(Restart::Temporary))
        .child(b)
        .start_root();
    rx.expect(&["started root/t", "started root/b"]).await;
    current(&t_ref).await;
    let (b1, _) = current(&b_ref).await;

    b1.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/b panicked: boom",
        "restarting root/b 0ns",
        "stopped root/t normal exit",
        "restarted root/b 1",
    ])
    .await;
    current(&b_ref).await;
    assert!(t_ref.get().is_none(), "the temporary child stays stopped");
    assert_eq!(log.count("t started"), 1);

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&["stopped root/b normal exit"]).await;
    rx.assert_drained();
}

/// A child whose restart is pending (in backoff) when a group restart that
/// includes it begins must be started once, by the group, not twice.
#[actix::test]
async fn a_pending_restart_is_taken_over_by_a_group_restart() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (a, a_ref) = worker("a", &log);
    let (b, _) = worker("b", &log);
    let (c, c_ref) = worker("c", &log);
    let backoff = Duration::from_millis(200);
    let root = Supervisor::new("root")
        .strategy(Strategy::RestForOne)
        .backoff(Backoff::exponential(backoff, backoff).jitter(0.0))
        .events(events.clone())
        .child(a)
        .child(b)
        .child(c)
        .start_root();
    rx.expect(&["started root/a", "started root/b", "started root/c"])
        .await;
    let (a1, _) = current(&a_ref).await;
    let (c1, _) = current(&c_ref).await;

    c1.do_send(Crash("first"));
    rx.expect(&["failed root/c panicked: first", "restarting root/c 200ms"])
        .await;
    // While c waits out its backoff, a fails: the group a, b, c restarts.
    a1.do_send(Crash("second"));
    rx.expect(&[
        "failed root/a panicked: second",
        "restarting root/a 200ms",
        "restarting root/b 200ms",
        "restarting root/c 200ms",
        "stopped root/b normal exit",
        "restarted root/a 1",
        "restarted root/b 1",
        "restarted root/c 1",
    ])
    .await;
    for name in ["a", "b", "c"] {
        eventually("every child running once", || log.alive(name) == 1).await;
    }
    assert_eq!(
        log.count("c started"),
        2,
        "c started once by the group restart"
    );

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped root/c normal exit",
        "stopped root/b normal exit",
        "stopped root/a normal exit",
    ])
    .await;
    rx.assert_drained();
    for name in ["a", "b", "c"] {
        assert_eq!(log.alive(name), 0, "{name} left running");
    }
}
