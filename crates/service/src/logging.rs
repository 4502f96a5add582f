//! The binaries' logging and tracing set-up: log lines on stderr (text, without colour codes
//! unless stderr is a terminal, or JSON with `SMARTFLOW_LOG_FORMAT=json`) filtered by
//! `RUST_LOG`, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans exported over OTLP
//! (HTTP, protobuf) through OpenTelemetry, so the trace an event carries (`smartflow_bus`'s
//! `traceparent`) is seen from the HTTP request to the handler.

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// The variable that chooses the log lines' format.
pub const LOG_FORMAT_SETTING: &str = "SMARTFLOW_LOG_FORMAT";
/// The standard OpenTelemetry variable naming the OTLP collector; traces are exported only
/// when it is set.
pub const OTLP_ENDPOINT_SETTING: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per event, with its span's fields.
    Json,
}

/// A setting that cannot be used, named with what it must be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoggingError {
    #[error("{LOG_FORMAT_SETTING} must be `text` or `json`, not `{0}`")]
    Format(String),
    #[error(
        "{OTLP_ENDPOINT_SETTING} must be an http:// URL of an OTLP collector \
         (e.g. http://127.0.0.1:4318), not `{value}`: {reason}"
    )]
    Endpoint { value: String, reason: String },
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// What the log and trace set-up is told (from `SMARTFLOW_LOG_FORMAT` and
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The OTLP collector's base URL; `None`: no traces are exported.
    pub otlp_endpoint: Option<String>,
}

impl LogSettings {
    /// Checks the two settings' values (unset or empty: the defaults).
    pub fn parse(format: Option<&str>, otlp_endpoint: Option<&str>) -> Result<Self, LoggingError> {
        let format = match format.map(str::trim).unwrap_or("") {
            "" | "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(LoggingError::Format(other.to_owned())),
        };
        let otlp_endpoint = match otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(endpoint) => Some(check_endpoint(endpoint)?),
        };
        Ok(Self {
            format,
            otlp_endpoint,
        })
    }

    /// Reads the two settings from the environment (the binaries' `main` only).
    pub fn from_env() -> Result<Self, LoggingError> {
        let read = |name| std::env::var(name).ok();
        Self::parse(
            read(LOG_FORMAT_SETTING).as_deref(),
            read(OTLP_ENDPOINT_SETTING).as_deref(),
        )
    }
}

/// An OTLP/HTTP endpoint: an `http://` URL with a host. (`https://` is refused: the exporter is
/// built without TLS, for a collector beside the service.)
fn check_endpoint(endpoint: &str) -> Result<String, LoggingError> {
    let refuse = |reason: &str| LoggingError::Endpoint {
        value: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: axum::http::Uri = endpoint.parse().map_err(|e| refuse(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(refuse("https is not supported; use a local collector")),
        _ => return Err(refuse("it has no http:// scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("it names no host"));
    }
    Ok(endpoint.to_owned())
}

/// The exported traces; shut it down before the process exits so the last spans are sent.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Sends the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The OTLP client blocks; it must also be dropped outside the runtime's threads.
            let ended = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = ended {
                eprintln!("exporting the last traces failed: {e}");
            }
        }
    }
}

/// Installs the process's subscriber: `RUST_LOG` (default `info`), the log lines on stderr in
/// `settings.format`, and the OTLP exporter when an endpoint is set, for spans of service
/// `service`.
pub fn init(settings: &LogSettings, service: &str) -> Result<Tracing, LoggingError> {
    let provider = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => Some(otlp_provider(endpoint, service)?),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(provider.as_ref().map(trace_layer))
        .with(log_layer(
            settings.format,
            std::io::stderr().is_terminal(),
            std::io::stderr,
        ))
        .init();
    Ok(Tracing { provider })
}

/// The layer that hands spans to OpenTelemetry's `provider`.
pub fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("smartflow"))
}

/// The log lines' layer: `format`, writing to `writer`, with colour codes only when `ansi`
/// (the binaries: when stderr is a terminal).
pub fn log_layer<S, W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => lines.with_ansi(ansi).boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
}

/// Spans batched and sent to the OTLP/HTTP collector at `endpoint` (the exporter reads
/// `OTEL_EXPORTER_OTLP_ENDPOINT` and the other standard `OTEL_EXPORTER_OTLP_*` variables itself,
/// appending `/v1/traces`).
fn otlp_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, LoggingError> {
    let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let service = service.to_owned();
    // The blocking HTTP client starts a runtime of its own, which must not happen on a thread
    // of the caller's runtime.
    std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| LoggingError::Exporter(e.to_string()))?;
        Ok(SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .with_batch_exporter(exporter)
            .build())
    })
    .join()
    .map_err(|_| LoggingError::Exporter("the exporter's set-up panicked".into()))?
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn formats_and_endpoints_are_checked_by_name() {
        assert_eq!(LogSettings::parse(None, None), Ok(LogSettings::default()));
        let json = LogSettings::parse(Some("json"), Some("http://127.0.0.1:4318")).unwrap();
        assert_eq!(json.format, LogFormat::Json);
        assert_eq!(json.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(
            LogSettings::parse(Some("xml"), None)
                .unwrap_err()
                .to_string(),
            "SMARTFLOW_LOG_FORMAT must be `text` or `json`, not `xml`"
        );
        for bad in [
            "not a url",
            "127.0.0.1:4318",
            "https://collector:4318",
            "http:///x",
        ] {
            let error = LogSettings::parse(None, Some(bad)).unwrap_err();
            assert!(
                matches!(error, LoggingError::Endpoint { .. }),
                "{bad}: {error}"
            );
            assert!(error
                .to_string()
                .starts_with("OTEL_EXPORTER_OTLP_ENDPOINT must be"));
        }
    }

    /// What a subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_one_line(format: LogFormat, ansi: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(log_layer(format, ansi, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("handle", event_id = "e-1");
            let _entered = span.enter();
            tracing::warn!(attempt = 2, "handler failed");
        });
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_are_json_objects_with_their_span() {
        let out = log_one_line(LogFormat::Json, false);
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields"]["message"], "handler failed");
        assert_eq!(line["fields"]["attempt"], 2);
        assert_eq!(line["span"]["name"], "handle");
        assert_eq!(line["span"]["event_id"], "e-1");
    }

    #[test]
    fn text_lines_carry_colour_codes_only_for_a_terminal() {
        let plain = log_one_line(LogFormat::Text, false);
        assert!(plain.contains("handler failed"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "{plain:?}");
        let coloured = log_one_line(LogFormat::Text, true);
        assert!(coloured.contains('\u{1b}'), "{coloured:?}");
    }
}
