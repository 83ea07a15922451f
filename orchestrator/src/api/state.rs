//! What every handler shares, and the extractors that turn a malformed
//! request into the API's one error shape.

use super::auth::{SharedTokens, Tokens};
use super::bulk::BulkJobs;
use super::error::ApiError;
use crate::cluster::partitions::Ownership;
use crate::engine::driver::Driver;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest request body accepted, in bytes (a saga input is at most 512 KiB).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ApiState {
    pub driver: Driver,
    pub tokens: SharedTokens,
    pub ownership: Ownership,
    /// This instance's name (the owner shown for the partitions it holds).
    pub instance: String,
    /// NATS, for `/readyz`; `None` when the API runs without a bus (tests).
    pub nats: Option<async_nats::Client>,
    pub bulk: Arc<BulkJobs>,
    /// Failed console sign-ins per client.
    pub sign_ins: Arc<crate::api::console::throttle::SignInThrottle>,
    /// Cancelled when the server stops: requests waiting for a saga's end
    /// answer with where it stands.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Window audits under way (each reads up to a page of histories and
    /// asks every participant): at most [`AUDITS_AT_ONCE`].
    pub audits: Arc<tokio::sync::Semaphore>,
}

/// Window audits (`GET /v1/audit`) one instance runs at once; more are answered 429.
pub const AUDITS_AT_ONCE: usize = 2;

impl ApiState {
    #[must_use]
    pub fn new(driver: Driver, tokens: Tokens, ownership: Ownership, instance: String) -> Self {
        Self {
            driver,
            tokens: SharedTokens::new(tokens),
            ownership,
            instance,
            nats: None,
            bulk: Arc::new(BulkJobs::default()),
            sign_ins: Arc::default(),
            stopping: tokio_util::sync::CancellationToken::new(),
            audits: Arc::new(tokio::sync::Semaphore::new(AUDITS_AT_ONCE)),
        }
    }

    /// Partitions some live instance holds now (for the stuck class
    /// `no_owner`): in a cluster from the leases, else this instance's.
    pub async fn live_partitions(&self) -> Result<Vec<i32>, ApiError> {
        if !self.ownership.is_cluster() {
            return Ok(self.ownership.owned());
        }
        let store = self.driver.store();
        Ok(store.live_partitions(store.clock().now_db()).await?)
    }

    /// The instance holding `partition` now, if any.
    pub async fn owner_of(&self, partition: i32) -> Result<Option<String>, ApiError> {
        if !self.ownership.is_cluster() {
            return Ok(self.ownership.owned().contains(&partition).then(|| self.instance.clone()));
        }
        let now = self.driver.store().clock().now_db();
        let leases = self.driver.store().leases().await?;
        Ok(leases
            .into_iter()
            .find(|l| l.partition == partition && !l.owner.is_empty() && l.expires_at_ms > now)
            .map(|l| l.owner))
    }

    #[must_use]
    pub fn with_nats(mut self, client: async_nats::Client) -> Self {
        self.nats = Some(client);
        self
    }
}

/// `axum::Json`, answering malformed bodies with [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::TooLarge { limit_bytes: BODY_BYTES_MAX };
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("send the body as JSON with `Content-Type: application/json`")
        }
        other => {
            ApiError::invalid(format!("the body is not the JSON expected: {}", other.body_text()))
        }
    }
}

/// `axum::extract::Query`, answering bad query strings with [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|r: QueryRejection| ApiError::invalid(r.body_text()))
    }
}

/// `axum::extract::Path`, answering bad path parameters with [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|r: PathRejection| ApiError::invalid(r.body_text()))
    }
}
