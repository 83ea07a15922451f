//! The provider's webhooks, turned into events for the sagas that wait for
//! them: `POST /webhooks/psp` with a [`WebhookEvent`] (a 3-D Secure charge
//! succeeded or failed) becomes the event `psp_result` for the charge's saga
//! (`<prefix>.signal.psp_result`, keyed by the charge id, the webhook's id as
//! the event id), `{"status", "charge_id", "amount", "currency"}` as its body.
//!
//! The saga is the one whose charge this service recorded under the
//! provider's charge id, or else the charge's reference (the shipped
//! definitions pass the saga id). The provider sends a webhook again until
//! it is answered 2xx, and may send it twice: the saga takes an event id once.
//! So the answer is 200 once the saga took the event, kept it, had it
//! already, or can never take it (it ended, or nothing of it waits for this);
//! 503 when the orchestrator could not be asked, so the provider tries again.

use crate::api::WebhookEvent;
use crate::handlers::Payments;
use crate::store;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use sagas::protocol::{Namespace, SignalRequest, SignalResponse};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Where the provider posts its webhooks.
pub const WEBHOOK_PATH: &str = "/webhooks/psp";
/// The event a waiting step of a saga takes: `wait_for: {event: psp_result}`.
pub const EVENT: &str = "psp_result";
/// Largest webhook body accepted.
const BODY_BYTES_MAX: usize = 64 * 1024;
/// How long the orchestrator has to take the event.
const SIGNAL_WITHIN: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Hooks {
    payments: Arc<Payments>,
    nats: async_nats::Client,
    ns: Namespace,
}

/// The webhook receiver's routes.
pub fn app(payments: Arc<Payments>, nats: async_nats::Client, ns: Namespace) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(Hooks { payments, nats, ns })
}

fn answer(status: StatusCode, what: &str) -> Response {
    (status, Json(json!({ "status": what }))).into_response()
}

async fn receive(
    State(hooks): State<Hooks>,
    body: Result<Json<WebhookEvent>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(event)) = body else {
        return answer(StatusCode::BAD_REQUEST, "not a webhook event");
    };
    let charge = &event.data;
    let saga_id = match store::by_provider_id(&hooks.payments.db, &charge.id).await {
        Ok(Some(row)) => row.saga_id,
        Ok(None) => charge.reference.clone(),
        Err(e) => {
            warn!(error = %e, "cannot read the payments to route a webhook");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
        }
    };
    let request = SignalRequest {
        saga_id: saga_id.clone(),
        event_id: event.id.clone(),
        key: Some(charge.id.clone()),
        payload: json!({
            "status": charge.status,
            "charge_id": charge.id,
            "amount": charge.amount,
            "currency": charge.currency,
        }),
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let asked = tokio::time::timeout(
        SIGNAL_WITHIN,
        hooks.nats.request(hooks.ns.signal_subject(EVENT), body.into()),
    )
    .await;
    let msg = match asked {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => {
            warn!(error = %e, saga_id, "cannot hand a webhook to the orchestrator");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "orchestrator unavailable");
        }
        Err(_) => return answer(StatusCode::SERVICE_UNAVAILABLE, "orchestrator did not answer"),
    };
    match serde_json::from_slice::<SignalResponse>(&msg.payload) {
        Ok(SignalResponse::Accepted { taken, .. }) => {
            info!(saga_id, charge = %charge.id, taken, "webhook handed to the saga");
            answer(StatusCode::OK, "accepted")
        }
        Ok(SignalResponse::Duplicate { .. }) => answer(StatusCode::OK, "duplicate"),
        Ok(SignalResponse::Refused { code, message }) if code == "unavailable" => {
            warn!(saga_id, message, "the orchestrator could not record a webhook");
            answer(StatusCode::SERVICE_UNAVAILABLE, "orchestrator unavailable")
        }
        Ok(SignalResponse::Refused { code, message }) => {
            // Sending it again would not change it.
            info!(saga_id, code, message, "a webhook no saga takes");
            answer(StatusCode::OK, "refused")
        }
        Err(e) => {
            warn!(error = %e, "the orchestrator's answer cannot be read");
            answer(StatusCode::SERVICE_UNAVAILABLE, "unreadable answer")
        }
    }
}
