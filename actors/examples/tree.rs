//! A small supervision tree, end to end.
//!
//! ```text
//! app (one-for-one)
//! ├── metrics            ChildSpec::new: stopped through its context
//! └── pipeline           a nested supervisor (rest-for-one)
//!     ├── source
//!     └── worker         crashes on its first three records
//! ```
//!
//! What it shows: a worker that panics is caught and restarted from its
//! factory by the nested `pipeline` supervisor, with an exponential backoff
//! (50 ms, 100 ms, 200 ms); the tree's lifecycle is printed from its
//! [`SupervisionEvent`]s as it happens; `ChildRef` follows the worker across
//! incarnations; finally `shutdown()` stops everything in reverse declared
//! order (worker, source, pipeline, metrics). Exits 0 within about a second.
//!
//! Run with `cargo run -p kafkactor-actors --example tree`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};
use kafkactor_actors::panic_message;
use kafkactor_actors::prelude::*;
use tokio::sync::broadcast::{self, error::RecvError};

/// Processes one record every 30 ms; panics on a corrupt one.
struct Worker {
    corrupt_left: Arc<AtomicU32>,
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(30), |act, _| {
            let corrupt = act
                .corrupt_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if corrupt {
                panic!("corrupt record");
            }
        });
    }
}

impl Handler<Shutdown> for Worker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Checks that the worker answers.
#[derive(Message)]
#[rtype(result = "()")]
struct Ping;

impl Handler<Ping> for Worker {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

/// An actor with nothing to drain: stopped with `ctx.stop()`.
struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Idle {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn describe(event: &SupervisionEvent) -> String {
    match event {
        SupervisionEvent::Started { supervisor, child } => format!("{supervisor}/{child}: started"),
        SupervisionEvent::Failed {
            supervisor,
            child,
            exit,
        } => format!("{supervisor}/{child}: {exit}"),
        SupervisionEvent::Restarting {
            supervisor,
            child,
            delay,
        } => format!("{supervisor}/{child}: restarting in {delay:?}"),
        SupervisionEvent::Restarted {
            supervisor,
            child,
            restarts,
        } => format!("{supervisor}/{child}: restarted (restart #{restarts})"),
        SupervisionEvent::Stopped {
            supervisor,
            child,
            exit,
        } => format!("{supervisor}/{child}: stopped ({exit})"),
        SupervisionEvent::Escalated { supervisor, reason } => {
            format!("{supervisor}: escalated: {reason}")
        }
        other => format!("{other:?}"),
    }
}

/// Prints every event as it is published, until the last supervisor is gone.
async fn print_events(mut rx: broadcast::Receiver<SupervisionEvent>, began: Instant) {
    loop {
        match rx.recv().await {
            Ok(event) => println!(
                "{:>5} ms  {}",
                began.elapsed().as_millis(),
                describe(&event)
            ),
            Err(RecvError::Lagged(n)) => println!("({n} events missed)"),
            Err(RecvError::Closed) => return,
        }
    }
}

#[actix::main]
async fn main() {
    // The panics are expected: print them as one line each.
    std::panic::set_hook(Box::new(|info| {
        println!("          (panic: {})", panic_message(info.payload()));
    }));

    let began = Instant::now();
    let events = Events::new();
    let printer = actix_rt::spawn(print_events(events.subscribe(), began));
    let worker = ChildRef::new();
    let corrupt_left = Arc::new(AtomicU32::new(3));

    let pipeline = {
        let (events, worker) = (events.clone(), worker.clone());
        move || {
            let corrupt_left = corrupt_left.clone();
            Supervisor::new("pipeline")
                .strategy(Strategy::RestForOne)
                .restart_limit(5, Duration::from_secs(10))
                .backoff(
                    Backoff::exponential(Duration::from_millis(50), Duration::from_secs(1))
                        .jitter(0.0),
                )
                .events(events.clone())
                .child(ChildSpec::graceful("source", || Idle))
                .child(ChildSpec::graceful_with_ref("worker", &worker, move || {
                    Worker {
                        corrupt_left: corrupt_left.clone(),
                    }
                }))
        }
    };
    let root = Supervisor::new("app")
        .events(events.clone())
        .child(ChildSpec::new("metrics", || Idle))
        .child(ChildSpec::graceful("pipeline", pipeline).shutdown_deadline(Duration::from_secs(2)))
        .start_root();

    // Follow the worker through its crashes: each restart is a new incarnation.
    let mut seen = 0;
    while seen < 4 {
        let Some((addr, n)) = worker.ready_after(seen, Duration::from_secs(3)).await else {
            eprintln!("the worker did not come back");
            std::process::exit(1);
        };
        match worker.last_exit() {
            Some((ended, exit)) => {
                println!("          worker incarnation {n} is up; incarnation {ended}: {exit}")
            }
            None => println!("          worker incarnation {n} is up"),
        }
        seen = n;
        if n == 4 {
            // The fourth incarnation gets past the corrupt records and keeps working.
            tokio::time::sleep(Duration::from_millis(100)).await;
            addr.send(Ping).await.expect("the worker answers");
        }
    }

    println!("          shutting down");
    let exit = root.shutdown().await;
    // Every supervisor is gone; dropping the last `Events` ends the printer.
    drop(events);
    if tokio::time::timeout(Duration::from_secs(1), printer)
        .await
        .is_err()
    {
        eprintln!("the event printer did not finish");
    }
    println!("          app: {exit}");
    if exit != Exit::Normal {
        std::process::exit(1);
    }
}
