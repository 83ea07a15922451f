//! `/v1/sagas`: start, list, show and repair sagas.

use super::error::{ApiError, ErrorBody};
use super::filter::FilterSpec;
use super::model::{SagaDetail, SagaSummary, StartAnswer};
use super::state::{ApiState, Json, Path, Query};
use super::views;
use crate::api::auth::Caller;
use crate::engine::driver::{RepairOutcome, Started};
use crate::store::PAGE_SIZE_MAX;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use sagas::machine::{OperatorAction, OperatorInput, ResolvedAs, SAGA_ID_LEN_MAX};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Page size when none is asked for.
pub const PAGE_SIZE_DEFAULT: u64 = 50;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The saga type (a definition name).
    #[serde(rename = "type")]
    pub saga_type: String,
    /// The saga's input; checked against the definition's JSON Schema.
    pub input: Value,
    /// Your key for this business transaction: the same key and input start
    /// one saga however often they are sent.
    pub idempotency_key: String,
}

/// How long a request waits for its saga's end (`?wait=30s`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer once the saga has ended (completed, compensated, failed) or
    /// parked, or after this long (`30s`, `1500ms`; at most 60s), whichever
    /// comes first.
    pub wait: Option<String>,
}

impl WaitQuery {
    fn duration(&self) -> Result<Option<std::time::Duration>, ApiError> {
        let Some(text) = self.wait.as_deref() else { return Ok(None) };
        let most = std::time::Duration::from_millis(sagas::protocol::START_WAIT_MS_MAX);
        let d = humantime::parse_duration(text).map_err(|e| {
            ApiError::invalid(format!("`wait` = `{text}` is not a duration like 30s: {e}"))
        })?;
        if d > most {
            return Err(ApiError::invalid(format!("`wait` is at most {}s", most.as_secs())));
        }
        Ok(Some(d))
    }
}

/// Start a saga (operator). With `?wait=`, answer when it has ended.
#[utoipa::path(post, path = "/v1/sagas", tag = "sagas", request_body = StartBody,
    params(WaitQuery),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Started", body = StartAnswer),
        (status = 200, description = "Already started with this key and input", body = StartAnswer),
        (status = 409, description = "The key was used with another input", body = ErrorBody),
        (status = 422, description = "Unknown type or input not matching the schema", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<ApiState>,
    Query(wait): Query<WaitQuery>,
    Json(body): Json<StartBody>,
) -> Result<(StatusCode, axum::Json<StartAnswer>), ApiError> {
    let wait = wait.duration()?;
    let started = state.driver.start(&body.saga_type, &body.idempotency_key, &body.input).await?;
    let (status, created) = match &started {
        Started::New { .. } => (StatusCode::CREATED, true),
        Started::Existing { .. } => (StatusCode::OK, false),
    };
    let saga_id = started.saga_id().to_owned();
    let outcome = match wait {
        None => None,
        Some(wait) => Some(state.driver.outcome(&saga_id, wait, &state.stopping).await?),
    };
    Ok((status, axum::Json(StartAnswer { saga_id, created, outcome })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Saga type.
    #[serde(rename = "type")]
    pub saga_type: Option<String>,
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// The step the saga is at.
    pub step: Option<String>,
    /// Started longer ago than this (`10m`, `2h`).
    pub older_than: Option<String>,
    /// Started more recently than this.
    pub newer_than: Option<String>,
    /// Ended (completed, compensated or failed) within this long (`1h`).
    pub ended_within: Option<String>,
    /// A stuck class or `any`.
    pub stuck: Option<String>,
    /// Text the idempotency key contains.
    pub key: Option<String>,
    /// Page size, 1-200 (default 50).
    pub limit: Option<u64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
    /// A business tag the saga has: `tag.customer=42` (repeat for several,
    /// all must match; at most 8).
    #[serde(rename = "tag.<name>")]
    pub tag: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List sagas, newest first (viewer).
#[utoipa::path(get, path = "/v1/sagas", tag = "sagas", params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SagaPage),
        (status = 422, description = "A filter value is not valid", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::Json<SagaPage>, ApiError> {
    let (filter, limit, cursor) = paged_filter(raw.as_deref(), PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)?;
    Ok(axum::Json(page(&state, &filter, cursor.as_deref(), limit).await?))
}

/// A list query: its filter, page size (`limit`, `default` when absent, at
/// most `max`) and cursor.
pub fn paged_filter(
    raw: Option<&str>,
    default: u64,
    max: u64,
) -> Result<(crate::store::ListFilter, u64, Option<String>), ApiError> {
    let (spec, mut paging) = FilterSpec::from_query(raw, &["limit", "cursor"])?;
    let limit = match paging.get("limit") {
        None => default,
        Some(text) => text.parse::<u64>().unwrap_or(0),
    };
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!("`limit` must be 1-{max}")));
    }
    let cursor = paging.remove("cursor");
    if cursor.as_deref().is_some_and(|c| !valid_saga_id(c)) {
        return Err(ApiError::invalid("`cursor` is not a cursor this API gave out"));
    }
    Ok((spec.to_filter()?, limit, cursor))
}

/// One page of sagas as the API shows them (shared with the console).
pub async fn page(
    state: &ApiState,
    filter: &crate::store::ListFilter,
    cursor: Option<&str>,
    limit: u64,
) -> Result<SagaPage, ApiError> {
    let now = state.driver.store().clock().now_db();
    let owned = state.live_partitions().await?;
    let page = state.driver.store().list(filter, cursor, limit, now, &owned).await?;
    let registry = state.driver.registry();
    let ids: Vec<&str> = page.rows.iter().map(|r| r.saga_id.as_str()).collect();
    let mut tags = state.driver.store().tags_of(&ids).await?;
    let items = page
        .rows
        .iter()
        .map(|r| {
            let mut summary = views::summary(r, registry, now, &owned);
            summary.tags = tags.remove(&r.saga_id).unwrap_or_default();
            summary
        })
        .collect();
    Ok(SagaPage { items, next_cursor: page.next_cursor })
}

/// One page of sagas exported whole.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportPage {
    /// Each saga as a line of the archive: its row, tags and every event.
    pub items: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Most sagas in one export page (each comes with its whole history).
pub const EXPORT_PAGE_MAX: u64 = 200;

/// Sagas whole, as retention archives them (viewer): the list's filters and
/// paging, newest first; `skald sagas export` writes them to files.
#[utoipa::path(get, path = "/v1/export", tag = "sagas", params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExportPage),
        (status = 422, description = "A filter value is not valid", body = ErrorBody),
    ))]
pub async fn export(
    State(state): State<ApiState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::Json<ExportPage>, ApiError> {
    let (filter, limit, cursor) = paged_filter(raw.as_deref(), EXPORT_PAGE_MAX, EXPORT_PAGE_MAX)?;
    let store = state.driver.store();
    let now = store.clock().now_db();
    let owned = state.live_partitions().await?;
    let page = store.list(&filter, cursor.as_deref(), limit, now, &owned).await?;
    let listed = page.rows.len();
    let whole = store.whole(page.rows).await?;
    // Cut short by size: the next page starts after the last one given.
    let next_cursor = if whole.len() < listed {
        whole.last().map(|s| s.row.saga_id.clone())
    } else {
        page.next_cursor
    };
    let items = whole.iter().map(crate::retention::line).collect();
    Ok(axum::Json(ExportPage { items, next_cursor }))
}

/// Saga ids are UUIDs; anything else cannot name a saga.
pub fn valid_saga_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= SAGA_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One saga: status, steps, history, commands and replies (viewer). With
/// `?wait=`, answer when it has ended.
#[utoipa::path(get, path = "/v1/sagas/{saga_id}", tag = "sagas",
    params(("saga_id" = String, Path, description = "Saga id"), WaitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SagaDetail),
        (status = 404, body = ErrorBody),
        (status = 410, description = "Archived by retention: the answer says when and to which file", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<ApiState>,
    Path(saga_id): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> Result<axum::Json<SagaDetail>, ApiError> {
    if let Some(wait) = wait.duration()?
        && valid_saga_id(&saga_id)
    {
        match state.driver.wait_for_end(&saga_id, wait, &state.stopping).await {
            // An unknown (or archived) saga is answered below.
            Ok(_) | Err(crate::engine::DriveError::UnknownSaga { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(axum::Json(detail(&state, &saga_id).await?))
}

/// The full picture of one saga (shared with the console).
pub async fn detail(state: &ApiState, saga_id: &str) -> Result<SagaDetail, ApiError> {
    if !valid_saga_id(saga_id) {
        return Err(ApiError::not_found(format!("saga {saga_id}")));
    }
    let (row, saga) = match state.driver.state(saga_id).await {
        Ok(found) => found,
        Err(crate::engine::DriveError::UnknownSaga { .. }) => {
            return Err(missing(state, saga_id).await);
        }
        Err(e) => return Err(e.into()),
    };
    let history = state.driver.store().history(saga_id).await?;
    let now = state.driver.store().clock().now_db();
    let owned = state.live_partitions().await?;
    let owner = state.owner_of(row.partition).await?;
    let mut summary = views::summary(&row, state.driver.registry(), now, &owned);
    summary.tags =
        state.driver.store().tags_of(&[saga_id]).await?.remove(saga_id).unwrap_or_default();
    Ok(views::detail(summary, owner, &saga, &history))
}

/// Why a saga the store does not hold cannot be shown: archived (410, when
/// and where to), or never known (404).
pub async fn missing(state: &ApiState, saga_id: &str) -> ApiError {
    match state.driver.store().archived(saga_id).await {
        Ok(Some(a)) => ApiError::Gone {
            message: format!(
                "saga {saga_id} ({} {}) was archived on {} (it ended {}); its history is in the archive file {}",
                a.saga_type,
                a.status,
                super::console::pages::utc(a.archived_at_ms),
                super::console::pages::utc(a.ended_at_ms),
                a.file
            ),
        },
        Ok(None) => ApiError::not_found(format!("saga {saga_id}")),
        Err(e) => e.into(),
    }
}

/// A repair: who asks is the token's name.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairBody {
    /// Why (required for skip, abort and resolve; for resolve it is the evidence).
    #[serde(default)]
    pub reason: String,
    /// For resolve: `completed`, `compensated` or `failed`.
    pub outcome: Option<String>,
    /// Makes the repair idempotent: the same id again returns the first answer.
    pub request_id: Option<String>,
    /// For migrate: the version of the saga's definition to move it to.
    pub to_version: Option<u32>,
    /// For migrate: only say whether the saga could move; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A migrate's target version, required.
pub fn to_version(v: Option<u32>) -> Result<u32, ApiError> {
    v.ok_or_else(|| {
        ApiError::invalid("migrate needs `to_version`: the version to move the saga to")
    })
}

/// The operator input a repair action names.
pub fn operator_action(action: &str, outcome: Option<&str>) -> Result<OperatorAction, ApiError> {
    Ok(match action {
        "retry" => OperatorAction::RetryNow,
        "skip" => OperatorAction::Skip,
        "abort" => OperatorAction::Abort,
        "resume" => OperatorAction::Resume,
        "resolve" => OperatorAction::Resolve(match outcome {
            Some("completed") => ResolvedAs::Completed,
            Some("compensated") => ResolvedAs::Compensated,
            Some("failed") => ResolvedAs::Failed,
            _ => {
                return Err(ApiError::invalid(
                    "resolve needs `outcome`: completed, compensated or failed",
                ));
            }
        }),
        other => {
            return Err(ApiError::not_found(format!(
                "repair action `{other}` (use retry, skip, abort, resume, resolve or migrate)"
            )));
        }
    })
}

/// Repair a saga: retry, skip, abort, resume or resolve (operator).
#[utoipa::path(post, path = "/v1/sagas/{saga_id}/{action}", tag = "repairs",
    params(
        ("saga_id" = String, Path, description = "Saga id"),
        ("action" = String, Path, description = "retry | skip | abort | resume | resolve | migrate (to `to_version`, when the saga's history is valid under it)"),
    ),
    request_body = RepairBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done (or the recorded answer to the same request id)", body = RepairOutcome),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not possible in the saga's current state (`not_now`; `ended` once it has ended), or its history is not valid under the version asked for (`incompatible`)", body = ErrorBody),
        (status = 422, description = "Missing reason or outcome", body = ErrorBody),
    ))]
pub async fn repair(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((saga_id, action)): Path<(String, String)>,
    Json(body): Json<RepairBody>,
) -> Result<axum::Json<RepairOutcome>, ApiError> {
    if !valid_saga_id(&saga_id) {
        return Err(ApiError::not_found(format!("saga {saga_id}")));
    }
    let request_id = body.request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if action == "migrate" {
        let to = to_version(body.to_version)?;
        let driver = &state.driver;
        let moved =
            driver.migrate(&saga_id, to, &caller.name, &body.reason, &request_id, body.dry_run);
        return Ok(axum::Json(moved.await?));
    }
    if body.dry_run || body.to_version.is_some() {
        return Err(ApiError::invalid("`dry_run` and `to_version` are for migrate only"));
    }
    let action = operator_action(&action, body.outcome.as_deref())?;
    let op = OperatorInput { action, by: caller.name, reason: body.reason };
    Ok(axum::Json(state.driver.repair(&saga_id, op, &request_id).await?))
}
