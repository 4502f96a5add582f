//! The operator's dashboard (`GET /admin/dashboard`): one static page, served beside the admin
//! API on the admin listener, that reads and changes the outbox and inbox through that API.
//!
//! The page holds no data and no secret, so it is served to anyone who reaches the listener;
//! everything it shows needs a service credential, which the operator types into its log-in
//! form. The page keeps it in the tab's `sessionStorage` (gone when the tab closes, never in a
//! URL or a cookie) and sends it in [`SERVICE_TOKEN_HEADER`](crate::SERVICE_TOKEN_HEADER) on
//! its same-origin requests. The headers below keep the page from being framed, cached or
//! pointed at another origin.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::routes;

use crate::openapi::OpenApiRouter;

/// The route of the page (the one `page`'s `#[utoipa::path]` routes and documents).
pub const DASHBOARD_PATH: &str = "/admin/dashboard";

/// The page itself: vanilla JavaScript and CSS inline, no build step.
const PAGE: &str = include_str!("dashboard.html");

/// Only the page's own inline script and style run, it talks only to its own origin, and no
/// other page may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// `GET /admin/dashboard`.
pub fn dashboard_routes() -> OpenApiRouter {
    OpenApiRouter::default().routes(routes!(page))
}

/// The page holds no data; what it shows, it reads from the admin API with the service
/// credential the operator types in.
#[utoipa::path(
    get,
    path = "/admin/dashboard",
    summary = "The operator's dashboard (an HTML page; what it shows needs a service credential)",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")),
)]
async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_routed_where_its_path_says() {
        let api = dashboard_routes().into_openapi();
        assert!(api.paths.paths.contains_key(DASHBOARD_PATH));
    }
}
