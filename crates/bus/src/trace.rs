//! The W3C trace context an event carries (`traceparent`), through OpenTelemetry's
//! `TraceContextPropagator`: written at publish from the publishing span, continued by the
//! relay's `send` span and the consumer's `handle` span, so one trace runs from the request that
//! published an event to the handler that applied it. Without an OpenTelemetry layer in the
//! subscriber (no exporter configured) publish starts a fresh trace id instead. The services'
//! HTTP server continues an incoming request's `traceparent` header the same way
//! ([`continue_trace`]), so the trace starts at the caller.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use smartflow_domain::TRACEPARENT_HEADER;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span, when it is part of an OpenTelemetry trace.
pub(crate) fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT_HEADER)
}

/// The remote context `traceparent` names; `None` when it is missing or not a valid one.
fn remote(traceparent: Option<&str>) -> Option<Context> {
    let carrier = HashMap::from([(TRACEPARENT_HEADER.to_owned(), traceparent?.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` (just created, not entered yet) a child of the trace `traceparent` names; a
/// missing or invalid one leaves it the root of a trace of its own.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = remote(traceparent) {
        // Fails only without an OpenTelemetry layer, when there is no trace to continue.
        let _ = span.set_parent(context);
    }
}

/// Links `span` to the trace `traceparent` names (a span that handles several events at once).
pub(crate) fn link_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = remote(traceparent) {
        span.add_link(context.span().span_context().clone());
    }
}
