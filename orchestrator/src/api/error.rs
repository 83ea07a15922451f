//! One error shape for every API answer that is not a success:
//! `{"error": {"code": "...", "message": "...", "details": [...]}}`.
//!
//! The caller's mistake (4xx) is said plainly; an infrastructure fault (5xx)
//! is logged with its cause and answered without internals.

use super::auth::Role;
use crate::engine::driver::{DriveError, StartError};
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sagas::machine::TransitionError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("this needs the {} role; your token has {}", needed.as_str(), have.as_str())]
    Forbidden { needed: Role, have: Role },
    /// The console's cookie on a request another site made.
    #[error(
        "the console's cookie is accepted only from the console's own pages; send a bearer token"
    )]
    CrossSite,
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request is well-formed but conflicts with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The request is malformed or breaks a rule; `details` lists each problem.
    #[error("{message}")]
    Invalid { message: String, details: Vec<String> },
    #[error("the request body is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    #[error("the request target (path and query) is longer than {limit_bytes} bytes")]
    UriTooLong { limit_bytes: usize },
    #[error(
        "the request has more than {limit_count} headers or more than {limit_bytes} bytes of them"
    )]
    HeadersTooLarge { limit_bytes: usize, limit_count: usize },
    #[error("this route does not take this method")]
    MethodNotAllowed,
    /// The saga ended long ago and retention moved it to the archive.
    #[error("{message}")]
    Gone { message: String },
    /// Too much of this work is under way; try again shortly.
    #[error("{message}")]
    Busy { message: String },
    /// This server is not set up to do it (the message says what is missing).
    #[error("{message}")]
    NotConfigured { message: String },
    /// Something this server depends on failed; the cause is logged, not sent.
    #[error("the service is unavailable; try again shortly")]
    Unavailable { cause: String },
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `not_now`, `invalid`, `too_large`, `unavailable`, ...
    pub code: String,
    /// For people: what is wrong and what to do.
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid { message: message.into(), details: Vec::new() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            Self::CrossSite => (StatusCode::FORBIDDEN, "cross_site"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge { .. } => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large")
            }
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Gone { .. } => (StatusCode::GONE, "gone"),
            Self::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Self::NotConfigured { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Unavailable { cause } = &self {
            tracing::error!(%cause, "API request failed");
        }
        let details = match &self {
            Self::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail { code: code.to_owned(), message: self.to_string(), details },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable { cause: e.to_string() }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::ReasonRequired { .. }
            | TransitionError::OperatorMissing
            | TransitionError::TooLong { .. }
            | TransitionError::InvalidSagaId { .. } => Self::invalid(e.to_string()),
            TransitionError::InvalidInput { ref errors, .. } => {
                Self::Invalid { message: e.to_string(), details: errors.clone() }
            }
            TransitionError::Incompatible(_) => {
                Self::Conflict { code: "incompatible", message: e.to_string() }
            }
            TransitionError::InvalidSignal { .. } => Self::invalid(e.to_string()),
            TransitionError::Ended { .. } => {
                Self::Conflict { code: "ended", message: e.to_string() }
            }
            TransitionError::TooManySignals => {
                Self::Conflict { code: "too_many_events", message: e.to_string() }
            }
            other => Self::Conflict { code: "not_now", message: other.to_string() },
        }
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::UnknownSaga { saga_id } => Self::not_found(format!("saga {saga_id}")),
            DriveError::UnknownVersion { saga_type, version } => {
                Self::not_found(format!("version {version} of `{saga_type}`"))
            }
            DriveError::Transition(t) => t.into(),
            DriveError::BadRequestId | DriveError::WrongSender { .. } => {
                Self::invalid(e.to_string())
            }
            DriveError::RequestReused { .. } => {
                Self::Conflict { code: "request_reused", message: e.to_string() }
            }
            DriveError::Contended { .. } => {
                Self::Conflict { code: "contended", message: format!("{e}; try again") }
            }
            DriveError::UnknownDefinition { .. }
            | DriveError::Store(_)
            | DriveError::NotOwner { .. } => Self::Unavailable { cause: e.to_string() },
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownType { .. } => {
                Self::Invalid { message: e.to_string(), details: Vec::new() }
            }
            StartError::BadKey => Self::invalid(e.to_string()),
            StartError::InvalidInput { errors, saga_type } => Self::Invalid {
                message: format!("the input does not match the schema of `{saga_type}`"),
                details: errors,
            },
            StartError::Conflict { .. } => {
                Self::Conflict { code: "idempotency_conflict", message: e.to_string() }
            }
            StartError::Drive(d) => d.into(),
        }
    }
}
