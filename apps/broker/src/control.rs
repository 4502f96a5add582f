//! The HTTP control API: fault injection for the running cluster.
//!
//! - `POST /brokers/{id}/down`, `POST /brokers/{id}/up`: disconnect a broker (1-based id, `-1`
//!   for all) and refuse connections, or accept them again.
//! - `POST /produce-errors` `{"count": N, "fault": "not_leader" | "message_too_large" |
//!   "topic_authorization_failed"}`: the next N Produce requests fail; `DELETE /produce-errors`
//!   drops the ones not used up yet.
//! - `POST /topics` `{"name": ..., "partitions": ...}`: creates a topic (the mock cluster has no
//!   CreateTopics, so clients' `ensure_topics` needs it made here).
//! - `GET /healthz`: the bootstrap servers, the broker count and which brokers are down.
//!
//! Every error is `{"error": {"code": ..., "message": ...}}`, the shape the services use.
//!
//! No credential: the API listens on loopback only (start-up refuses another address), where
//! the mock cluster's Kafka ports, which take no credential either, already let any local
//! process do more than fault injection. What loopback does not keep out is a web page in a
//! developer's browser, so a request with an `Origin` header (every cross-site `POST` a
//! browser sends) or a `Host` that is not a loopback name (DNS rebinding) is refused 403
//! `not_a_local_client`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use smartflow_kafka::{EmbeddedBroker, KafkaError, ProduceFault};

use crate::config::TopicSpec;

/// The broker id that means "every broker", as librdkafka's mock API has it.
pub const ALL_BROKERS: i32 = -1;
/// The most produce errors one request may queue; the mock keeps them in memory.
pub const MAX_PRODUCE_ERRORS: usize = 100_000;

/// What every control request shares.
#[derive(Clone)]
pub struct ControlState {
    broker: Arc<EmbeddedBroker>,
    brokers: i32,
    // Only for `/healthz`: the mock cluster cannot be asked. Never held across an await.
    down: Arc<Mutex<BTreeSet<i32>>>,
}

impl ControlState {
    /// The state over `broker`, a cluster of `brokers` brokers (ids 1..=brokers).
    pub fn new(broker: Arc<EmbeddedBroker>, brokers: i32) -> Self {
        Self {
            broker,
            brokers,
            down: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Records broker `id` (or all) as down or up, for `/healthz`.
    fn mark(&self, id: i32, down: bool) {
        let mut set = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<i32> = if id == ALL_BROKERS {
            (1..=self.brokers).collect()
        } else {
            vec![id]
        };
        for id in ids {
            if down {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }

    fn down_ids(&self) -> Vec<i32> {
        let set = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        set.iter().copied().collect()
    }

    /// Runs `op` on the cluster off the runtime's threads: each call waits for the mock's own
    /// thread (well under a millisecond, but a blocking wait all the same).
    async fn on_cluster<T, F>(&self, op: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(&EmbeddedBroker) -> Result<T, KafkaError> + Send + 'static,
    {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || op(&broker))
            .await
            .map_err(|e| ControlError::internal(format!("the cluster call did not finish: {e}")))?
            .map_err(|e| ControlError::internal(e.to_string()))
    }
}

/// The control API's routes over `state`.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/brokers/{id}/down", post(broker_down))
        .route("/brokers/{id}/up", post(broker_up))
        .route(
            "/produce-errors",
            post(inject_produce_errors).delete(clear_produce_errors),
        )
        .route("/topics", post(create_topic))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(local_clients_only))
        .with_state(state)
}

/// Refuses what a browser sends for a web page (an `Origin` header) or through a rebound DNS
/// name (a `Host` other than `localhost` or a loopback address); tools and tests send neither.
async fn local_clients_only(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host_is_local = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(is_loopback_host);
    if headers.contains_key(header::ORIGIN) || !host_is_local {
        return ControlError {
            status: StatusCode::FORBIDDEN,
            code: "not_a_local_client",
            message: "the control API answers local tools only: no Origin header, and a Host \
                      of localhost or a loopback address"
                .to_owned(),
        }
        .into_response();
    }
    next.run(request).await
}

/// Whether a `Host` header names this machine's loopback: `localhost`, `127.x.x.x` or `[::1]`,
/// with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(name, _)| name),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A refused or failed control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ControlError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "control request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "cluster_error",
            message,
        }
    }
}

/// The wire form of every error.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ControlError {
    fn from(rejection: JsonRejection) -> Self {
        ControlError::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ControlError {
    fn from(rejection: PathRejection) -> Self {
        ControlError::invalid(rejection.body_text())
    }
}

/// The answer to a control request that changed something.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
    pub message: String,
}

fn done(message: String) -> Json<Done> {
    tracing::info!("{message}");
    Json(Done { ok: true, message })
}

/// Checks a broker id from the path: 1..=brokers, or -1 for all.
fn broker_id(
    state: &ControlState,
    path: Result<Path<String>, PathRejection>,
) -> Result<i32, ControlError> {
    let Path(raw) = path?;
    let id: i32 = raw.trim().parse().map_err(|_| {
        ControlError::invalid(format!(
            "broker id `{raw}` is not a number; use 1..={} or -1 for all",
            state.brokers
        ))
    })?;
    if id == ALL_BROKERS || (1..=state.brokers).contains(&id) {
        Ok(id)
    } else {
        Err(ControlError {
            status: StatusCode::NOT_FOUND,
            code: "no_such_broker",
            message: format!(
                "there is no broker {id}: this cluster has brokers 1..={} (-1 means all)",
                state.brokers
            ),
        })
    }
}

fn which(id: i32) -> String {
    if id == ALL_BROKERS {
        "every broker".to_owned()
    } else {
        format!("broker {id}")
    }
}

async fn broker_down(
    State(state): State<ControlState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ControlError> {
    let id = broker_id(&state, path)?;
    state.on_cluster(move |b| b.set_broker_down(id)).await?;
    state.mark(id, true);
    Ok(done(format!("{} is down", which(id))))
}

async fn broker_up(
    State(state): State<ControlState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Done>, ControlError> {
    let id = broker_id(&state, path)?;
    state.on_cluster(move |b| b.set_broker_up(id)).await?;
    state.mark(id, false);
    Ok(done(format!("{} is up", which(id))))
}

/// A produce fault's name on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultName {
    NotLeader,
    MessageTooLarge,
    TopicAuthorizationFailed,
}

impl FaultName {
    fn fault(self) -> ProduceFault {
        match self {
            FaultName::NotLeader => ProduceFault::NotLeader,
            FaultName::MessageTooLarge => ProduceFault::MessageTooLarge,
            FaultName::TopicAuthorizationFailed => ProduceFault::TopicAuthorizationFailed,
        }
    }
}

/// The body of `POST /produce-errors`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProduceErrors {
    pub count: usize,
    pub fault: FaultName,
}

async fn inject_produce_errors(
    State(state): State<ControlState>,
    body: Result<Json<ProduceErrors>, JsonRejection>,
) -> Result<Json<Done>, ControlError> {
    let Json(body) = body?;
    if !(1..=MAX_PRODUCE_ERRORS).contains(&body.count) {
        return Err(ControlError::invalid(format!(
            "count must be 1 to {MAX_PRODUCE_ERRORS}, not {}",
            body.count
        )));
    }
    let (count, fault) = (body.count, body.fault.fault());
    state
        .on_cluster(move |b| b.inject_produce_errors(count, fault))
        .await?;
    Ok(done(format!(
        "the next {count} Produce request(s) fail with {fault:?}"
    )))
}

async fn clear_produce_errors(
    State(state): State<ControlState>,
) -> Result<Json<Done>, ControlError> {
    state.on_cluster(|b| b.clear_produce_errors()).await?;
    Ok(done("injected Produce errors cleared".to_owned()))
}

/// The body of `POST /topics`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
}

async fn create_topic(
    State(state): State<ControlState>,
    body: Result<Json<NewTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<Done>), ControlError> {
    let Json(body) = body?;
    let spec = TopicSpec {
        name: body.name,
        partitions: body.partitions,
    };
    spec.validate().map_err(ControlError::invalid)?;
    let (name, partitions) = (spec.name.clone(), spec.partitions);
    let created = tokio::task::spawn_blocking({
        let broker = state.broker.clone();
        move || broker.create_topic(&name, partitions)
    })
    .await
    .map_err(|e| ControlError::internal(format!("the cluster call did not finish: {e}")))?;
    match created {
        Ok(()) => Ok((
            StatusCode::CREATED,
            done(format!(
                "topic `{}` created with {} partition(s)",
                spec.name, spec.partitions
            )),
        )),
        // The mock reports an existing topic (ours, or one a client's request auto-created)
        // this way; it is the caller's to resolve, not a broker failure.
        Err(e) if e.to_string().to_ascii_lowercase().contains("exist") => Err(ControlError {
            status: StatusCode::CONFLICT,
            code: "topic_exists",
            message: format!("topic `{}` already exists: {e}", spec.name),
        }),
        Err(e) => Err(ControlError::internal(e.to_string())),
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub bootstrap_servers: String,
    pub brokers: i32,
    pub down: Vec<i32>,
}

async fn healthz(State(state): State<ControlState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        bootstrap_servers: state.broker.bootstrap_servers(),
        brokers: state.brokers,
        down: state.down_ids(),
    })
}

async fn not_found() -> ControlError {
    ControlError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such resource; see GET /healthz, POST /brokers/{id}/down|up, \
                  POST|DELETE /produce-errors, POST /topics"
            .to_owned(),
    }
}

async fn method_not_allowed() -> ControlError {
    ControlError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed on this resource".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_local() {
        for local in [
            "localhost",
            "localhost:9",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(local), "{local}");
        }
        for other in [
            "evil.example",
            "evil.example:80",
            "10.0.0.1:80",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(other), "{other}");
        }
    }
}
