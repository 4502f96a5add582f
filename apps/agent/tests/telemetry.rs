//! The binaries' log and trace set-up. One trace from the HTTP request to the handler: the
//! skeleton's HTTP server opens a `request` span per request (a child of the caller's trace when
//! the request carries a W3C `traceparent` header), the agent's `post_message` span is its child
//! and publishes a chat message whose envelope carries the publish span's `traceparent`; the
//! relay's `send` span and the consumer's `handle` span continue it. Spans are collected with
//! OpenTelemetry's in-memory exporter through the layer the binaries install
//! (`smartflow_service::logging::trace_layer`). A test binary of its own: the subscriber is the
//! process's. And a setting the set-up cannot use stops the binary at start, by name.

#[path = "agent/support.rs"]
#[allow(dead_code)]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use smartflow_agent::RunningAgent;
use support::*;

/// The caller's trace, as a W3C `traceparent` (sampled).
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The finished span named `name` whose attribute `key` is `value` (any, with `None`).
fn find<'a>(
    spans: &'a [SpanData],
    name: &str,
    attribute: Option<(&str, &str)>,
) -> Option<&'a SpanData> {
    spans.iter().find(|span| {
        span.name == name
            && attribute.is_none_or(|(key, value)| {
                span.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
            })
    })
}

/// The finished span whose id is `id`.
fn by_id(spans: &[SpanData], id: SpanId) -> Option<&SpanData> {
    spans.iter().find(|span| span.span_context.span_id() == id)
}

/// Posts a `user` message as `alice` to `conversation`, with `traceparent` when given; the
/// accepted event's id.
async fn post_traced(
    agent: &RunningAgent,
    conversation: &str,
    traceparent: Option<&str>,
) -> String {
    let mut request = client()
        .post(messages_url(agent, conversation))
        .json(&serde_json::json!({"user_id": "alice", "role": "user", "content": "follow me"}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let accepted: smartflow_agent::http::Accepted = response.json().await.unwrap();
    accepted.event_id
}

/// The spans of one post, from its request to its handler.
struct PostSpans {
    request: SpanData,
    post: SpanData,
    publish: SpanData,
    send: SpanData,
    handle: SpanData,
}

/// Waits until every span of the post to `conversation` that published `event_id` finished.
async fn spans_of(
    exporter: &InMemorySpanExporter,
    conversation: &str,
    event_id: &str,
) -> PostSpans {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        let post = find(
            &spans,
            "post_message",
            Some(("conversation_id", conversation)),
        );
        let request = post.and_then(|post| by_id(&spans, post.parent_span_id));
        let event = Some(("event_id", event_id));
        let found = (
            request,
            post,
            find(&spans, "publish_envelope", event),
            find(&spans, "send", event),
            find(&spans, "handle", event),
        );
        if let (Some(request), Some(post), Some(publish), Some(send), Some(handle)) = found {
            return PostSpans {
                request: request.clone(),
                post: post.clone(),
                publish: publish.clone(),
                send: send.clone(),
                handle: handle.clone(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "spans of the request, post, publish, send and handle never all finished: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of `span`'s attribute `key`, as text.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Every span of the post is in the request's trace: the request's span holds the handler's,
/// which publishes; the relay and the consumer continue the context the envelope carries (the
/// publish span's), as remote parents.
fn assert_one_trace(spans: &PostSpans) {
    let request = &spans.request;
    assert_eq!(request.name, "POST /v1/conversations/{id}/messages");
    assert_eq!(
        attribute(request, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/conversations/{id}/messages")
    );
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("202")
    );
    let trace = request.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    for span in [&spans.post, &spans.publish, &spans.send, &spans.handle] {
        assert_eq!(
            span.span_context.trace_id(),
            trace,
            "{} is in the request's trace",
            span.name
        );
    }
    assert_eq!(spans.post.parent_span_id, request.span_context.span_id());
    assert!(!spans.post.parent_span_is_remote);
    assert_ne!(spans.publish.parent_span_id, SpanId::INVALID);
    for span in [&spans.send, &spans.handle] {
        assert_eq!(
            span.parent_span_id,
            spans.publish.span_context.span_id(),
            "{}",
            span.name
        );
        assert!(span.parent_span_is_remote, "{}", span.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_callers_request_to_the_handler() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(smartflow_service::logging::trace_layer(&provider))
        .init();

    let dir = TempDir::new();
    let agent = start(sqlite_config(&dir)).await;

    // A caller's trace goes on through the request, the publish, the relay and the handler.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let event_id = post_traced(&agent, "conv-traced", Some(&traceparent)).await;
    wait_for_messages(&agent, "conv-traced", "alice", 1).await;
    let traced = spans_of(&exporter, "conv-traced", &event_id).await;
    assert_one_trace(&traced);
    assert_eq!(
        traced.request.span_context.trace_id(),
        TraceId::from_hex(CALLER_TRACE).unwrap()
    );
    assert_eq!(
        traced.request.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).unwrap()
    );
    assert!(traced.request.parent_span_is_remote);

    // Without one, the request starts a trace of its own.
    let event_id = post_traced(&agent, "conv-untraced", None).await;
    wait_for_messages(&agent, "conv-untraced", "alice", 1).await;
    let untraced = spans_of(&exporter, "conv-untraced", &event_id).await;
    assert_one_trace(&untraced);
    assert_ne!(
        untraced.request.span_context.trace_id(),
        traced.request.span_context.trace_id()
    );
    assert_eq!(untraced.request.parent_span_id, SpanId::INVALID);

    stop(agent).await;
    provider.shutdown().unwrap();
}

/// `smartflow-agent` started with `env` (and no other `SMARTFLOW_` or `OTEL_` variable): its exit
/// status and what it wrote on stderr.
fn agent_binary(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smartflow-agent"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SMARTFLOW_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let output = command
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unusable_log_and_trace_settings_stop_the_start_by_name() {
    for (env, message) in [
        (
            ("SMARTFLOW_LOG_FORMAT", "xml"),
            "smartflow-agent: SMARTFLOW_LOG_FORMAT must be `text` or `json`, not `xml`",
        ),
        (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            "smartflow-agent: OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL of an OTLP \
             collector (e.g. http://127.0.0.1:4318), not `collector:4318`",
        ),
    ] {
        let (ok, stderr) = agent_binary(&[env]);
        assert!(!ok, "{env:?} must fail the start");
        assert!(stderr.contains(message), "{env:?}: {stderr}");
    }
}
