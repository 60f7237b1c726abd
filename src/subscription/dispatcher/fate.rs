//! A record's fate, decided by the Dispatcher once its lane hands it back
//! with anything but an acknowledgement: retried in place under the
//! subscription's retry policy, dead-lettered with the reason (at once for
//! a rejection, an undecodable, unroutable or oversized record), or
//! retried after its handler failed; the handlers' restart limit and the
//! dead-letter streak that readiness watches are kept here.

use std::time::Instant;

use actix::prelude::*;

use super::{Dispatcher, SIBLING_WAIT};
use crate::dead_letter::{self, DeadLetterRecord, FailureKind};
use crate::delivery::Outcome;
use crate::observe::health::DEAD_LETTER_STREAK;
use crate::observe::trace::{dead_letter_span, retry_span};
use crate::subscription::lane::{Answer, Job};
use tracing::Instrument;

/// Why a record is being dead-lettered, and how many writes failed so far.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) reason: String,
    pub(super) write_failures: u32,
}

pub(super) fn failure(kind: FailureKind, reason: impl Into<String>) -> Failure {
    Failure {
        kind,
        reason: reason.into(),
        write_failures: 0,
    }
}

impl<A: Actor<Context = Context<A>>> Dispatcher<A> {
    /// Decides the fate of a record its lane handed back.
    pub(super) fn settle(&mut self, i: usize, job: Job, answer: Answer, ctx: &mut Context<Self>) {
        if !self.live(&job) {
            // Read by a connection incarnation that is gone (the current one
            // reads it again from the committed offset), or of a partition
            // given up (its next owner does).
            self.abandon(&job.record, ctx);
            return self.release_lane(i);
        }
        match answer {
            Answer::Outcome(Outcome::Ack) => self.complete(Some(i), job, ctx),
            Answer::Outcome(Outcome::Reject(reason)) => {
                self.dead_letter(Some(i), job, failure(FailureKind::Rejected, reason), ctx)
            }
            Answer::Outcome(Outcome::Retry(reason)) => self.retry_or_dead_letter(
                i,
                job,
                failure(FailureKind::RetriesExhausted, reason),
                ctx,
            ),
            Answer::Unhandled(kind, reason) => {
                self.dead_letter(Some(i), job, failure(kind, reason), ctx)
            }
            Answer::HandlerFailed { incarnation } => {
                self.on_handler_failure(i, job, incarnation, ctx)
            }
            Answer::Copy => self.copy_turn(i, job, ctx),
        }
    }

    /// The handler died (panic) or dropped its reply while handling `job`.
    pub(super) fn on_handler_failure(
        &mut self,
        i: usize,
        job: Job,
        incarnation: u64,
        ctx: &mut Context<Self>,
    ) {
        let handler = self.handlers[i].clone();
        // Still running: it dropped the reply. Have it re-created all the same.
        handler.fail(incarnation, "dropped its reply to a delivery");
        ctx.spawn(
            async move {
                handler.ready_after(incarnation, SIBLING_WAIT).await;
                handler.last_exit()
            }
            .into_actor(self)
            .map(move |last, act, ctx| {
                let mut reason = match last {
                    Some((n, exit)) if n == incarnation => format!("handler {exit}"),
                    _ => "handler stopped without answering".to_string(),
                };
                tracing::warn!(group = %act.settings.group, topic = %job.record.topic,
                    partition = job.record.partition, offset = job.record.offset,
                    attempt = job.attempt, %reason, "handler failed");
                if let Some(limit) = act.handler_limit_exceeded() {
                    reason.push_str(&format!(
                        "; handler restart limit exceeded ({limit}), not retried"
                    ));
                    let why = failure(FailureKind::Panic, reason);
                    return act.dead_letter(Some(i), job, why, ctx);
                }
                act.retry_or_dead_letter(i, job, failure(FailureKind::Panic, reason), ctx);
            }),
        );
    }

    /// Notes a handler failure; with `OnRestartLimit::DeadLetter`, describes
    /// the limit when failures within its window exceed it.
    pub(super) fn handler_limit_exceeded(&mut self) -> Option<String> {
        let (max, window) = self.settings.handler_restart_limit?;
        let now = Instant::now();
        self.handler_failures.push_back(now);
        while self
            .handler_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.handler_failures.pop_front();
        }
        if self.handler_failures.len() > max.saturating_add(1) {
            self.handler_failures.pop_front();
        }
        let exceeded = (self.handler_failures.len() > max)
            .then(|| format!("more than {max} restarts within {window:?}"))?;
        // Not ready until the window passes without it.
        self.settings.health.set_until(
            "restarts",
            format!("handler restart limit exceeded ({exceeded}): failing records are dead-lettered without retries"),
            now + window,
        );
        Some(exceeded)
    }

    /// A record was dead-lettered: past [`DEAD_LETTER_STREAK`] in a row,
    /// the subscription reports not ready.
    pub(super) fn dead_lettered(&mut self) {
        self.dead_streak = self.dead_streak.saturating_add(1);
        if self.dead_streak == DEAD_LETTER_STREAK {
            self.settings.health.set_for(
                "dead-letters",
                format!("the last {DEAD_LETTER_STREAK} records finished were all dead-lettered"),
            );
        }
    }

    /// A record was acknowledged after dead letters.
    #[cold]
    pub(super) fn acked_again(&mut self) {
        if self.dead_streak >= DEAD_LETTER_STREAK {
            self.settings.health.clear_for("dead-letters");
        }
        self.dead_streak = 0;
    }

    pub(super) fn retry_or_dead_letter(
        &mut self,
        i: usize,
        mut job: Job,
        why: Failure,
        ctx: &mut Context<Self>,
    ) {
        let policy = self.settings.retry;
        if !policy.allows_another(job.attempt) {
            return self.dead_letter(Some(i), job, why, ctx);
        }
        if policy.retry_topic().is_some() && self.live(&job) {
            retry_span(&job.record, &self.settings.group, job.attempt).in_scope(|| {
                tracing::debug!(target: "kafkactor", reason = %why.reason, "retrying through the retry topic")
            });
            return self.retry_through_topic(i, job, ctx);
        }
        let delay = policy.backoff(job.attempt);
        self.count(&job.record.topic, |c| c.retried.inc());
        retry_span(&job.record, &self.settings.group, job.attempt).in_scope(|| {
            tracing::debug!(target: "kafkactor", ?delay, reason = %why.reason, "retrying in place")
        });
        job.attempt += 1;
        ctx.run_later(delay, move |act, ctx| act.requeue(i, job, ctx));
    }

    /// Puts `job` back at the head of its lane (its next attempt) and
    /// releases the lane.
    pub(super) fn requeue(&mut self, i: usize, job: Job, ctx: &mut Context<Self>) {
        if self.live(&job) {
            self.board.borrow_mut().lanes[i].queue.push_front(job);
        } else {
            self.abandon(&job.record, ctx);
        }
        self.release_lane(i);
    }

    /// Writes `job` to the dead-letter topic; finishes it once the write is
    /// acknowledged. `lane`: the lane it blocks, if it blocks one.
    pub(super) fn dead_letter(
        &mut self,
        lane: Option<usize>,
        job: Job,
        why: Failure,
        ctx: &mut Context<Self>,
    ) {
        if !self.live(&job) {
            self.abandon(&job.record, ctx);
            if let Some(i) = lane {
                self.release_lane(i);
            }
            return;
        }
        let span = dead_letter_span(
            &job.record,
            &self.settings.group,
            job.attempt,
            why.kind.as_str(),
        );
        let request = self.dead_letter_request(&job, &why);
        ctx.spawn(
            dead_letter::send(&self.dead_letter, request, SIBLING_WAIT)
                .instrument(span)
                .into_actor(self)
                .map(move |result, act, ctx| act.dead_letter_answered(lane, job, why, result, ctx)),
        );
    }

    /// What the dead-letter actor is asked to write for `job`, failed as
    /// `why` says.
    fn dead_letter_request(&self, job: &Job, why: &Failure) -> DeadLetterRecord {
        DeadLetterRecord {
            record: job.record.clone(),
            topic: self.settings.dead_letter_topic(&job.record),
            group: self.settings.group.clone(),
            kind: why.kind,
            reason: why.reason.clone(),
            attempts: job.attempt,
        }
    }

    /// The dead-letter write of `job` answered: `job` is finished once its
    /// dead letter is durable, written again after a backoff otherwise.
    fn dead_letter_answered(
        &mut self,
        lane: Option<usize>,
        job: Job,
        mut why: Failure,
        result: crate::Result<()>,
        ctx: &mut Context<Self>,
    ) {
        let error = match result {
            Ok(()) => return self.dead_letter_durable(lane, job, why.kind, ctx),
            Err(e) => e,
        };
        why.write_failures += 1;
        let delay = dead_letter::retry_after(why.write_failures);
        tracing::error!(group = %self.settings.group, topic = %job.record.topic,
            offset = job.record.offset, %error, ?delay,
            "dead-letter write failed; the record stays uncommitted and is tried again");
        ctx.run_later(delay, move |act, ctx| act.dead_letter(lane, job, why, ctx));
    }

    /// The dead letter of `job` (failed as `kind`) is durable: counted, and
    /// `job` finished.
    fn dead_letter_durable(
        &mut self,
        lane: Option<usize>,
        job: Job,
        kind: FailureKind,
        ctx: &mut Context<Self>,
    ) {
        let kind = kind.as_str();
        self.dead_lettered();
        self.count(&job.record.topic, |c| c.dead_lettered(kind));
        if let Some(tap) = &self.settings.lineage {
            let group = &self.settings.group;
            tap.handled(group, &job.record, "dead_lettered", Some(kind));
        }
        self.complete(lane, job, ctx)
    }
}
