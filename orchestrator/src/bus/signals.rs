//! Events for waiting sagas over NATS: requests on `<prefix>.signal.<event>`
//! with a [`SignalRequest`], answered with a [`SignalResponse`]. Every
//! instance subscribes in one queue group; any of them records the event (as
//! an operator's repair may come through any instance).

use crate::engine::driver::{ByKey, DriveError, Driver};
use sagas::machine::{Signal, TransitionError};
use sagas::protocol::{BODY_BYTES_MAX, Namespace, SignalRequest, SignalResponse};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most events handled at once; further requests wait in NATS.
pub const SIGNALS_IN_FLIGHT_MAX: usize = 64;
/// The queue group all orchestrators share for events.
pub const QUEUE_GROUP: &str = "skald-signal";

/// Subscribe to events (in the shared queue group).
pub async fn subscribe(
    client: &async_nats::Client,
    ns: &Namespace,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client.queue_subscribe(ns.signal_subject("*"), QUEUE_GROUP.into()).await
}

/// Answer events until `shutdown`.
pub async fn run(
    driver: Driver,
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let answer = move |msg: async_nats::Message, permit| {
        let driver = driver.clone();
        async move {
            let _permit = permit;
            let event = msg.subject.rsplit('.').next().unwrap_or_default().to_owned();
            let response = answer(&driver, event, &msg.payload).await;
            serde_json::to_vec(&response).unwrap_or_default()
        }
    };
    super::answer_requests(
        client,
        requests,
        SIGNALS_IN_FLIGHT_MAX,
        shutdown,
        tasks,
        "event",
        answer,
    )
    .await;
}

fn refused(code: &str, message: impl Into<String>) -> SignalResponse {
    SignalResponse::Refused { code: code.to_owned(), message: message.into() }
}

async fn answer(driver: &Driver, event: String, payload: &[u8]) -> SignalResponse {
    if payload.len() > BODY_BYTES_MAX {
        return refused("bad_request", format!("the request is over {BODY_BYTES_MAX} bytes"));
    }
    let request: SignalRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                "bad_request",
                format!(
                    "the request is not an event: {e}; send {{\"saga_id\":…,\"event_id\":…,\"payload\":…}}"
                ),
            );
        }
    };
    let saga_id = if request.saga_id.is_empty() {
        let Some(key) = request.key.as_deref() else {
            return refused(
                "bad_request",
                "send `saga_id`, or `key` to find the saga waiting for it",
            );
        };
        match driver.saga_waiting_for(&event, key).await {
            Ok(id) => id,
            Err(ByKey::None) => {
                return refused(
                    "unknown_saga",
                    format!("no running saga waits for `{event}` with key `{key}`"),
                );
            }
            Err(ByKey::Several) => {
                return refused(
                    "ambiguous",
                    format!("several sagas wait for `{event}` with key `{key}`; send `saga_id`"),
                );
            }
            Err(ByKey::Store(e)) => {
                tracing::error!(error = %e, "the saga waiting for an event could not be found");
                return refused(
                    "unavailable",
                    "the orchestrator could not look the saga up; send it again",
                );
            }
        }
    } else {
        request.saga_id
    };
    let signal = Signal {
        name: event,
        event_id: request.event_id,
        key: request.key,
        payload: request.payload,
    };
    match driver.signal(&saga_id, signal).await {
        Ok(done) if done.duplicate => SignalResponse::Duplicate { saga_id },
        Ok(done) => SignalResponse::Accepted { saga_id, taken: done.taken },
        Err(DriveError::UnknownSaga { .. }) => {
            refused("unknown_saga", format!("no saga {saga_id} (or it was archived)"))
        }
        Err(DriveError::Transition(e)) => {
            let code = match e {
                TransitionError::Ended { .. } => "ended",
                TransitionError::TooManySignals => "too_many_events",
                _ => "invalid",
            };
            refused(code, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "an event could not be recorded");
            refused("unavailable", "the orchestrator could not record the event; send it again")
        }
    }
}
