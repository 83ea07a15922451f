//! The operator's HTTP API (axum) under `/v1`, its OpenAPI document at
//! `/openapi.json` with Swagger UI at `/docs` (served from the binary), health
//! and metrics.
//!
//! Every route is mounted under the role it needs: the groups in [`app`] are
//! the access policy. Errors have one JSON shape ([`error::ApiError`]); bodies
//! are limited to [`state::BODY_BYTES_MAX`] and pages to
//! [`crate::store::PAGE_SIZE_MAX`]. `skald serve` binds 127.0.0.1 unless told
//! otherwise.

pub mod audit;
pub mod auth;
pub mod bulk;
pub mod console;
pub mod definitions;
pub mod error;
pub mod events;
pub mod filter;
pub mod health;
pub mod limits;
pub mod model;
pub mod sagas;
pub mod state;
pub mod views;

pub use auth::{Role, Tokens};
pub use state::ApiState;

use crate::store::StuckClass;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::routing::{get, post};
use error::ApiError;
use serde::Serialize;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Skald operations API",
        description = "Start, inspect and repair sagas; manage saga definitions. \
            Send `Authorization: Bearer <token>`; roles: viewer < signaller < operator < admin."
    ),
    paths(
        sagas::start, sagas::list, sagas::show, sagas::export, sagas::repair,
        audit::saga, audit::window, events::send, events::send_by_key,
        bulk::bulk, bulk::job, bulk::jobs,
        definitions::list, definitions::show, definitions::validate, definitions::check, definitions::register,
        overview, health::healthz, health::readyz, health::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "sagas", description = "Start, list and inspect sagas"),
        (name = "repairs", description = "Operator repairs, one saga or many"),
        (name = "definitions", description = "Saga definitions"),
        (name = "health", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Counts for the overview: by type and status, and by stuck class.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// type → status → count.
    pub by_type: BTreeMap<String, BTreeMap<String, i64>>,
    /// status → count.
    pub by_status: BTreeMap<String, i64>,
    /// stuck class → count.
    pub stuck: BTreeMap<String, u64>,
    /// Sagas in any stuck class.
    pub stuck_total: u64,
    pub partitions_owned: usize,
}

/// Counts by status, type and stuck class (viewer).
#[utoipa::path(get, path = "/v1/overview", tag = "sagas",
    security(("bearer" = [])),
    responses((status = 200, body = Overview)))]
pub async fn overview(State(state): State<ApiState>) -> Result<axum::Json<Overview>, ApiError> {
    Ok(axum::Json(overview_of(&state).await?))
}

/// The overview's numbers (shared with the console).
pub async fn overview_of(state: &ApiState) -> Result<Overview, ApiError> {
    let store = state.driver.store();
    let mut by_type: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for (t, s, n) in store.count_by_type_status().await? {
        *by_status.entry(s.clone()).or_default() += n;
        by_type.entry(t).or_default().insert(s, n);
    }
    let now = state.driver.store().clock().now_db();
    let owned = state.live_partitions().await?;
    let mut stuck = BTreeMap::new();
    for class in StuckClass::ALL {
        let f = crate::store::ListFilter { stuck: Some(class), ..Default::default() };
        stuck.insert(class.as_str().to_owned(), store.count_matching(&f, now, &owned).await?);
    }
    let any = crate::store::ListFilter { stuck_any: true, ..Default::default() };
    let stuck_total = store.count_matching(&any, now, &owned).await?;
    let partitions_owned = state.ownership.owned().len();
    Ok(Overview { by_type, by_status, stuck, stuck_total, partitions_owned })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// A known route with another method: 405 in the API's one error shape.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The whole HTTP surface: API, docs, health, metrics.
pub fn app(state: ApiState) -> Router {
    let guard = |role: Role| middleware::from_fn_with_state((state.clone(), role), auth::require);
    let viewer = Router::new()
        .route("/v1/sagas", get(sagas::list))
        .route("/v1/sagas/{saga_id}", get(sagas::show))
        .route("/v1/export", get(sagas::export))
        // Asks every participant of each saga over the bus (bounded pages).
        .route("/v1/sagas/{saga_id}/audit", get(audit::saga))
        .route("/v1/audit", get(audit::window))
        .route("/v1/overview", get(overview))
        .route("/v1/bulk", get(bulk::jobs))
        .route("/v1/bulk/{job_id}", get(bulk::job))
        .route("/v1/definitions", get(definitions::list))
        .route("/v1/definitions/{name}", get(definitions::show))
        .route("/v1/definitions/validate", post(definitions::validate))
        .route("/metrics", get(health::metrics))
        .route_layer(guard(Role::Viewer));
    let signaller = Router::new()
        .route("/v1/sagas/{saga_id}/events/{name}", post(events::send))
        .route("/v1/events/{name}", post(events::send_by_key))
        .route_layer(guard(Role::Signaller));
    let operator = Router::new()
        .route("/v1/sagas", post(sagas::start))
        .route("/v1/sagas/{saga_id}/{action}", post(sagas::repair))
        .route("/v1/bulk", post(bulk::bulk))
        // Reads up to 2,000 sagas' histories: not for every viewer.
        .route("/v1/definitions/check", post(definitions::check))
        .route_layer(guard(Role::Operator));
    let admin = Router::new()
        .route("/v1/definitions", post(definitions::register))
        .route_layer(guard(Role::Admin));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }));
    let docs: Router<ApiState> = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/docs/openapi.json", ApiDoc::openapi())
        .into();
    Router::new()
        .merge(viewer)
        .merge(signaller)
        .merge(operator)
        .merge(admin)
        .merge(open)
        .merge(docs)
        .merge(console::routes(&state))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state::BODY_BYTES_MAX))
        .layer(middleware::from_fn(limits::refuse_declared_large_bodies))
        .layer(middleware::from_fn(limits::refuse_large_heads))
        .layer(middleware::map_response(limits::security_headers))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen for HTTP on {addr}: {source}. Is another process using it? Choose another with --http-addr."
    )]
    Bind { addr: String, source: std::io::Error },
}

/// Bind the HTTP listener (done early, so a taken port fails start-up).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr: addr.to_owned(), source })
}

/// Serve `app` on `listener` until `shutdown`, with the default [`limits::Limits`].
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    serve_within(listener, app, shutdown, limits::Limits::default()).await;
}

/// Serve `app` on `listener` until `shutdown`: at most
/// `limits.connections_max` connections at once, each closed after
/// `limits.idle_timeout` without a byte moving and when a request's head
/// has not arrived within `limits.header_read_timeout`; after `shutdown`,
/// requests under way get `limits.shutdown_grace` to finish (a client that
/// never finishes its request cannot hold the process), then every
/// connection is closed.
pub async fn serve_within(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: limits::Limits,
) {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut listener = limits::Bounded::new(listener, limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits::HEAD_BUFFER_BYTES)
        .max_headers(limits::HEADERS_BUFFERED_MAX);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            (io, addr) = axum::serve::Listener::accept(&mut listener) => {
                let app = app.clone();
                // The peer's address reaches handlers (the console's sign-in throttle).
                let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                    request.extensions_mut().insert(ConnectInfo(limits::Peer(addr)));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                });
                let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
                connections.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                grace_ms = limits.shutdown_grace.as_millis(),
                open = connections.len(),
                "HTTP connections still open after the shutdown grace; closing them"
            );
        }
    }
    connections.shutdown().await;
}
