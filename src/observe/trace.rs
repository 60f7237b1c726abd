//! W3C trace context (`traceparent`, `tracestate`) across the broker, and
//! the context a handler's publishes inherit.
//!
//! Written on publish, read on consume: a record's `traceparent` names the
//! publisher's span, and the handler's `handle` span is its child (same
//! trace id, `parent_span_id` the publisher's span id). Delay buckets and
//! dead-letter topics keep a record's headers, so the trace goes through
//! them untouched.
//!
//! A publish gets a `traceparent`
//! - as given ([`Publish::trace_context`](crate::Publish::trace_context) or
//!   the header itself);
//! - or, published while a handler runs (in its `handle` call or while its
//!   answer future is polled), or built with
//!   [`Publish::continuing`](crate::Publish::continuing), as a child of the
//!   record being handled; the tenant and correlation id come along;
//! - or, when kafkactor's `publish` span is enabled (a `tracing`
//!   subscriber takes INFO spans of target `kafkactor`), a new trace;
//! - otherwise none: with tracing off nothing is generated or written.
//!
//! Span ids are random 64-bit numbers ([`fastrand`]); span fields carry the
//! ids as lowercase hex, as `traceparent` does. With the `otel` feature and
//! a `tracing-opentelemetry` layer on the subscriber, the `publish` and
//! `handle` spans take OpenTelemetry's ids instead ([`adopt`]): the
//! `traceparent` written is the exported `publish` span's, and the exported
//! `handle` span's parent is the one its record names.

use std::fmt;

use crate::envelope::{header, Record};

/// A W3C trace context: which trace a record belongs to and which span
/// published it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace, never 0.
    pub trace_id: u128,
    /// The span that published the record, never 0.
    pub span_id: u64,
    /// Whether the publisher sampled the trace (flag `01`).
    pub sampled: bool,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

/// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: fastrand::u128(1..),
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// A span of the same trace whose parent is this one.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Reads a `traceparent` value: version `00` (or a later version's
    /// first four fields), non-zero ids. `None` for anything else.
    pub fn parse(traceparent: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(traceparent).ok()?.trim();
        let mut parts = s.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let later_version = version != "00";
        if version.len() != 2 || version == "ff" || (!later_version && parts.next().is_some()) {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(hex(version) && hex(trace) && hex(span) && hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The trace context of `record`, if it has a valid `traceparent`.
    pub(crate) fn of(record: &Record) -> Option<Self> {
        Self::parse(record.headers.get(header::TRACEPARENT)?)
    }
}

/// Whether a subscriber takes kafkactor's INFO spans. Checked before a
/// span per record is made: with no subscriber a disabled span still
/// costs (`tracing`'s `log` feature, which actix-web turns on, records
/// its fields for `log`), this check a static callsite's cached interest.
#[inline]
pub(crate) fn spans_on() -> bool {
    tracing::enabled!(target: "kafkactor", tracing::Level::INFO)
}

/// The DEBUG span of kafkactor's for one batch: `poll`, `dispatch`,
/// `broker_write` or `republish`, of `group` when given; made only when a
/// subscriber takes it (out of line: one call per batch).
#[inline(never)]
pub(crate) fn batch_span(name: Batch, group: Option<&str>, records: usize) -> tracing::Span {
    if !tracing::enabled!(target: "kafkactor", tracing::Level::DEBUG) {
        return tracing::Span::none();
    }
    match name {
        Batch::Poll => tracing::debug_span!(target: "kafkactor", "poll", group, records),
        Batch::Dispatch => tracing::debug_span!(target: "kafkactor", "dispatch", group, records),
        Batch::BrokerWrite => tracing::debug_span!(target: "kafkactor", "broker_write", records),
        Batch::Republish => tracing::debug_span!(target: "kafkactor", "republish", records),
    }
}

/// Which batch a [`batch_span`] is of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Batch {
    Poll,
    Dispatch,
    BrokerWrite,
    Republish,
}

/// The `retry` span of a record about to be tried again (rare: out of
/// line, away from the hot path's code), in the record's trace.
#[cold]
#[inline(never)]
pub(crate) fn retry_span(record: &Record, group: &str, attempt: u32) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(target: "kafkactor", "retry", topic = %record.topic,
        partition = record.partition, offset = record.offset, group, attempt,
        trace_id = Empty, span_id = Empty, parent_span_id = Empty);
    in_record_trace(&span, record);
    span
}

/// The `dead_letter` span of a record being dead-lettered, in the record's
/// trace.
#[cold]
#[inline(never)]
pub(crate) fn dead_letter_span(
    record: &Record,
    group: &str,
    attempt: u32,
    kind: &str,
) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(target: "kafkactor", "dead_letter", topic = %record.topic,
        partition = record.partition, offset = record.offset, group, attempt, kind,
        trace_id = Empty, span_id = Empty, parent_span_id = Empty);
    in_record_trace(&span, record);
    span
}

/// Makes `span` a child of the span that published `record`, as the
/// `handle` span is, when the record names one.
fn in_record_trace(span: &tracing::Span, record: &Record) {
    if span.is_disabled() {
        return;
    }
    let Some(parent) = TraceContext::of(record) else {
        return;
    };
    in_trace(span, Some(parent), record.headers.get(header::TRACESTATE));
}

/// Makes `span` a child of `parent` (the root of a new trace without one),
/// with OpenTelemetry's ids when a layer records it ([`adopt`]), and
/// records its ids; returns its own context.
pub(crate) fn in_trace(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    state: Option<&[u8]>,
) -> TraceContext {
    let own = adopt(span, parent, state)
        .unwrap_or_else(|| parent.map_or_else(TraceContext::new_root, |p| p.child()));
    record_ids(span, own, parent.map(|p| p.span_id));
    own
}

/// Records a span's trace id, span id and parent span id, as hex.
pub(crate) fn record_ids(span: &tracing::Span, own: TraceContext, parent: Option<u64>) {
    span.record("trace_id", hex_id(own.trace_id, 32));
    span.record("span_id", hex_id(own.span_id.into(), 16));
    if let Some(parent) = parent {
        span.record("parent_span_id", hex_id(parent.into(), 16));
    }
}

/// Makes `parent` (a record's publisher) the OpenTelemetry parent of `span`
/// and returns the span's own OpenTelemetry context, when a
/// `tracing-opentelemetry` layer (of the version kafkactor's `otel`
/// feature is built with) records `span`. `None` otherwise, and always
/// without the `otel` feature: kafkactor then makes its own ids.
#[cfg(feature = "otel")]
pub(crate) fn adopt(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    state: Option<&[u8]>,
) -> Option<TraceContext> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(parent) = parent {
        let state = state
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            flags,
            true,
            state,
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        span.set_parent(cx).ok()?;
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    own.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(own.span_id().to_bytes()),
        sampled: own.is_sampled(),
    })
}

/// Without the `otel` feature kafkactor makes its own ids.
#[cfg(not(feature = "otel"))]
#[inline(always)]
pub(crate) fn adopt(
    _span: &tracing::Span,
    _parent: Option<TraceContext>,
    _state: Option<&[u8]>,
) -> Option<TraceContext> {
    None
}

/// A new span id, never 0.
pub(crate) fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// A trace or span id as span fields carry it.
pub(crate) fn hex_id(id: u128, digits: usize) -> String {
    format!("{id:0digits$x}")
}

/// Gives `headers` (a publish's) what they lack of `record`'s context: its
/// tenant and correlation id, and a `traceparent` that is a child of
/// `parent` (the `handle` span, when on) or else of the record's own.
/// Returns the publish's trace context and its parent span, when one was
/// made.
pub(crate) fn inherit(
    headers: &mut crate::envelope::Headers,
    record: &Record,
    parent: Option<TraceContext>,
) -> Option<(TraceContext, u64)> {
    for name in [header::TENANT, header::CORRELATION_ID] {
        if !headers.contains(name) {
            if let Some(value) = record.headers.get(name) {
                headers.insert_known_copy(name, value);
            }
        }
    }
    if headers.contains(header::TRACEPARENT) {
        return None;
    }
    let parent = parent.or_else(|| TraceContext::of(record))?;
    let ctx = parent.child();
    headers.insert_known(header::TRACEPARENT, ctx.to_string());
    if let Some(state) = record.headers.get(header::TRACESTATE) {
        if !headers.contains(header::TRACESTATE) {
            headers.insert_known_copy(header::TRACESTATE, state);
        }
    }
    Some((ctx, parent.span_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_what_it_writes() {
        let ctx = TraceContext::new_root();
        let text = ctx.to_string();
        assert_eq!(text.len(), 55);
        assert_eq!(TraceContext::parse(text.as_bytes()), Some(ctx));
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
    }

    #[test]
    fn the_w3c_example_parses_and_bad_values_do_not() {
        let example = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(example).unwrap();
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert!(ctx.sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
            b"\xff\xfe",
        ] {
            assert_eq!(
                TraceContext::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may add fields.
        assert!(
            TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }
}
