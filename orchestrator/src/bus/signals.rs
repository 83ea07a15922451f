//! Events for waiting sagas over NATS: requests on `<prefix>.signal.<event>`
//! with a [`SignalRequest`], answered with a [`SignalResponse`]. Every
//! instance subscribes in one queue group; any of them records the event (as
//! an operator's repair may come through any instance).

use crate::engine::driver::{DriveError, Driver};
use futures::StreamExt;
use sagas::machine::{Absorbed, Signal, TransitionError};
use sagas::protocol::{BODY_BYTES_MAX, Namespace, SignalRequest, SignalResponse};
use std::sync::Arc;
use tokio::sync::Semaphore;
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
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let in_flight = Arc::new(Semaphore::new(SIGNALS_IN_FLIGHT_MAX));
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = requests.next() => match msg { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else { continue };
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let (driver, client) = (driver.clone(), client.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let event = msg.subject.rsplit('.').next().unwrap_or_default().to_owned();
            let response = answer(&driver, event, &msg.payload).await;
            let body = serde_json::to_vec(&response).unwrap_or_default();
            if let Err(e) = client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %e, "cannot answer an event");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), requests.unsubscribe()).await;
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
    let saga_id = request.saga_id;
    let input = sagas::Input::Signal(Signal {
        name: event,
        event_id: request.event_id,
        key: request.key,
        payload: request.payload,
    });
    match driver.handle(&saga_id, &input).await {
        Ok(d) if d.absorbed == Some(Absorbed::Duplicate) => SignalResponse::Duplicate { saga_id },
        Ok(d) => {
            let taken =
                d.events.iter().any(|e| matches!(e, sagas::SagaEvent::StepSucceeded { .. }));
            SignalResponse::Accepted { saga_id, taken }
        }
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
