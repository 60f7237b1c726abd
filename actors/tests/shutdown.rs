//! Ordered shutdown: children stop in reverse declared order, graceful
//! children drain first, children past their deadline are aborted, and
//! `ChildSpec::new` children are stopped through their context.

mod support;

use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use kafkactor_actors::prelude::*;
use support::*;

fn stop_lines(log: &Log) -> Vec<String> {
    log.lines()
        .into_iter()
        .filter(|l| !l.ends_with("started"))
        .collect()
}

#[actix::test]
async fn shutdown_stops_children_in_reverse_declared_order() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let mut root = Supervisor::new("root").events(events.clone());
    let mut refs = Vec::new();
    for name in ["a", "b", "c"] {
        let (spec, r) = worker(name, &log);
        root = root.child(spec);
        refs.push(r);
    }
    let root = root.start_root();
    rx.expect(&["started root/a", "started root/b", "started root/c"])
        .await;
    for r in &refs {
        current(r).await;
    }

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped root/c normal exit",
        "stopped root/b normal exit",
        "stopped root/a normal exit",
    ])
    .await;
    rx.assert_drained();
    // Each child is asked only once the one after it has stopped.
    assert_eq!(
        stop_lines(&log),
        [
            "c shutdown",
            "c stopped",
            "b shutdown",
            "b stopped",
            "a shutdown",
            "a stopped"
        ]
    );
}

/// Drains in-flight work asynchronously when asked to shut down.
struct Drainer {
    log: Log,
}

impl Actor for Drainer {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.push("d stopped");
    }
}

impl Handler<Shutdown> for Drainer {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.log.push("d draining");
        // The in-flight work takes a while to finish.
        ctx.spawn(
            tokio::time::sleep(Duration::from_millis(60))
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.log.push("d drained");
                    ctx.stop();
                }),
        );
    }
}

#[actix::test]
async fn a_graceful_child_drains_before_it_stops() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let drainer_log = log.clone();
    let root = Supervisor::new("root")
        .events(events.clone())
        .child(worker("a", &log).0)
        .child(
            ChildSpec::graceful("d", move || Drainer {
                log: drainer_log.clone(),
            })
            .shutdown_deadline(Duration::from_secs(1)),
        )
        .child(worker("c", &log).0)
        .start_root();
    rx.expect(&["started root/a", "started root/d", "started root/c"])
        .await;
    log.wait_until("workers started", |l| l.len() == 2).await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped root/c normal exit",
        "stopped root/d normal exit",
        "stopped root/a normal exit",
    ])
    .await;
    assert_eq!(
        stop_lines(&log),
        [
            "c shutdown",
            "c stopped",
            "d draining",
            "d drained",
            "d stopped",
            "a shutdown",
            "a stopped"
        ]
    );
}

/// Ignores [`Shutdown`]: it never stops on its own.
struct Stuck {
    log: Log,
}

impl Actor for Stuck {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Stuck {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.log.push("stuck ignores shutdown");
    }
}

#[actix::test]
async fn a_child_past_its_deadline_is_killed_and_shutdown_completes() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let stuck = ChildRef::new();
    let stuck_log = log.clone();
    let root = Supervisor::new("root")
        .events(events.clone())
        .child(worker("a", &log).0)
        .child(
            ChildSpec::graceful_with_ref("stuck", &stuck, move || Stuck {
                log: stuck_log.clone(),
            })
            .shutdown_deadline(Duration::from_millis(50)),
        )
        .child(worker("c", &log).0)
        .start_root();
    rx.expect(&["started root/a", "started root/stuck", "started root/c"])
        .await;
    current(&stuck).await;

    let began = Instant::now();
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(50),
        "deadline not honoured: {took:?}"
    );
    rx.expect(&[
        "stopped root/c normal exit",
        "stopped root/stuck killed after shutdown deadline",
        "stopped root/a normal exit",
    ])
    .await;
    assert_eq!(log.count("stuck ignores shutdown"), 1);
    assert_eq!(log.count("a stopped"), 1, "shutdown went on after the kill");
    eventually("the killed incarnation is recorded", || {
        stuck.last_exit() == Some((1, Exit::Killed)) && stuck.get().is_none()
    })
    .await;
}

#[actix::test]
async fn plain_children_are_stopped_through_their_context() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let p = ChildRef::new();
    let p_log = log.clone();
    let root = Supervisor::new("root")
        .events(events.clone())
        .child(ChildSpec::new_with_ref("p", &p, move || {
            Worker::new("p", &p_log)
        }))
        .start_root();
    rx.expect(&["started root/p"]).await;
    current(&p).await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&["stopped root/p normal exit"]).await;
    // `ctx.stop()` ran the `stopped` hook; no `Shutdown` message was sent.
    assert_eq!(stop_lines(&log), ["p stopped"]);
    assert_eq!(p.last_exit(), Some((1, Exit::Normal)));
}

#[actix::test]
async fn a_nested_supervisor_stopped_through_its_context_stops_its_children() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (inner_events, inner_log) = (events.clone(), log.clone());
    let root = Supervisor::new("root")
        .events(events.clone())
        .child(ChildSpec::new("inner", move || {
            Supervisor::new("inner")
                .events(inner_events.clone())
                .child(worker("w", &inner_log).0)
                .child(worker("s", &inner_log).0)
        }))
        .start_root();
    rx.expect(&["started root/inner", "started inner/w", "started inner/s"])
        .await;
    log.wait_until("workers started", |l| l.len() == 2).await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped inner/s normal exit",
        "stopped inner/w normal exit",
        "stopped root/inner normal exit",
    ])
    .await;
    assert_eq!(log.alive("w") + log.alive("s"), 0);
}

#[actix::test]
async fn shutdown_during_a_backoff_does_not_restart_the_child() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (w, w_ref) = worker("w", &log);
    let long = Duration::from_secs(5);
    let root = Supervisor::new("root")
        .events(events.clone())
        .backoff(Backoff::exponential(long, long).jitter(0.0))
        .child(worker("a", &log).0)
        .child(w)
        .start_root();
    rx.expect(&["started root/a", "started root/w"]).await;
    current(&w_ref).await.0.do_send(Crash("boom"));
    rx.expect(&["failed root/w panicked: boom", "restarting root/w 5s"])
        .await;

    // Much sooner than the backoff: the pending restart is abandoned.
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&["stopped root/a normal exit"]).await;
    rx.assert_drained();
    assert_eq!(log.count("w started"), 1);
}

/// A shutdown that arrives while a one-for-all restart is still stopping the
/// group waits for the group: the draining sibling finishes its work.
#[actix::test]
async fn shutdown_during_a_group_restart_lets_a_draining_sibling_finish() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (a, a_ref) = worker("a", &log);
    let drainer_log = log.clone();
    let root = Supervisor::new("root")
        .strategy(Strategy::OneForAll)
        .backoff(Backoff::none())
        .events(events.clone())
        .child(
            ChildSpec::graceful("d", move || Drainer {
                log: drainer_log.clone(),
            })
            .shutdown_deadline(Duration::from_secs(1)),
        )
        .child(a)
        .start_root();
    rx.expect(&["started root/d", "started root/a"]).await;
    current(&a_ref).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed root/a panicked: boom",
        "restarting root/d 0ns",
        "restarting root/a 0ns",
    ])
    .await;
    log.wait_until("d is draining", |l| l.iter().any(|l| l == "d draining"))
        .await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&["stopped root/d normal exit"]).await;
    rx.assert_drained();
    assert_eq!(
        stop_lines(&log),
        ["a stopped", "d draining", "d drained", "d stopped"]
    );
}
