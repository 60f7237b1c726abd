//! Nested supervisors: escalation from a subtree to its parent, the parent
//! restarting the whole subtree from its factory, escalation reaching the root,
//! and significant children.

mod support;

use std::time::Duration;

use kafkactor_actors::prelude::*;
use support::*;

/// A factory for a nested supervisor `inner` with workers `w` and `s`, where
/// `w` is reached through `w_ref` across subtree restarts.
fn inner(
    events: &Events,
    log: &Log,
    w_ref: &ChildRef<Worker>,
    max_restarts: usize,
    significant_w: bool,
) -> impl FnMut() -> Supervisor + 'static {
    let (events, log, w_ref) = (events.clone(), log.clone(), w_ref.clone());
    move || {
        let w = worker_with("w", &log, &w_ref);
        let w = if significant_w { w.significant() } else { w };
        Supervisor::new("inner")
            .backoff(Backoff::none())
            .restart_limit(max_restarts, Duration::from_secs(10))
            .events(events.clone())
            .child(w)
            .child(worker("s", &log).0)
    }
}

fn root(
    events: &Events,
    max_restarts: usize,
    inner: impl FnMut() -> Supervisor + 'static,
) -> SupervisorHandle {
    Supervisor::new("root")
        .backoff(Backoff::none())
        .restart_limit(max_restarts, Duration::from_secs(10))
        .events(events.clone())
        .child(ChildSpec::graceful("inner", inner))
        .start_root()
}

const SUBTREE_STARTS: [&str; 3] = ["started root/inner", "started inner/w", "started inner/s"];

#[actix::test]
async fn a_nested_supervisor_escalates_and_its_parent_restarts_the_subtree() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    let root = root(&events, 5, inner(&events, &log, &w, 1, false));
    rx.expect(&SUBTREE_STARTS).await;

    current(&w).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed inner/w panicked: boom",
        "restarting inner/w 0ns",
        "restarted inner/w 1",
    ])
    .await;

    newer_than(&w, 1).await.0.do_send(Crash("boom"));
    let reason = "child `w` panicked: boom; more than 1 restarts within 10s";
    rx.expect(&[
        "failed inner/w panicked: boom",
        &format!("escalated inner: {reason}"),
        "stopped inner/s normal exit",
        &format!("failed root/inner failed: {reason}"),
        "restarting root/inner 0ns",
        "restarted root/inner 1",
        // The subtree is built again from the factory: fresh children.
        "started inner/w",
        "started inner/s",
    ])
    .await;
    assert_eq!(newer_than(&w, 2).await.1, 3);
    eventually("one live incarnation per worker", || {
        log.alive("w") == 1 && log.alive("s") == 1
    })
    .await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped inner/s normal exit",
        "stopped inner/w normal exit",
        "stopped root/inner normal exit",
    ])
    .await;
    rx.assert_drained();
}

#[actix::test]
async fn escalation_past_the_parents_intensity_reaches_the_root_handle() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    // inner tolerates no restart; root tolerates one restart of inner.
    let mut root = root(&events, 1, inner(&events, &log, &w, 0, false));
    rx.expect(&SUBTREE_STARTS).await;
    let inner_reason = "child `w` panicked: boom; more than 0 restarts within 10s";

    current(&w).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed inner/w panicked: boom",
        &format!("escalated inner: {inner_reason}"),
        "stopped inner/s normal exit",
        &format!("failed root/inner failed: {inner_reason}"),
        "restarting root/inner 0ns",
        "restarted root/inner 1",
        "started inner/w",
        "started inner/s",
    ])
    .await;

    newer_than(&w, 1).await.0.do_send(Crash("boom"));
    let root_reason =
        format!("child `inner` failed: {inner_reason}; more than 1 restarts within 10s");
    rx.expect(&[
        "failed inner/w panicked: boom",
        &format!("escalated inner: {inner_reason}"),
        "stopped inner/s normal exit",
        &format!("failed root/inner failed: {inner_reason}"),
        &format!("escalated root: {root_reason}"),
    ])
    .await;
    assert_eq!(
        within("root exit", root.wait()).await,
        Exit::Failed(root_reason)
    );
    rx.assert_drained();
    assert_eq!(log.alive("w") + log.alive("s"), 0);
}

#[actix::test]
async fn a_failing_significant_child_escalates_at_once() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    // inner would allow many restarts, but `w` is significant.
    let root = root(&events, 5, inner(&events, &log, &w, 10, true));
    rx.expect(&SUBTREE_STARTS).await;

    current(&w).await.0.do_send(FailWith("fatal"));
    let reason = "significant child `w` failed: fatal";
    rx.expect(&[
        "failed inner/w failed: fatal",
        &format!("escalated inner: {reason}"),
        "stopped inner/s normal exit",
        &format!("failed root/inner failed: {reason}"),
        "restarting root/inner 0ns",
        "restarted root/inner 1",
        "started inner/w",
        "started inner/s",
    ])
    .await;
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn a_significant_child_of_the_root_fails_the_root() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (a, _) = worker("a", &log);
    let (sig, sig_ref) = worker("sig", &log);
    let mut root = Supervisor::new("root")
        .backoff(Backoff::none())
        .events(events.clone())
        .child(a)
        .child(sig.significant())
        .start_root();
    rx.expect(&["started root/a", "started root/sig"]).await;

    current(&sig_ref).await.0.do_send(Crash("boom"));
    let reason = "significant child `sig` panicked: boom";
    rx.expect(&[
        "failed root/sig panicked: boom",
        &format!("escalated root: {reason}"),
        "stopped root/a normal exit",
    ])
    .await;
    assert_eq!(
        within("root exit", root.wait()).await,
        Exit::Failed(reason.into())
    );
    assert_eq!(
        log.count("sig started"),
        1,
        "a significant child is not restarted"
    );
}

#[actix::test]
async fn a_significant_child_that_exits_normally_follows_its_policy() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (sig, sig_ref) = worker("sig", &log);
    let root = Supervisor::new("root")
        .backoff(Backoff::none())
        .events(events.clone())
        .child(sig.significant().restart(Restart::Transient))
        .start_root();
    rx.expect(&["started root/sig"]).await;
    current(&sig_ref).await.0.do_send(Quit);
    rx.expect(&["stopped root/sig normal exit"]).await;
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.assert_drained();
}

/// A nested supervisor made to fail from outside (here through `FailChild`)
/// stops its own children before it exits, so the restarted subtree does not
/// run next to orphans of the old one.
#[actix::test]
async fn a_nested_supervisor_stopped_from_outside_stops_its_children_first() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    let root = root(&events, 5, inner(&events, &log, &w, 5, false));
    rx.expect(&SUBTREE_STARTS).await;
    current(&w).await;

    within("fail_child", root.fail_child("inner", "operator"))
        .await
        .unwrap();
    rx.expect(&[
        "stopped inner/s normal exit",
        "stopped inner/w normal exit",
        "failed root/inner failed: operator",
        "restarting root/inner 0ns",
        "restarted root/inner 1",
        "started inner/w",
        "started inner/s",
    ])
    .await;
    eventually("one live incarnation per worker", || {
        log.alive("w") == 1 && log.alive("s") == 1
    })
    .await;
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    assert_eq!(log.alive("w") + log.alive("s"), 0);
}
