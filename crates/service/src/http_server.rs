//! The one HTTP server every service answers through, with the limits that keep a slow or
//! flooding client from holding it: a deadline for a request's headers (slowloris), one for the
//! whole request (a body trickled in, a handler that hangs), and a cap on open connections.
//!
//! hyper does the protocol (`header_read_timeout` on HTTP/1), tower-http's `TimeoutLayer` the
//! request deadline (408); the cap is a semaphore taken before a connection is served: a
//! connection over it is closed at once, unserved, rather than queued. Each request carries its
//! peer's address as axum's `ConnectInfo<SocketAddr>` (rate limits key on it).
//!
//! Every request runs in a span of its own ([`request_span`], through tower-http's
//! `TraceLayer`): the method, the route, the path and the answer's status, continuing the W3C
//! trace its `traceparent` header names (smartflow-bus's propagator, as for an event), else
//! starting one. The handlers' spans are its children, so a trace runs from the caller through
//! the request to every handler of the events it published.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use clap::Args;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_HTTP_REQUEST_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;
/// How long the accept loop rests after the OS refused an accept (out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The HTTP server's limits (`SMARTFLOW_HTTP_*`), the same in every service.
#[derive(Debug, Clone, Copy, Args, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a client has to send a request's headers, in milliseconds; then the
    /// connection is closed (HTTP/1).
    #[arg(long, env = "SMARTFLOW_HTTP_HEADER_READ_TIMEOUT_MS",
          default_value_t = DEFAULT_HTTP_HEADER_READ_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_read_timeout_ms: u64,

    /// How long a request may take from its headers to its answer, body included, in
    /// milliseconds; then it is answered 408.
    #[arg(long, env = "SMARTFLOW_HTTP_REQUEST_TIMEOUT_MS",
          default_value_t = DEFAULT_HTTP_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_request_timeout_ms: u64,

    /// Connections open at once, per listener; one more is closed at once.
    #[arg(long, env = "SMARTFLOW_HTTP_MAX_CONNECTIONS",
          default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub http_max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            http_header_read_timeout_ms: DEFAULT_HTTP_HEADER_READ_TIMEOUT_MS,
            http_request_timeout_ms: DEFAULT_HTTP_REQUEST_TIMEOUT_MS,
            http_max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
        }
    }
}

impl HttpLimits {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_read_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_request_timeout_ms)
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then stops accepting and
/// waits for the open connections to finish their requests (the caller bounds that wait).
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let app = router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| request_span(request))
                .on_request(())
                .on_response(|response: &Response<Body>, _: Duration, span: &Span| {
                    record_status(span, response.status());
                })
                // A failed request is logged where it failed (`HttpError::internal`).
                .on_failure(()),
        );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout());
    builder.http2().timer(TokioTimer::new());
    let connections = Arc::new(Semaphore::new(limits.http_max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.http_max_connections, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The span of one request, named `METHOD route` for OpenTelemetry (the route as the router
/// spells it, `/v1/conversations/{id}/messages`; the method alone for a path no route matched),
/// made a child of the trace the request's `traceparent` header names, if it names a valid one.
pub fn request_span<B>(request: &Request<B>) -> Span {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = request
        .headers()
        .get(smartflow_domain::TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok());
    smartflow_bus::trace::continue_trace(&span, traceparent);
    span
}

/// Records the answer's status on its request's span; a server error marks the span failed.
fn record_status(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}
