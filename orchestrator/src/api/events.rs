//! Events from outside for sagas that wait for them:
//! `POST /v1/sagas/{id}/events/{name}`, or by the key alone
//! `POST /v1/events/{name}` (signaller).

use super::error::{ApiError, ErrorBody};
use super::sagas::{missing, valid_saga_id};
use super::state::{ApiState, Json};
use crate::engine::DriveError;
use crate::engine::driver::ByKey;
use axum::extract::{Path, State};
use sagas::machine::Signal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event for a saga.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// Your id for this event (1-128 bytes): the same id again is a duplicate.
    pub event_id: String,
    /// The correlation key, when the waiting step asks for one.
    #[serde(default)]
    pub key: Option<String>,
    /// The event's body (at most 64 KiB): the waiting step's output.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// What became of an event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventAnswer {
    pub saga_id: String,
    /// `accepted`, or `duplicate` (this event id was taken before; nothing changed).
    pub status: String,
    /// A waiting step took it now (otherwise it is kept until a step waits for it).
    pub taken: bool,
    /// The saga's status afterwards.
    pub saga_status: String,
}

/// Send a saga an event it waits for (signaller). Kept in its history: a
/// step waiting for it takes it now, one reached later takes it then.
#[utoipa::path(post, path = "/v1/sagas/{saga_id}/events/{name}", tag = "sagas",
    params(
        ("saga_id" = String, Path, description = "Saga id"),
        ("name" = String, Path, description = "The event's name (a waiting step's `wait_for.event`)"),
    ),
    request_body = EventBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = EventAnswer),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The saga has ended (`ended`), or holds the most events it keeps (`too_many_events`)", body = ErrorBody),
        (status = 410, description = "Archived by retention", body = ErrorBody),
        (status = 422, description = "No step waits for this event, or it does not match the step's schema, or its id or key is not valid", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<ApiState>,
    Path((saga_id, name)): Path<(String, String)>,
    Json(body): Json<EventBody>,
) -> Result<axum::Json<EventAnswer>, ApiError> {
    Ok(axum::Json(signal(&state, &saga_id, name, body).await?))
}

/// Send an event to the saga whose step waits for it with its key (signaller):
/// the sender knows the key (a charge id, an order number), not the saga.
/// Only a saga already waiting is found: an event that may come before its
/// step is reached is sent to the saga by id.
#[utoipa::path(post, path = "/v1/events/{name}", tag = "sagas",
    params(("name" = String, Path, description = "The event's name (a waiting step's `wait_for.event`)")),
    request_body = EventBody,
    security(("bearer" = [])),
    responses(
        (status = 200, body = EventAnswer),
        (status = 404, description = "No running saga waits for this event with this key", body = ErrorBody),
        (status = 409, description = "Several sagas wait for it (`ambiguous`), or the saga holds the most events it keeps", body = ErrorBody),
        (status = 422, description = "No key, or the event does not fit the waiting step", body = ErrorBody),
    ))]
pub async fn send_by_key(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<EventBody>,
) -> Result<axum::Json<EventAnswer>, ApiError> {
    let Some(key) = body.key.as_deref() else {
        return Err(ApiError::invalid(
            "an event sent by key needs `key`; send one without a key to /v1/sagas/{id}/events/{name}",
        ));
    };
    let saga_id = match state.driver.saga_waiting_for(&name, key).await {
        Ok(id) => id,
        Err(ByKey::None) => {
            return Err(ApiError::not_found(format!(
                "a running saga waiting for `{name}` with key `{key}`"
            )));
        }
        Err(ByKey::Several) => {
            return Err(ApiError::Conflict {
                code: "ambiguous",
                message: format!(
                    "several sagas wait for `{name}` with key `{key}`; send it to one by its id"
                ),
            });
        }
        Err(ByKey::Store(e)) => return Err(e.into()),
    };
    Ok(axum::Json(signal(&state, &saga_id, name, body).await?))
}

/// Hand one event to its saga (shared with the NATS subject).
pub async fn signal(
    state: &ApiState,
    saga_id: &str,
    name: String,
    body: EventBody,
) -> Result<EventAnswer, ApiError> {
    if !valid_saga_id(saga_id) {
        return Err(ApiError::not_found(format!("saga {saga_id}")));
    }
    let signal = Signal { name, event_id: body.event_id, key: body.key, payload: body.payload };
    let done = match state.driver.signal(saga_id, signal).await {
        Ok(done) => done,
        Err(DriveError::UnknownSaga { .. }) => return Err(missing(state, saga_id).await),
        Err(e) => return Err(e.into()),
    };
    Ok(EventAnswer {
        saga_id: saga_id.to_owned(),
        status: if done.duplicate { "duplicate" } else { "accepted" }.to_owned(),
        taken: done.taken,
        saga_status: done.status,
    })
}
