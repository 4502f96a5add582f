//! The binaries' log and trace set-up. One trace from the HTTP request to the handler: the agent's post (its `post_message` span)
//! publishes a chat message whose envelope carries the publish span's `traceparent`; the relay's
//! `send` span and the consumer's `handle` span continue it. Spans are collected with
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

use support::*;

/// The finished span named `name` whose `event_id` attribute is `event_id` (any, with `None`).
fn find<'a>(spans: &'a [SpanData], name: &str, event_id: Option<&str>) -> Option<&'a SpanData> {
    spans.iter().find(|span| {
        span.name == name
            && event_id.is_none_or(|id| {
                span.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "event_id" && kv.value.as_str() == id)
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_post_to_the_handler() {
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
    let event_id = post_message(&agent, "conv-traced", "alice", "user", "follow me").await;
    wait_for_messages(&agent, "conv-traced", "alice", 1).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let (post, publish, send, handle) = loop {
        let spans = exporter.get_finished_spans().unwrap();
        let found = (
            find(&spans, "post_message", None).cloned(),
            find(&spans, "publish_envelope", Some(&event_id)).cloned(),
            find(&spans, "send", Some(&event_id)).cloned(),
            find(&spans, "handle", Some(&event_id)).cloned(),
        );
        if let (Some(post), Some(publish), Some(send), Some(handle)) = found {
            break (post, publish, send, handle);
        }
        assert!(
            Instant::now() < deadline,
            "spans of the post, publish, send and handle never all finished: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trace = post.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    for span in [&publish, &send, &handle] {
        assert_eq!(
            span.span_context.trace_id(),
            trace,
            "{} is in the post's trace",
            span.name
        );
    }
    // The publish happens within the request; the relay and the consumer continue the context
    // the envelope carries (the publish span's), as remote parents.
    assert_ne!(publish.parent_span_id, SpanId::INVALID);
    for span in [&send, &handle] {
        assert_eq!(
            span.parent_span_id,
            publish.span_context.span_id(),
            "{}",
            span.name
        );
        assert!(span.parent_span_is_remote, "{}", span.name);
    }
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
