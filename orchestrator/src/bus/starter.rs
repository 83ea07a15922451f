//! Starting sagas over NATS: requests on `<prefix>.start.<saga type>`.
//!
//! Every instance subscribes in one queue group, so any of them accepts a
//! start. The answer is a [`StartResponse`]; the same idempotency key and input
//! always name the same saga.

use crate::engine::driver::{Driver, StartError, Started};
use futures::StreamExt;
use sagas::protocol::{BODY_BYTES_MAX, Namespace, StartRequest, StartResponse};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most start requests handled at once; further requests wait in NATS.
pub const STARTS_IN_FLIGHT_MAX: usize = 128;

/// The queue group all orchestrators share for start requests.
pub const QUEUE_GROUP: &str = "skald-start";

/// Subscribe to start requests (in the shared queue group).
pub async fn subscribe(
    client: &async_nats::Client,
    ns: &Namespace,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    let subject = format!("{}.start.*", ns.prefix());
    client.queue_subscribe(subject, QUEUE_GROUP.into()).await
}

/// Answer start requests until `shutdown`.
pub async fn run(
    driver: Driver,
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let in_flight = Arc::new(Semaphore::new(STARTS_IN_FLIGHT_MAX));
    loop {
        let msg = tokio::select! {
            // Cancelled: stop taking new starts; those in flight finish on the tracker.
            () = shutdown.cancelled() => break,
            msg = requests.next() => match msg { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else { continue };
        let saga_type = msg.subject.rsplit('.').next().unwrap_or_default().to_owned();
        let (driver, client) = (driver.clone(), client.clone());
        let permit = tokio::select! {
            // Cancelled: the request is dropped unanswered; the caller's request times out.
            () = shutdown.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        tasks.spawn(async move {
            let _permit = permit;
            let response = answer(&driver, &saga_type, &msg.payload).await;
            let body = serde_json::to_vec(&response).unwrap_or_default();
            if let Err(e) = client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %e, "cannot answer a start request");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), requests.unsubscribe()).await;
}

async fn answer(driver: &Driver, saga_type: &str, payload: &[u8]) -> StartResponse {
    if payload.len() > BODY_BYTES_MAX {
        return refused(
            "bad_request",
            format!("the request is over {BODY_BYTES_MAX} bytes"),
            vec![],
        );
    }
    let request: StartRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                "bad_request",
                format!(
                    "the request is not a start request: {e}; send {{\"idempotency_key\":…,\"input\":…}}"
                ),
                vec![],
            );
        }
    };
    match driver.start(saga_type, &request.idempotency_key, &request.input).await {
        Ok(Started::New { saga_id }) => StartResponse::Started { saga_id },
        Ok(Started::Existing { saga_id }) => StartResponse::Existing { saga_id },
        Err(e) => {
            let errors = match &e {
                StartError::InvalidInput { errors, .. } => errors.clone(),
                _ => vec![],
            };
            if matches!(e, StartError::Drive(_)) {
                tracing::error!(error = %e, "start failed");
                return refused(
                    "unavailable",
                    "the orchestrator could not record the start; try again".into(),
                    errors,
                );
            }
            refused(e.code(), e.to_string(), errors)
        }
    }
}

fn refused(code: &str, message: String, errors: Vec<String>) -> StartResponse {
    StartResponse::Refused { code: code.to_owned(), message, errors }
}
