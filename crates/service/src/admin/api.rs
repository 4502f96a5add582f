//! The admin HTTP API: the `smartflow outbox|inbox` commands over a service's own outbox and
//! inbox, for a service credential only, on the admin listener (`SMARTFLOW_ADMIN_ADDR`, else the
//! main one). Answers have the CLI's `--json` shapes (`docs/operations.md`); a change over more
//! than [`DEFAULT_CONFIRM_ABOVE`] rows without `"confirm": true` is 409 with the count.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use sea_orm::DatabaseConnection;
use serde::Deserialize;
use serde_json::{json, Value};
use smartflow_storage::inbox::InboxTable;
use smartflow_storage::inbox_admin::InboxFilter;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::{OutboxTable, MAX_BATCH};
use smartflow_storage::StorageError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::json::{inbox_report_json, inbox_row_json, outbox_report_json, outbox_row_json};
use super::selection::{
    before_now, parse_age, parse_inbox_status, parse_outbox_status, parse_settled_status,
    settled_rows, InboxSelection, OutboxSelection,
};
use super::{dashboard_routes, redrive_plan, DEFAULT_CONFIRM_ABOVE};
use crate::credentials::ServiceCredentials;
use crate::error_body::ErrorBody;
use crate::http_error::HttpError;
use crate::openapi::OpenApiRouter;

/// Rows a list answers when the request names no `limit`, and the most it may name.
const DEFAULT_LIMIT: u64 = 50;

/// The tables the API works on: the service's own outbox and inbox, where it has them.
#[derive(Clone)]
pub struct AdminTables {
    pub db: DatabaseConnection,
    pub outbox: Option<OutboxTable>,
    pub inbox: Option<InboxTable>,
}

/// The admin routes (`/admin/outbox/...`, `/admin/inbox/...`) over `tables`, behind
/// `credentials`, and the dashboard page over them (`/admin/dashboard`, which holds no data and
/// is served without a credential).
pub fn admin_routes(tables: AdminTables, credentials: ServiceCredentials) -> OpenApiRouter {
    OpenApiRouter::default()
        .routes(routes!(outbox_stats))
        .routes(routes!(outbox_rows))
        .routes(routes!(outbox_row))
        .routes(routes!(outbox_redrive))
        .routes(routes!(outbox_purge))
        .routes(routes!(outbox_unblock))
        .routes(routes!(inbox_stats))
        .routes(routes!(inbox_rows))
        .routes(routes!(inbox_row))
        .routes(routes!(inbox_purge))
        .route_layer(axum::middleware::from_fn_with_state(
            credentials,
            ServiceCredentials::require,
        ))
        .with_state(tables)
        .merge(dashboard_routes())
}

impl AdminTables {
    fn outbox(&self) -> Result<&OutboxTable, HttpError> {
        self.outbox.as_ref().ok_or_else(|| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "no_outbox",
                "this service has no outbox",
            )
        })
    }

    fn inbox(&self) -> Result<&InboxTable, HttpError> {
        self.inbox.as_ref().ok_or_else(|| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "no_inbox",
                "this service has no inbox",
            )
        })
    }
}

/// A storage failure as the operator sees it: a table without redrive history is theirs to
/// migrate (409); anything else is logged and answered 500.
fn storage(what: &'static str) -> impl Fn(StorageError) -> HttpError {
    move |e| match e {
        StorageError::NoRedriveHistory { .. } => {
            HttpError::new(StatusCode::CONFLICT, "no_redrive_history", e.to_string())
        }
        e => HttpError::internal(what, &e),
    }
}

/// 400 for a value the request got wrong, naming the field.
fn bad(field: &str) -> impl Fn(String) -> HttpError + '_ {
    move |reason| HttpError::invalid_request(format!("`{field}`: {reason}"))
}

fn age(field: &str, text: Option<&str>) -> Result<Option<std::time::Duration>, HttpError> {
    text.map(parse_age).transpose().map_err(bad(field))
}

/// A change of `rows` rows goes on only up to [`DEFAULT_CONFIRM_ABOVE`], or confirmed.
fn confirmed(what: &str, rows: u64, confirm: bool) -> Result<(), HttpError> {
    if confirm || rows <= DEFAULT_CONFIRM_ABOVE {
        return Ok(());
    }
    Err(HttpError::new(
        StatusCode::CONFLICT,
        "confirmation_required",
        format!(
            "{what} would change {rows} rows, more than {DEFAULT_CONFIRM_ABOVE}: send it again \
             with \"confirm\": true, or with \"dry_run\": true to see them"
        ),
    ))
}

fn limit(limit: Option<u64>) -> Result<u64, HttpError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_BATCH => Ok(n),
        n => Err(HttpError::invalid_request(format!(
            "`limit`: {n} is out of range (1 to {MAX_BATCH})"
        ))),
    }
}

fn batch_size(batch: Option<u64>) -> Result<u64, HttpError> {
    match batch.unwrap_or(500) {
        n @ 1..=MAX_BATCH => Ok(n),
        n => Err(HttpError::invalid_request(format!(
            "`batch_size`: {n} is out of range (1 to {MAX_BATCH})"
        ))),
    }
}

#[utoipa::path(
    get,
    path = "/admin/outbox/stats",
    summary = "Outbox rows per status, retries, dead reasons",
    security(("serviceToken" = [])),
    responses(
        (status = 200, description = "`{\"tables\": [stats]}`, the shape of `smartflow outbox stats --json`", body = Object),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no outbox (`no_outbox`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_stats(State(t): State<AdminTables>) -> Result<Json<Value>, HttpError> {
    let table = t.outbox()?;
    let report = table
        .report(&t.db)
        .await
        .map_err(storage("reading outbox statistics"))?;
    Ok(Json(json!({
        "tables": [outbox_report_json(table.name(), &report, now_millis())]
    })))
}

/// The filters of `GET /admin/outbox/rows`, all optional.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct OutboxRowsQuery {
    status: Option<String>,
    event_type: Option<String>,
    key: Option<String>,
    older_than: Option<String>,
    reason: Option<String>,
    limit: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/admin/outbox/rows",
    summary = "Outbox rows matching filters",
    security(("serviceToken" = [])),
    params(OutboxRowsQuery),
    responses(
        (status = 200, description = "`{\"tables\": [{\"table\", \"matched\", \"rows\"}]}`, as `smartflow outbox list --json`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no outbox (`no_outbox`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_rows(
    State(t): State<AdminTables>,
    query: Result<Query<OutboxRowsQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(q) = query?;
    let table = t.outbox()?;
    let status = q
        .status
        .as_deref()
        .map(parse_outbox_status)
        .transpose()
        .map_err(bad("status"))?;
    let selection = OutboxSelection {
        event_type: q.event_type,
        key: q.key,
        older_than: age("older_than", q.older_than.as_deref())?,
        reason: q.reason,
    };
    let filter = selection.filter(status, &[]);
    let limit = limit(q.limit)?;
    let read = storage("listing outbox rows");
    let matched = table.count_matching(&t.db, &filter).await.map_err(&read)?;
    let rows = table
        .list_matching(&t.db, &filter, limit)
        .await
        .map_err(&read)?;
    Ok(Json(json!({"tables": [{
        "table": table.name(),
        "matched": matched,
        "rows": rows.iter().map(|r| outbox_row_json(r, false)).collect::<Vec<_>>(),
    }]})))
}

#[utoipa::path(
    get,
    path = "/admin/outbox/rows/{id}",
    summary = "One outbox row in full (row id or event id)",
    security(("serviceToken" = [])),
    params(("id" = String, Path, description = "A row id or an event id")),
    responses(
        (status = 200, description = "`{\"tables\": [{\"table\", \"row\"}]}`, the row with its payload", body = Object),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "No such row, or no outbox", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_row(
    State(t): State<AdminTables>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let table = t.outbox()?;
    let read = storage("reading an outbox row");
    let record = match id.parse::<i64>() {
        Ok(row_id) => table.record_by_id(&t.db, row_id).await,
        Err(_) => table.record_by_event_id(&t.db, &id).await,
    }
    .map_err(read)?
    .ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no row `{id}` in {}", table.name()),
        )
    })?;
    Ok(Json(json!({"tables": [{
        "table": table.name(),
        "row": outbox_row_json(&record, true),
    }]})))
}

/// Which dead rows to send again: `ids`, filters, or `"all": true`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    #[serde(default)]
    ids: Vec<i64>,
    event_type: Option<String>,
    key: Option<String>,
    older_than: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

#[utoipa::path(
    post,
    path = "/admin/outbox/redrive",
    summary = "Send dead outbox rows again",
    security(("serviceToken" = [])),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "`{\"dry_run\", \"tables\": [{\"table\", \"matched\", \"ids\", \"redriven\"}]}`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no outbox (`no_outbox`)", body = ErrorBody),
        (status = 409, description = "Unconfirmed over the bound (`confirmation_required`), or a table without redrive history (`no_redrive_history`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_redrive(
    State(t): State<AdminTables>,
    body: Result<Json<RedriveRequest>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(req) = body?;
    let table = t.outbox()?;
    let selection = OutboxSelection {
        event_type: req.event_type,
        key: req.key,
        older_than: age("older_than", req.older_than.as_deref())?,
        reason: req.reason,
    };
    if req.ids.is_empty() && selection.is_empty() && !req.all {
        return Err(HttpError::invalid_request(
            "name the rows to redrive: `ids`, a filter (`event_type`, `key`, `older_than`, \
             `reason`), or `\"all\": true` for every dead row",
        ));
    }
    let filter = selection.filter(None, &req.ids);
    let ids = redrive_plan(&t.db, table, &filter)
        .await
        .map_err(storage("planning a redrive"))?;
    let redriven = if req.dry_run {
        0
    } else {
        confirmed("this redrive", ids.len() as u64, req.confirm)?;
        table
            .redrive_recorded(&t.db, &ids)
            .await
            .map_err(storage("redriving outbox rows"))?
    };
    Ok(Json(json!({"dry_run": req.dry_run, "tables": [{
        "table": table.name(),
        "matched": ids.len(),
        "ids": ids,
        "redriven": redriven,
    }]})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OutboxPurgeRequest {
    older_than: String,
    #[serde(default)]
    statuses: Vec<String>,
    batch_size: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

#[utoipa::path(
    post,
    path = "/admin/outbox/purge",
    summary = "Delete old settled outbox rows",
    security(("serviceToken" = [])),
    request_body = OutboxPurgeRequest,
    responses(
        (status = 200, description = "`{\"dry_run\", \"tables\": [{\"table\", \"matched\", \"purged\"}]}`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no outbox (`no_outbox`)", body = ErrorBody),
        (status = 409, description = "More rows than the confirmation bound without `\"confirm\": true` (`confirmation_required`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_purge(
    State(t): State<AdminTables>,
    body: Result<Json<OutboxPurgeRequest>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(req) = body?;
    let table = t.outbox()?;
    let older_than = parse_age(&req.older_than).map_err(bad("older_than"))?;
    let statuses = req
        .statuses
        .iter()
        .map(|s| parse_settled_status(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad("statuses"))?;
    let purge = settled_rows(older_than, statuses);
    let batch = batch_size(req.batch_size)?;
    let work = storage("purging outbox rows");
    let matched = table.count_purgeable(&t.db, &purge).await.map_err(&work)?;
    let purged = if req.dry_run {
        0
    } else {
        confirmed("this purge", matched, req.confirm)?;
        table.purge(&t.db, &purge, batch).await.map_err(&work)?
    };
    Ok(Json(json!({"dry_run": req.dry_run, "tables": [{
        "table": table.name(),
        "matched": matched,
        "purged": purged,
    }]})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UnblockRequest {
    key: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

#[utoipa::path(
    post,
    path = "/admin/outbox/unblock",
    summary = "Let a key held back by a waiting retry go on",
    security(("serviceToken" = [])),
    request_body = UnblockRequest,
    responses(
        (status = 200, description = "`{\"dry_run\", \"tables\": [{\"table\", \"key\", \"matched\", \"ids\", \"unblocked\"}]}`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no outbox (`no_outbox`)", body = ErrorBody),
        (status = 409, description = "More rows than the confirmation bound without `\"confirm\": true` (`confirmation_required`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn outbox_unblock(
    State(t): State<AdminTables>,
    body: Result<Json<UnblockRequest>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(req) = body?;
    let table = t.outbox()?;
    let work = storage("unblocking a key");
    let waiting: Vec<i64> = table
        .blocking_rows(&t.db, &req.key)
        .await
        .map_err(&work)?
        .iter()
        .map(|r| r.row.id)
        .collect();
    let unblocked = if req.dry_run {
        Vec::new()
    } else {
        confirmed("this unblock", waiting.len() as u64, req.confirm)?;
        table.unblock_key(&t.db, &req.key).await.map_err(&work)?
    };
    Ok(Json(json!({"dry_run": req.dry_run, "tables": [{
        "table": table.name(),
        "key": req.key,
        "matched": waiting.len(),
        "ids": waiting,
        "unblocked": unblocked,
    }]})))
}

#[utoipa::path(
    get,
    path = "/admin/inbox/stats",
    summary = "Inbox rows per consumer and status",
    security(("serviceToken" = [])),
    responses(
        (status = 200, description = "`{\"tables\": [stats]}`, the shape of `smartflow inbox stats --json`", body = Object),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no inbox (`no_inbox`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn inbox_stats(State(t): State<AdminTables>) -> Result<Json<Value>, HttpError> {
    let table = t.inbox()?;
    let report = table
        .report(&t.db)
        .await
        .map_err(storage("reading inbox statistics"))?;
    Ok(Json(
        json!({"tables": [inbox_report_json(table.name(), &report)]}),
    ))
}

/// The filters of `GET /admin/inbox/rows`, all optional.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct InboxRowsQuery {
    status: Option<String>,
    event_type: Option<String>,
    consumer: Option<String>,
    older_than: Option<String>,
    reason: Option<String>,
    limit: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/admin/inbox/rows",
    summary = "Inbox rows matching filters",
    security(("serviceToken" = [])),
    params(InboxRowsQuery),
    responses(
        (status = 200, description = "`{\"tables\": [{\"table\", \"matched\", \"rows\"}]}`, as `smartflow inbox list --json`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no inbox (`no_inbox`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn inbox_rows(
    State(t): State<AdminTables>,
    query: Result<Query<InboxRowsQuery>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(q) = query?;
    let table = t.inbox()?;
    let status = q
        .status
        .as_deref()
        .map(parse_inbox_status)
        .transpose()
        .map_err(bad("status"))?;
    let selection = InboxSelection {
        event_type: q.event_type,
        consumer: q.consumer,
        older_than: age("older_than", q.older_than.as_deref())?,
        reason: q.reason,
    };
    inbox_answer(&t, table, &selection.filter(status), limit(q.limit)?, false).await
}

#[utoipa::path(
    get,
    path = "/admin/inbox/rows/{event_id}",
    summary = "Every consumer's inbox row of one event",
    security(("serviceToken" = [])),
    params(("event_id" = String, Path, description = "The event id")),
    responses(
        (status = 200, description = "`{\"tables\": [{\"table\", \"matched\", \"rows\"}]}`", body = Object),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "No row of the event, or no inbox", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn inbox_row(
    State(t): State<AdminTables>,
    Path(event_id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let table = t.inbox()?;
    let filter = InboxFilter {
        event_id: Some(event_id),
        ..InboxFilter::default()
    };
    inbox_answer(&t, table, &filter, MAX_BATCH, true).await
}

async fn inbox_answer(
    t: &AdminTables,
    table: &InboxTable,
    filter: &InboxFilter,
    limit: u64,
    must_find: bool,
) -> Result<Json<Value>, HttpError> {
    let read = storage("listing inbox rows");
    let matched = table.count_matching(&t.db, filter).await.map_err(&read)?;
    let rows = table
        .list_matching(&t.db, filter, limit)
        .await
        .map_err(&read)?;
    if must_find && rows.is_empty() {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no row of event `{}` in {}",
                filter.event_id.as_deref().unwrap_or_default(),
                table.name()
            ),
        ));
    }
    Ok(Json(json!({"tables": [{
        "table": table.name(),
        "matched": matched,
        "rows": rows.iter().map(inbox_row_json).collect::<Vec<_>>(),
    }]})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InboxPurgeRequest {
    older_than: String,
    status: Option<String>,
    consumer: Option<String>,
    batch_size: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    confirm: bool,
}

#[utoipa::path(
    post,
    path = "/admin/inbox/purge",
    summary = "Delete old inbox rows",
    security(("serviceToken" = [])),
    request_body = InboxPurgeRequest,
    responses(
        (status = 200, description = "`{\"dry_run\", \"tables\": [{\"table\", \"matched\", \"purged\"}]}`", body = Object),
        (status = 400, description = "A value the request got wrong, named", body = ErrorBody),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 404, description = "This service has no inbox (`no_inbox`)", body = ErrorBody),
        (status = 409, description = "More rows than the confirmation bound without `\"confirm\": true` (`confirmation_required`)", body = ErrorBody),
        (status = 500, description = "The database failed", body = ErrorBody),
    ),
)]
async fn inbox_purge(
    State(t): State<AdminTables>,
    body: Result<Json<InboxPurgeRequest>, JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(req) = body?;
    let table = t.inbox()?;
    let older_than = parse_age(&req.older_than).map_err(bad("older_than"))?;
    let status = req
        .status
        .as_deref()
        .map(parse_inbox_status)
        .transpose()
        .map_err(bad("status"))?;
    let filter = InboxFilter {
        status,
        consumer: req.consumer,
        handled_before: Some(before_now(older_than)),
        ..InboxFilter::default()
    };
    let batch = batch_size(req.batch_size)?;
    let work = storage("purging inbox rows");
    let matched = table.count_matching(&t.db, &filter).await.map_err(&work)?;
    let purged = if req.dry_run {
        0
    } else {
        confirmed("this purge", matched, req.confirm)?;
        table.purge(&t.db, &filter, batch).await.map_err(&work)?
    };
    Ok(Json(json!({"dry_run": req.dry_run, "tables": [{
        "table": table.name(),
        "matched": matched,
        "purged": purged,
    }]})))
}
