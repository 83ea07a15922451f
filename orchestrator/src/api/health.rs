//! `/healthz` (the process answers), `/readyz` (it can do its work) and
//! `/metrics` (Prometheus text).

use super::state::ApiState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use std::time::Duration;

/// Longest a readiness check waits for the database.
const DB_PING_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up (no token).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok".to_owned() })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok` or what is wrong.
    pub database: String,
    /// `ok`, `disconnected`, or `not used`.
    pub nats: String,
    pub partitions_owned: usize,
    pub instance: String,
}

/// The database and NATS answer and this instance owns partitions (no token).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, axum::Json<Readiness>) {
    let database = match tokio::time::timeout(DB_PING_MAX, state.driver.store().db().ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(_)) => "unreachable".to_owned(),
        Err(_) => "timed out".to_owned(),
    };
    let nats = match &state.nats {
        None => "not used".to_owned(),
        Some(c) => match c.connection_state() {
            async_nats::connection::State::Connected => "ok".to_owned(),
            _ => "disconnected".to_owned(),
        },
    };
    let partitions_owned = state.ownership.owned().len();
    // An instance that holds no partition (more instances than partitions, or
    // waiting for a lease to expire) can still serve the API and take starts.
    let ready = database == "ok" && nats != "disconnected";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        axum::Json(Readiness {
            ready,
            database,
            nats,
            partitions_owned,
            instance: state.instance.clone(),
        }),
    )
}

/// Prometheus metrics in the text format (viewer).
#[utoipa::path(get, path = "/metrics", tag = "health",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.driver.metrics().render(),
    )
}
