//! The OpenAPI document every service serves at `GET /openapi.json`, generated from the code
//! with utoipa: every handler carries `#[utoipa::path]` (method, path, parameters, request
//! body, answers with their status codes and the [`ErrorBody`](crate::ErrorBody) of failures,
//! the credential it needs) and every body type `#[derive(ToSchema)]`. A service's routes are an
//! [`OpenApiRouter`] built with utoipa-axum's `routes!`, which registers a handler's route and
//! its documentation together; [`ServiceStart::serve`](crate::ServiceStart::serve) titles the
//! service's document ([`document`]) and the skeleton merges its own operations into it
//! (`/healthz`, `/metrics`, `/openapi.json`, the admin API, the dashboard).
//!
//! For the tests that hold a served document against the running service: [`documented`] (its
//! operations), [`mismatches`] (documented but not routed, routed but not documented) and
//! [`schema_problems`] (bodies whose schemas are missing or do not resolve).

use axum::http::Method;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, InfoBuilder};

pub use utoipa::openapi::OpenApi;
pub use utoipa_axum::router::OpenApiRouter;

/// The security scheme of a route for a service credential only (the header
/// [`SERVICE_TOKEN_HEADER`](crate::SERVICE_TOKEN_HEADER)); a handler names it in
/// `#[utoipa::path(security(("serviceToken" = [])))]`.
pub const SERVICE_TOKEN_SCHEME: &str = "serviceToken";
/// The security scheme of a user's access token (`Authorization: Bearer`), `bearerAuth`.
pub const BEARER_SCHEME: &str = "bearerAuth";

/// The document of `service` from `own`, the operations of its router
/// ([`OpenApiRouter::split_for_parts`]): titled, versioned, and with the security schemes the
/// operations name.
pub fn document(service: &str, own: OpenApi) -> OpenApi {
    let mut doc = own;
    doc.info = InfoBuilder::new()
        .title(format!("smartflow {service}"))
        .version(env!("CARGO_PKG_VERSION"))
        .build();
    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        SERVICE_TOKEN_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
            smartflow_domain::SERVICE_TOKEN_HEADER,
        ))),
    );
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc
}

/// The `(method, path)` pairs a document lists, for tests that hold it against a router.
pub fn documented(document: &Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, method, _) in operations(document) {
        out.push((method, path.to_owned()));
    }
    out.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    out
}

/// Every operation of `document`: its path, its method and the operation object.
fn operations(document: &Value) -> Vec<(&str, Method, &Value)> {
    let mut out = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                if let Ok(method) = method.to_uppercase().parse::<Method>() {
                    out.push((path.as_str(), method, operation));
                }
            }
        }
    }
    out
}

/// What is wrong with the bodies `document` describes, empty when nothing is: every operation
/// has at least one answer; every request body and every answer with content has a schema per
/// media type; every failure (4xx, 5xx) with a JSON body is an `ErrorBody` (or the shape of the
/// operation's success, for a status report such as `/healthz`); and every `$ref`
/// anywhere in the document names a schema of its components.
pub fn schema_problems(document: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    for (path, method, operation) in operations(document) {
        let name = format!("{method} {path}");
        let responses = operation["responses"].as_object();
        if responses.is_none_or(|r| r.is_empty()) {
            wrong.push(format!("{name} documents no answer"));
        }
        if let Some(content) = operation["requestBody"].get("content") {
            missing_schemas(&format!("{name}'s request body"), content, &mut wrong);
        }
        let json_of = |response: &Value| response["content"]["application/json"]["schema"].clone();
        let successes: Vec<Value> = responses
            .into_iter()
            .flatten()
            .filter(|(status, _)| status.starts_with('2'))
            .map(|(_, response)| json_of(response))
            .collect();
        for (status, response) in responses.into_iter().flatten() {
            let Some(content) = response.get("content") else {
                continue;
            };
            let what = format!("{name}'s {status} answer");
            missing_schemas(&what, content, &mut wrong);
            let failure = status.starts_with('4') || status.starts_with('5');
            let json = json_of(response);
            // A status report (`/healthz`) answers its failure in its success's shape.
            let error_body =
                json["$ref"] == "#/components/schemas/ErrorBody" || successes.contains(&json);
            if failure && !json.is_null() && !error_body {
                wrong.push(format!("{what} is not an ErrorBody: {json}"));
            }
        }
    }
    unresolved_refs(document, document, &mut wrong);
    wrong
}

/// Each media type of `content` must name a schema.
fn missing_schemas(what: &str, content: &Value, wrong: &mut Vec<String>) {
    let media = content.as_object();
    if media.is_none_or(|m| m.is_empty()) {
        wrong.push(format!("{what} names no media type"));
    }
    for (media_type, entry) in media.into_iter().flatten() {
        if entry.get("schema").is_none() {
            wrong.push(format!("{what} ({media_type}) has no schema"));
        }
    }
}

/// Every `$ref` under `value` that names no schema of `document`'s components.
fn unresolved_refs(document: &Value, value: &Value, wrong: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                if resolve_ref(document, reference).is_none() {
                    wrong.push(format!("`{reference}` does not resolve"));
                }
            }
            for inner in map.values() {
                unresolved_refs(document, inner, wrong);
            }
        }
        Value::Array(items) => {
            for inner in items {
                unresolved_refs(document, inner, wrong);
            }
        }
        _ => {}
    }
}

fn resolve_ref<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    let name = reference.strip_prefix("#/components/schemas/")?;
    document["components"]["schemas"].get(name)
}

/// `schema` itself, or the component it refers to (`{"$ref": ...}`).
pub fn resolved<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    schema["$ref"]
        .as_str()
        .and_then(|reference| resolve_ref(document, reference))
        .unwrap_or(schema)
}

/// The JSON request body schema of `method path`, resolved; `Null` when it has none.
pub fn request_schema<'a>(document: &'a Value, method: &Method, path: &str) -> &'a Value {
    let operation = &document["paths"][path][method.as_str().to_lowercase()];
    resolved(
        document,
        &operation["requestBody"]["content"]["application/json"]["schema"],
    )
}

/// The JSON schema of `method path`'s `status` answer, resolved; `Null` when it has none.
pub fn response_schema<'a>(
    document: &'a Value,
    method: &Method,
    path: &str,
    status: u16,
) -> &'a Value {
    let operation = &document["paths"][path][method.as_str().to_lowercase()];
    resolved(
        document,
        &operation["responses"][status.to_string()]["content"]["application/json"]["schema"],
    )
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
    use serde_json::json;

    use super::*;

    #[test]
    fn a_document_is_titled_and_names_both_credentials() {
        let doc = serde_json::to_value(document("x", OpenApi::default())).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "smartflow x");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes[SERVICE_TOKEN_SCHEME],
            json!({"type": "apiKey", "in": "header", "name": "x-smartflow-service-token"})
        );
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
    }

    #[test]
    fn missing_and_unresolved_schemas_are_named() {
        let doc = json!({
            "paths": {"/a/{id}": {
                "get": {"responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}},
                    "404": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
                }},
                "post": {
                    "requestBody": {"content": {"application/json": {}}},
                    "responses": {
                        "400": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}},
                    },
                },
                "put": {"responses": {}},
            }},
            "components": {"schemas": {
                "A": {"properties": {"b": {"$ref": "#/components/schemas/Missing"}}},
                "ErrorBody": {},
            }},
        });
        assert_eq!(
            documented(&doc),
            vec![
                (Method::GET, "/a/{id}".to_owned()),
                (Method::POST, "/a/{id}".to_owned()),
                (Method::PUT, "/a/{id}".to_owned()),
            ]
        );
        let mut wrong = schema_problems(&doc);
        wrong.sort();
        assert_eq!(
            wrong,
            vec![
                "POST /a/{id}'s 400 answer is not an ErrorBody: {\"$ref\":\"#/components/schemas/A\"}",
                "POST /a/{id}'s request body (application/json) has no schema",
                "PUT /a/{id} documents no answer",
                "`#/components/schemas/Missing` does not resolve",
            ]
        );
        assert_eq!(
            response_schema(&doc, &Method::GET, "/a/{id}", 200)["properties"]["b"]["$ref"],
            "#/components/schemas/Missing"
        );
        assert!(request_schema(&doc, &Method::POST, "/a/{id}").is_null());
    }
}
