//! Requests through the API router as a client would send them, without a
//! socket (`oneshot`): the status, headers and body that came back.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use tower::ServiceExt as _;

/// Send `req` through `app`: status, headers and the whole body.
pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.clone().oneshot(req).await.expect("the router answers");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the body is read");
    (parts.status, parts.headers, bytes)
}
