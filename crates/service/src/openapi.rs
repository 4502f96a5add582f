//! The OpenAPI document every service serves at `GET /openapi.json`: its own operations (each
//! service lists them beside its router, `http::operations()`) and the skeleton's (`/healthz`,
//! `/metrics`, `/openapi.json`, the admin API). Paths, methods, a summary and whether a service
//! credential is needed; bodies are described in `docs/operations.md` and the services' docs.

use axum::http::Method;
use serde_json::{json, Map, Value};

/// One documented operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    /// The path as the router spells it (`/v1/conversations/{id}/messages`), which is also
    /// OpenAPI's template syntax.
    pub path: &'static str,
    pub summary: &'static str,
    /// Whether only a service credential (`x-smartflow-service-token`) is answered.
    pub service_only: bool,
}

impl Operation {
    pub fn get(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::GET, path, summary)
    }

    pub fn post(path: &'static str, summary: &'static str) -> Self {
        Self::new(Method::POST, path, summary)
    }

    fn new(method: Method, path: &'static str, summary: &'static str) -> Self {
        Self {
            method,
            path,
            summary,
            service_only: false,
        }
    }

    /// The same operation, answered for a service credential only.
    pub fn for_services(mut self) -> Self {
        self.service_only = true;
        self
    }
}

/// The skeleton's own operations: on the main listener, and `/metrics` with the admin API on the
/// admin listener when one is configured.
pub fn skeleton_operations() -> Vec<Operation> {
    let admin = |op: Operation| op.for_services();
    vec![
        Operation::get("/healthz", "Health of the database and the bus's loops"),
        Operation::get("/openapi.json", "This document"),
        admin(Operation::get("/metrics", "Prometheus metrics")),
        admin(Operation::get(
            "/admin/outbox/stats",
            "Outbox rows per status, retries, dead reasons",
        )),
        admin(Operation::get(
            "/admin/outbox/rows",
            "Outbox rows matching filters",
        )),
        admin(Operation::get(
            "/admin/outbox/rows/{id}",
            "One outbox row in full (row id or event id)",
        )),
        admin(Operation::post(
            "/admin/outbox/redrive",
            "Send dead outbox rows again",
        )),
        admin(Operation::post(
            "/admin/outbox/purge",
            "Delete old settled outbox rows",
        )),
        admin(Operation::post(
            "/admin/outbox/unblock",
            "Let a key held back by a waiting retry go on",
        )),
        admin(Operation::get(
            "/admin/inbox/stats",
            "Inbox rows per consumer and status",
        )),
        admin(Operation::get(
            "/admin/inbox/rows",
            "Inbox rows matching filters",
        )),
        admin(Operation::get(
            "/admin/inbox/rows/{event_id}",
            "Every consumer's inbox row of one event",
        )),
        admin(Operation::post(
            "/admin/inbox/purge",
            "Delete old inbox rows",
        )),
        Operation::get(
            crate::admin::DASHBOARD_PATH,
            "The operator's dashboard (an HTML page; what it shows needs a service credential)",
        ),
    ]
}

/// The OpenAPI 3.1 document of `service` with `operations`.
pub fn document(service: &str, operations: &[Operation]) -> Value {
    let mut paths = Map::new();
    for op in operations {
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "responses": {
                "default": {
                    "description": "JSON; errors as {\"error\": {\"code\", \"message\"}}"
                }
            },
        });
        let parameters: Vec<Value> = path_parameters(op.path)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if op.service_only {
            operation["security"] = json!([{"serviceToken": []}]);
        }
        item[op.method.as_str().to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": format!("smartflow {service}"), "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"securitySchemes": {"serviceToken": {
            "type": "apiKey", "in": "header", "name": smartflow_domain::SERVICE_TOKEN_HEADER
        }}},
    })
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The `(method, path)` pairs a document lists, for tests that hold it against a router.
pub fn documented(document: &Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                if let Ok(method) = method.to_uppercase().parse::<Method>() {
                    out.push((method, path.clone()));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    out
}

/// Whether an answer is the JSON fallbacks' (no route for the path, or none for the method).
fn is_fallback(status: axum::http::StatusCode, message: Option<&str>) -> bool {
    use axum::http::StatusCode;
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && message == Some("no such resource"))
}

/// Holds a served `document` against the router that serves it, through `call` (a request with
/// the method to the path, answering the status and the error body's message, if any): every
/// documented operation must be routed (not the JSON fallbacks' 404 "no such resource" or 405),
/// and on every documented path each undocumented method must get a fallback's answer. Returns
/// what disagrees, empty when nothing does. Path parameters are filled with `openapi-probe`.
pub async fn mismatches(
    document: &Value,
    call: impl AsyncFn(Method, String) -> (axum::http::StatusCode, Option<String>),
) -> Vec<String> {
    let documented = documented(document);
    let mut wrong = Vec::new();
    let fill = |path: &str| {
        path.split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "openapi-probe"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for (method, path) in &documented {
        let (status, message) = call(method.clone(), fill(path)).await;
        if is_fallback(status, message.as_deref()) {
            wrong.push(format!(
                "{method} {path} is documented but not routed ({status})"
            ));
        }
    }
    let mut paths: Vec<&String> = documented.iter().map(|(_, p)| p).collect();
    paths.dedup();
    for path in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            if documented.iter().any(|(m, p)| *m == method && p == path) {
                continue;
            }
            let (status, message) = call(method.clone(), fill(path)).await;
            if !is_fallback(status, message.as_deref()) {
                wrong.push(format!(
                    "{method} {path} is routed ({status}) but not documented"
                ));
            }
        }
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_lists_paths_methods_parameters_and_credentials() {
        let doc = document(
            "x",
            &[
                Operation::get("/a/{id}", "A"),
                Operation::post("/a/{id}", "B").for_services(),
            ],
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["paths"]["/a/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        assert!(doc["paths"]["/a/{id}"]["get"].get("security").is_none());
        assert_eq!(
            doc["paths"]["/a/{id}"]["post"]["security"][0]["serviceToken"],
            json!([])
        );
        assert_eq!(
            documented(&doc),
            vec![
                (Method::GET, "/a/{id}".to_owned()),
                (Method::POST, "/a/{id}".to_owned())
            ]
        );
    }
}
