//! Running a child on a thread of its own: the starter behind
//! [`ChildSpec::graceful_on_own_thread`] and the thread it keeps across
//! restarts.

use std::sync::{Arc, Mutex};

use actix::{Actor, Context};
use actix_rt::{Arbiter, System};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::incarnation::{listen_for_stop, report, NewIncarnation};
use super::running::{running, Running, Stopper};
use super::{ChildRef, ChildSpec};
use crate::exit::run_catching;
use crate::Exit;

impl ChildSpec {
    pub(super) fn build_on_own_thread<A, F>(
        id: impl Into<Arc<str>>,
        child_ref: &ChildRef<A>,
        factory: F,
        stopper: Stopper<A>,
    ) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: FnMut() -> A + Send + 'static,
    {
        let child_ref = child_ref.clone();
        let factory = Arc::new(Mutex::new(factory));
        let mut thread = OwnThread::default();
        let starter = move |on_exit: Box<dyn FnOnce(Exit)>, capacity: Option<usize>| {
            let new = NewIncarnation::register(&child_ref, capacity);
            start_on_own_thread(&mut thread, factory.clone(), new, on_exit, stopper)
        };
        Self::with_starter(id, Box::new(starter))
    }
}

/// Starts incarnation `new` on `thread`, its task here forwarding the exit
/// the child's task there reports.
fn start_on_own_thread<A, F>(
    thread: &mut OwnThread,
    factory: Arc<Mutex<F>>,
    new: NewIncarnation<A>,
    on_exit: Box<dyn FnOnce(Exit)>,
    stopper: Stopper<A>,
) -> Running
where
    A: Actor<Context = Context<A>>,
    F: FnMut() -> A + Send + 'static,
{
    let NewIncarnation {
        mailbox,
        addr,
        stop,
        listener,
        record,
    } = new;
    let (exit_tx, exit_rx) = oneshot::channel();
    let (abort, registration) = AbortHandle::new_pair();
    // Runs on the child's thread: everything it moves there is `Send`.
    thread.run(move || {
        let child = async move {
            let mut ctx = Context::<A>::with_receiver(mailbox);
            listen_for_stop(&mut ctx, listener);
            let actor = (factory.lock().unwrap_or_else(|e| e.into_inner()))();
            ctx.into_future(actor).await
        };
        actix_rt::spawn(async move {
            let exit = Abortable::new(run_catching(child), registration)
                .await
                .unwrap_or(Exit::Killed);
            let _ = exit_tx.send(exit);
        });
    });
    let task = actix_rt::spawn(async move {
        // Aborting this task aborts the child's.
        let _child = AbortOnDrop(abort);
        // No exit: the child's thread went away with the child.
        let exit = exit_rx.map(|exit| exit.unwrap_or(Exit::Killed));
        report(exit, record, on_exit).await
    });
    running(addr, stop, stopper, task)
}

/// Aborts a child running on another thread when dropped (a finished
/// child is unaffected).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The thread of a child started with [`ChildSpec::graceful_on_own_thread`]:
/// started with its first incarnation, started again if it went away,
/// stopped when the spec is dropped.
#[derive(Default)]
struct OwnThread {
    arbiter: Option<Arbiter>,
}

impl OwnThread {
    /// Runs `start` on the thread, or on this one outside an actix `System`.
    fn run(&mut self, start: impl FnOnce() + Send + 'static) {
        if self.arbiter.is_none() && System::try_current().is_some() {
            match Arbiter::try_new() {
                Ok(arbiter) => self.arbiter = Some(arbiter),
                Err(error) => {
                    tracing::warn!(%error, "no thread of its own for a child: it runs on its supervisor's")
                }
            }
        }
        match &self.arbiter {
            Some(arbiter) => {
                if !arbiter.spawn_fn(start) {
                    // The thread is gone (its System is stopping): `start`
                    // is dropped, which the incarnation reports as killed;
                    // a next start makes a new thread.
                    self.arbiter = None;
                }
            }
            None => start(),
        }
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        if let Some(arbiter) = self.arbiter.take() {
            arbiter.stop();
        }
    }
}
