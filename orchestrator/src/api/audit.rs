//! The audit across services: one saga (`GET /v1/sagas/{id}/audit`), or every
//! saga a filter matches, a page at a time (`GET /v1/audit`). Both ask the
//! participants over the bus; see [`crate::audit`].

use super::error::{ApiError, ErrorBody};
use super::sagas::{missing, paged_filter, valid_saga_id};
use super::state::ApiState;
use crate::audit::compare::SagaAudit;
use crate::audit::{self, Auditor, Tally};
use crate::engine::DriveError;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Sagas audited in one page by default.
pub const AUDIT_PAGE_DEFAULT: u64 = 100;
/// Most sagas audited in one page.
pub const AUDIT_PAGE_MAX: u64 = 200;

fn auditor(state: &ApiState) -> Result<Auditor, ApiError> {
    let nats = state.nats.clone().ok_or_else(|| ApiError::NotConfigured {
        message: "this server runs without a bus, so it cannot ask participants".into(),
    })?;
    Ok(Auditor::new(nats, state.driver.namespace().clone()))
}

/// One saga across services: each step as the orchestrator recorded it beside
/// what its participant recorded and the effect it reports, and every
/// disagreement (viewer). Asks each participant of the saga over the bus.
#[utoipa::path(get, path = "/v1/sagas/{saga_id}/audit", tag = "sagas",
    params(("saga_id" = String, Path, description = "Saga id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SagaAudit),
        (status = 404, body = ErrorBody),
        (status = 410, description = "Archived by retention", body = ErrorBody),
        (status = 503, description = "No bus to ask participants on", body = ErrorBody),
    ))]
pub async fn saga(
    State(state): State<ApiState>,
    Path(saga_id): Path<String>,
) -> Result<axum::Json<SagaAudit>, ApiError> {
    Ok(axum::Json(one(&state, &saga_id).await?))
}

/// One saga's audit (shared with the console).
pub async fn one(state: &ApiState, saga_id: &str) -> Result<SagaAudit, ApiError> {
    if !valid_saga_id(saga_id) {
        return Err(ApiError::not_found(format!("saga {saga_id}")));
    }
    let auditor = auditor(state)?;
    let plan = match audit::plan(&state.driver, saga_id).await {
        Ok(plan) => plan,
        Err(DriveError::UnknownSaga { .. }) => return Err(missing(state, saga_id).await),
        Err(e) => return Err(e.into()),
    };
    let mut audits = auditor.judge(std::slice::from_ref(&plan)).await;
    audits.pop().ok_or_else(|| ApiError::Unavailable { cause: "the audit came back empty".into() })
}

/// One page of a window's audit.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Counts, and the sagas that disagree or could not be checked.
    #[serde(flatten)]
    pub tally: Tally,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Audit every saga the filter matches, a page at a time, newest first
/// (viewer): typically `ended_within=1h` and a `type`. Answers counts, and the
/// sagas that disagree or could not be checked.
#[utoipa::path(get, path = "/v1/audit", tag = "sagas",
    params(super::sagas::ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditPage),
        (status = 422, description = "A filter value is not valid", body = ErrorBody),
        (status = 429, description = "Too many audits under way", body = ErrorBody),
        (status = 503, description = "No bus to ask participants on", body = ErrorBody),
    ))]
pub async fn window(
    State(state): State<ApiState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let (filter, limit, cursor) = paged_filter(raw.as_deref(), AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX)?;
    let auditor = auditor(&state)?;
    let _running = Arc::clone(&state.audits).try_acquire_owned().map_err(|_| ApiError::Busy {
        message: format!(
            "{} audits are under way on this instance, the most it runs at once; try again shortly",
            super::state::AUDITS_AT_ONCE
        ),
    })?;
    let store = state.driver.store();
    let now = store.clock().now_db();
    let owned = state.live_partitions().await?;
    let page = store.list(&filter, cursor.as_deref(), limit, now, &owned).await?;
    let ids: Vec<String> = page.rows.into_iter().map(|r| r.saga_id).collect();
    let mut tally = Tally::default();
    tally.add(auditor.audit(&state.driver, &ids).await?);
    Ok(axum::Json(AuditPage { tally, next_cursor: page.next_cursor }))
}
