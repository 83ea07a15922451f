//! `/v1/definitions`: list, show, validate and register saga definitions.
//!
//! Definitions are sent as YAML text, exactly as `skald definitions validate`
//! reads them from a file, and checked by the same code.

use super::error::{ApiError, ErrorBody};
use super::state::{ApiState, BODY_BYTES_MAX, Path, Query};
use crate::engine::registry::RegistryError;
use crate::store::ListFilter;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use sagas::Definition;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A request body read as UTF-8 text, with the API's errors.
#[derive(Debug)]
pub struct Text(pub String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match String::from_request(req, state).await {
            Ok(s) => Ok(Self(s)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge { limit_bytes: BODY_BYTES_MAX })
            }
            Err(r) => Err(ApiError::invalid(r.body_text())),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefinitionSummary {
    pub name: String,
    pub version: u32,
    pub hash: String,
    pub description: String,
    pub steps: usize,
    /// New sagas of this type start with this version.
    pub newest: bool,
    /// Whether the running sagas of this type could move to this version
    /// (in the answers of `check` and of registering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
}

/// Most running sagas one compatibility check examines.
pub const CHECK_SAGAS_MAX: u64 = 2_000;
/// Most incompatible sagas one check lists.
const EXAMPLES_MAX: usize = 20;

/// Which running sagas of a type could move to a version, and why the
/// others could not.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Compatibility {
    /// Sagas of this type still running, compensating or parked.
    pub running: u64,
    /// Of those, the ones examined (at most 2,000, newest first).
    pub examined: u64,
    /// Already on this version.
    pub already: u64,
    /// Could move to it (`skald sagas migrate`).
    pub compatible: u64,
    /// Could not, counted by reason: `step_removed`, `step_changed`,
    /// `input_invalid`, `history_differs`.
    pub incompatible: BTreeMap<String, u64>,
    /// Some that could not, and why.
    pub examples: Vec<IncompatibleSaga>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IncompatibleSaga {
    pub saga_id: String,
    pub code: String,
    pub detail: String,
}

/// Whether the running sagas of `d`'s type could move to `d`.
async fn compatibility(state: &ApiState, d: &Arc<Definition>) -> Result<Compatibility, ApiError> {
    let filter = ListFilter {
        saga_type: Some(d.name.clone()),
        status: ["running", "compensating", "parked"].map(str::to_owned).to_vec(),
        ..ListFilter::default()
    };
    let store = state.driver.store();
    let now = store.clock().now_db();
    let owned = state.live_partitions().await?;
    let mut c = Compatibility {
        running: store.count_matching(&filter, now, &owned).await?,
        ..Compatibility::default()
    };
    for id in store.ids_matching(&filter, CHECK_SAGAS_MAX, now, &owned).await? {
        let verdict = match state.driver.can_migrate(&id, d).await {
            Ok(v) => v,
            // Gone since it was listed.
            Err(crate::engine::DriveError::UnknownSaga { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        match &verdict {
            // Ended since it was listed: not one of the running.
            Err(e) if e.code == "ended" => continue,
            _ => c.examined += 1,
        }
        match verdict {
            Ok(()) => c.compatible += 1,
            Err(e) if e.code == "same_version" => c.already += 1,
            Err(e) => {
                *c.incompatible.entry(e.code.to_owned()).or_default() += 1;
                if c.examples.len() < EXAMPLES_MAX {
                    c.examples.push(IncompatibleSaga {
                        saga_id: id,
                        code: e.code.to_owned(),
                        detail: e.detail,
                    });
                }
            }
        }
    }
    Ok(c)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DefinitionView {
    #[serde(flatten)]
    pub summary: DefinitionSummary,
    /// The definition in its canonical JSON form (what the hash covers).
    pub definition: Value,
}

fn summary(d: &Definition, newest: bool) -> DefinitionSummary {
    DefinitionSummary {
        name: d.name.clone(),
        version: d.version,
        hash: d.hash.clone(),
        description: d.description.clone(),
        steps: d.steps.len(),
        newest,
        compatibility: None,
    }
}

fn is_newest(state: &ApiState, d: &Definition) -> bool {
    state.driver.registry().newest(&d.name).is_some_and(|n| n.hash == d.hash)
}

/// Every definition version known (viewer).
#[utoipa::path(get, path = "/v1/definitions", tag = "definitions",
    security(("bearer" = [])),
    responses((status = 200, body = [DefinitionSummary])))]
pub async fn list(State(state): State<ApiState>) -> axum::Json<Vec<DefinitionSummary>> {
    let all = state.driver.registry().all();
    axum::Json(all.iter().map(|d| summary(d, is_newest(&state, d))).collect())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// A version; the newest when absent.
    pub version: Option<u32>,
}

/// One definition, newest version unless `version` is given (viewer).
#[utoipa::path(get, path = "/v1/definitions/{name}", tag = "definitions",
    params(("name" = String, Path, description = "Saga type"), ShowQuery),
    security(("bearer" = [])),
    responses((status = 200, body = DefinitionView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<axum::Json<DefinitionView>, ApiError> {
    let registry = state.driver.registry();
    let found = match q.version {
        None => registry.newest(&name),
        Some(v) => registry.all().into_iter().find(|d| d.name == name && d.version == v),
    };
    let d = found.ok_or_else(|| match q.version {
        None => ApiError::not_found(format!("definition `{name}`")),
        Some(v) => ApiError::not_found(format!("definition `{name}` version {v}")),
    })?;
    let definition = serde_json::from_str(&d.canonical_json).unwrap_or(Value::Null);
    Ok(axum::Json(DefinitionView { summary: summary(&d, is_newest(&state, &d)), definition }))
}

/// Validate on a blocking thread: a large definition takes CPU that the
/// async workers (health checks, the engine) must not wait for.
async fn parse(text: String) -> Result<Definition, ApiError> {
    let loaded = tokio::task::spawn_blocking(move || {
        sagas::definition::load("request body", &text)
    })
    .await
    .map_err(|e| ApiError::Unavailable { cause: format!("validation did not finish: {e}") })?;
    loaded.map_err(|errors| ApiError::Invalid {
        message: format!("the definition has {} problem(s)", errors.0.len()),
        details: errors.0.iter().map(ToString::to_string).collect(),
    })
}

/// Check a definition (YAML body) without registering it (viewer).
#[utoipa::path(post, path = "/v1/definitions/validate", tag = "definitions",
    request_body(content = String, content_type = "application/yaml"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Valid", body = DefinitionSummary),
        (status = 422, description = "Each problem with its step, field and fix", body = ErrorBody),
    ))]
pub async fn validate(
    State(state): State<ApiState>,
    Text(text): Text,
) -> Result<axum::Json<DefinitionSummary>, ApiError> {
    let d = parse(text).await?;
    let newest = is_newest(&state, &d);
    Ok(axum::Json(summary(&d, newest)))
}

/// Check a definition (YAML body) against the running sagas of its type:
/// which could move to it and why the others could not (operator).
#[utoipa::path(post, path = "/v1/definitions/check", tag = "definitions",
    request_body(content = String, content_type = "application/yaml"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Valid; `compatibility` says which running sagas could move to it", body = DefinitionSummary),
        (status = 422, description = "Each problem with its step, field and fix", body = ErrorBody),
    ))]
pub async fn check(
    State(state): State<ApiState>,
    Text(text): Text,
) -> Result<axum::Json<DefinitionSummary>, ApiError> {
    let d = Arc::new(parse(text).await?);
    let mut answer = summary(&d, is_newest(&state, &d));
    answer.compatibility = Some(compatibility(&state, &d).await?);
    Ok(axum::Json(answer))
}

/// Register a new version of a definition (admin). New starts of its type use it.
#[utoipa::path(post, path = "/v1/definitions", tag = "definitions",
    request_body(content = String, content_type = "application/yaml"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = DefinitionSummary),
        (status = 200, description = "This exact definition was already registered", body = DefinitionSummary),
        (status = 409, description = "Not newer than the newest version", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<ApiState>,
    Text(text): Text,
) -> Result<(StatusCode, axum::Json<DefinitionSummary>), ApiError> {
    let d = parse(text).await?;
    let registry = state.driver.registry();
    let known = registry.by_hash(&d.hash).is_some();
    let registered = registry.register(state.driver.store(), d).await.map_err(|e| match e {
        RegistryError::NotNewer { .. } | RegistryError::Changed { .. } => {
            ApiError::Conflict { code: "version_conflict", message: e.to_string() }
        }
        RegistryError::Store(s) => s.into(),
        other => ApiError::Unavailable { cause: other.to_string() },
    })?;
    let status = if known { StatusCode::OK } else { StatusCode::CREATED };
    let mut answer = summary(&registered, is_newest(&state, &registered));
    // The version is registered whatever happens here: the check only informs.
    answer.compatibility = match compatibility(&state, &registered).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "registered, but the compatibility check failed");
            None
        }
    };
    Ok((status, axum::Json(answer)))
}
