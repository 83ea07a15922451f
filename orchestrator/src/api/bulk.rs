//! Bulk repairs: one action on every saga a filter matches.
//!
//! A dry run replays each matching saga and asks the machine what the action
//! would do, without recording anything, and lists what would change and what
//! would be refused. A real run becomes a job that repairs one saga at a time
//! at a bounded rate; each saga's repair carries the request id
//! `<job id>:<saga id>`, so sending the same bulk request again (same job id)
//! after a restart finishes the work without repeating any of it. Jobs live in
//! memory (the newest [`JOBS_KEPT_MAX`]); their effects live in the store.

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::filter::FilterSpec;
use super::model::{BulkJob, BulkPreview, WouldChange, WouldFail};
use super::sagas::operator_action;
use super::state::{ApiState, Json, Path};
use crate::engine::driver::{DriveError, Driver, RepairOutcome};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use sagas::machine::{Input, OperatorInput};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Most sagas one bulk request may touch.
pub const BULK_SAGAS_MAX: u64 = 10_000;
/// Default cap when the request gives none.
const BULK_SAGAS_DEFAULT: u64 = 1_000;
/// Most repairs per second a job may make.
pub const RATE_PER_SECOND_MAX: u32 = 1_000;
const RATE_PER_SECOND_DEFAULT: u32 = 20;
/// Jobs remembered for `GET /v1/bulk/{job_id}`.
pub const JOBS_KEPT_MAX: usize = 100;
/// Failures listed per job (all are counted).
const FAILURES_LISTED_MAX: usize = 1_000;
/// Sagas listed in a dry run's answer (all are counted).
const PREVIEW_LISTED_MAX: usize = 500;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// retry, skip, abort, resume, resolve or migrate.
    pub action: String,
    /// Which sagas (same fields as the list's query).
    #[serde(default)]
    pub filter: FilterSpec,
    #[serde(default)]
    pub reason: String,
    /// For resolve: completed, compensated or failed.
    pub outcome: Option<String>,
    /// For migrate: the version to move each saga to.
    pub to_version: Option<u32>,
    /// List what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Repairs per second, 1-1000 (default 20).
    pub rate_per_second: Option<u32>,
    /// At most this many sagas, 1-10000 (default 1000).
    pub max_sagas: Option<u64>,
    /// The job id: the same id again returns that job instead of starting another.
    pub request_id: Option<String>,
}

/// The jobs this instance ran, newest [`JOBS_KEPT_MAX`].
#[derive(Debug, Default)]
pub struct BulkJobs {
    jobs: Mutex<BTreeMap<String, Arc<Mutex<BulkJob>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BulkJobs {
    fn get(&self, id: &str) -> Option<BulkJob> {
        lock(&self.jobs).get(id).map(|j| lock(j).clone())
    }

    /// Every job remembered, newest first.
    #[must_use]
    pub fn all(&self) -> Vec<BulkJob> {
        let mut all: Vec<BulkJob> = lock(&self.jobs).values().map(|j| lock(j).clone()).collect();
        all.sort_by_key(|j| std::cmp::Reverse(j.created_at_ms));
        all
    }

    /// Insert a job, unless one with its id exists (then that one is returned).
    fn insert(&self, job: BulkJob) -> Result<Arc<Mutex<BulkJob>>, Box<BulkJob>> {
        let mut jobs = lock(&self.jobs);
        if let Some(existing) = jobs.get(&job.job_id) {
            return Err(Box::new(lock(existing).clone()));
        }
        if jobs.len() >= JOBS_KEPT_MAX {
            let oldest = jobs
                .iter()
                .filter(|(_, j)| lock(j).state == "done")
                .min_by_key(|(_, j)| lock(j).created_at_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                jobs.remove(&k);
            }
        }
        let job = Arc::new(Mutex::new(job));
        jobs.insert(lock(&job).job_id.clone(), job.clone());
        Ok(job)
    }
}

/// What a bulk job does to each saga.
#[derive(Debug, Clone)]
enum BulkOp {
    Repair(OperatorInput),
    Migrate { to_version: u32, by: String, reason: String },
}

impl BulkOp {
    /// The events it would record on one saga, or why it would fail.
    async fn preview(&self, driver: &Driver, saga_id: &str) -> Result<Vec<String>, DriveError> {
        match self {
            Self::Repair(op) => {
                let decision = driver.preview(saga_id, &Input::Operator(op.clone())).await?;
                Ok(decision.events.iter().map(|e| e.name().to_owned()).collect())
            }
            Self::Migrate { to_version, by, reason } => {
                let request_id = format!("preview:{saga_id}");
                let dry = driver.migrate(saga_id, *to_version, by, reason, &request_id, true);
                Ok(dry.await?.events)
            }
        }
    }

    /// Do it to one saga, idempotent by `request_id`.
    async fn apply(
        &self,
        driver: &Driver,
        saga_id: &str,
        request_id: &str,
    ) -> Result<RepairOutcome, DriveError> {
        match self {
            Self::Repair(op) => driver.repair(saga_id, op.clone(), request_id).await,
            Self::Migrate { to_version, by, reason } => {
                driver.migrate(saga_id, *to_version, by, reason, request_id, false).await
            }
        }
    }
}

fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Repair every saga a filter matches, or preview it (operator).
#[utoipa::path(post, path = "/v1/bulk", tag = "repairs",
    request_body = BulkBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Dry run: what would change", body = BulkPreview),
        (status = 202, description = "Job started (or the job with this request id)", body = BulkJob),
        (status = 422, body = ErrorBody),
    ))]
pub async fn bulk(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<BulkBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let action = body.action.clone();
    let op_action = if action == "migrate" {
        None
    } else {
        Some(operator_action(&action, body.outcome.as_deref())?)
    };
    let to_version = match &op_action {
        None => Some(super::sagas::to_version(body.to_version)?),
        Some(_) if body.to_version.is_some() => {
            return Err(ApiError::invalid("`to_version` is for migrate only"));
        }
        Some(_) => None,
    };
    let filter = body.filter.to_filter()?;
    let max = body.max_sagas.unwrap_or(BULK_SAGAS_DEFAULT);
    if max == 0 || max > BULK_SAGAS_MAX {
        return Err(ApiError::invalid(format!("`max_sagas` must be 1-{BULK_SAGAS_MAX}")));
    }
    let rate = body.rate_per_second.unwrap_or(RATE_PER_SECOND_DEFAULT);
    if rate == 0 || rate > RATE_PER_SECOND_MAX {
        return Err(ApiError::invalid(format!(
            "`rate_per_second` must be 1-{RATE_PER_SECOND_MAX}"
        )));
    }
    let job_id = match body.request_id {
        Some(id) if valid_job_id(&id) => id,
        Some(_) => {
            return Err(ApiError::invalid("`request_id` must be 1-64 letters, digits, `-` or `_`"));
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    if !body.dry_run
        && let Some(job) = state.bulk.get(&job_id)
    {
        return Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response());
    }
    let now = state.driver.store().clock().now_db();
    let owned = state.live_partitions().await?;
    let store = state.driver.store();
    let matched = store.count_matching(&filter, now, &owned).await?;
    let ids = store.ids_matching(&filter, max, now, &owned).await?;
    let op = match (op_action, to_version) {
        (Some(action), _) => {
            BulkOp::Repair(OperatorInput { action, by: caller.name.clone(), reason: body.reason })
        }
        (None, to) => BulkOp::Migrate {
            to_version: to.unwrap_or_default(),
            by: caller.name.clone(),
            reason: body.reason,
        },
    };
    if body.dry_run {
        let mut preview = BulkPreview {
            action: action.clone(),
            matched,
            would_change: Vec::new(),
            would_fail: Vec::new(),
            truncated: matched > ids.len() as u64,
        };
        for id in &ids {
            match op.preview(&state.driver, id).await {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    if preview.would_change.len() < PREVIEW_LISTED_MAX {
                        preview.would_change.push(WouldChange { saga_id: id.clone(), events });
                    } else {
                        preview.truncated = true;
                    }
                }
                Err(e) => {
                    if preview.would_fail.len() < PREVIEW_LISTED_MAX {
                        preview.would_fail.push(WouldFail {
                            saga_id: id.clone(),
                            error: ApiError::from(e).to_string(),
                        });
                    } else {
                        preview.truncated = true;
                    }
                }
            }
        }
        return Ok((StatusCode::OK, axum::Json(preview)).into_response());
    }
    let job = BulkJob {
        job_id: job_id.clone(),
        action,
        requested_by: caller.name,
        state: "running".to_owned(),
        total: ids.len() as u64,
        done: 0,
        succeeded: 0,
        replayed: 0,
        failed_count: 0,
        failed: Vec::new(),
        created_at_ms: now,
        finished_at_ms: None,
    };
    let handle = match state.bulk.insert(job) {
        Ok(h) => h,
        Err(existing) => return Ok((StatusCode::ACCEPTED, axum::Json(existing)).into_response()),
    };
    let first = lock(&handle).clone();
    let driver = state.driver.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for id in ids {
            tick.tick().await;
            let result = op.apply(&driver, &id, &format!("{job_id}:{id}")).await;
            let mut job = lock(&handle);
            job.done += 1;
            match result {
                Ok(r) if r.replayed => job.replayed += 1,
                Ok(_) => job.succeeded += 1,
                Err(e) => {
                    job.failed_count += 1;
                    if job.failed.len() < FAILURES_LISTED_MAX {
                        let error = ApiError::from(e).to_string();
                        job.failed.push(WouldFail { saga_id: id, error });
                    }
                }
            }
        }
        let mut job = lock(&handle);
        job.state = "done".to_owned();
        job.finished_at_ms = Some(state.driver.store().clock().now_db());
    });
    Ok((StatusCode::ACCEPTED, axum::Json(first)).into_response())
}

/// A bulk repair's progress and report (viewer).
#[utoipa::path(get, path = "/v1/bulk/{job_id}", tag = "repairs",
    params(("job_id" = String, Path, description = "Job id")),
    security(("bearer" = [])),
    responses((status = 200, body = BulkJob), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
) -> Result<axum::Json<BulkJob>, ApiError> {
    state
        .bulk
        .get(&job_id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("bulk job {job_id}")))
}

/// Bulk repairs this instance remembers, newest first (viewer).
#[utoipa::path(get, path = "/v1/bulk", tag = "repairs",
    security(("bearer" = [])),
    responses((status = 200, body = [BulkJob])))]
pub async fn jobs(State(state): State<ApiState>) -> axum::Json<Vec<BulkJob>> {
    axum::Json(state.bulk.all())
}
