//! Starting sagas over NATS: requests on `<prefix>.start.<saga type>`.
//!
//! Every instance subscribes in one queue group, so any of them accepts a
//! start. The answer is a [`StartResponse`]; the same idempotency key and input
//! always name the same saga. A request with `wait_ms` is answered once its
//! saga has ended (or parked, or the wait ran out), with its outcome.

use crate::engine::driver::{Driver, StartError, Started};
use sagas::protocol::{BODY_BYTES_MAX, Namespace, START_WAIT_MS_MAX, StartRequest, StartResponse};
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
    requests: async_nats::Subscriber,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let stop = shutdown.clone();
    let answer = move |msg: async_nats::Message, permit| {
        let (driver, stop) = (driver.clone(), stop.clone());
        async move {
            let saga_type = msg.subject.rsplit('.').next().unwrap_or_default().to_owned();
            let (mut response, wait) = answer(&driver, &saga_type, &msg.payload).await;
            // A wait holds no place among the starts in flight: it only
            // watches (bounded by `endings::WAITERS_MAX`).
            drop(permit);
            if let Some(wait) = wait {
                with_outcome(&driver, &mut response, wait, &stop).await;
            }
            serde_json::to_vec(&response).unwrap_or_default()
        }
    };
    super::answer_requests(
        client,
        requests,
        STARTS_IN_FLIGHT_MAX,
        shutdown,
        tasks,
        "start request",
        answer,
    )
    .await;
}

/// The answer to a start request, and how long it asked to wait for the
/// saga's end (capped at [`START_WAIT_MS_MAX`]).
async fn answer(
    driver: &Driver,
    saga_type: &str,
    payload: &[u8],
) -> (StartResponse, Option<std::time::Duration>) {
    if payload.len() > BODY_BYTES_MAX {
        let message = format!("the request is over {BODY_BYTES_MAX} bytes");
        return (refused("bad_request", message, vec![]), None);
    }
    let request: StartRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            let message = format!(
                "the request is not a start request: {e}; send {{\"idempotency_key\":…,\"input\":…}}"
            );
            return (refused("bad_request", message, vec![]), None);
        }
    };
    let wait =
        request.wait_ms.map(|ms| std::time::Duration::from_millis(ms.min(START_WAIT_MS_MAX)));
    let response = match driver.start(saga_type, &request.idempotency_key, &request.input).await {
        Ok(Started::New { saga_id }) => StartResponse::Started { saga_id, outcome: None },
        Ok(Started::Existing { saga_id }) => StartResponse::Existing { saga_id, outcome: None },
        Err(e) => {
            let errors = match &e {
                StartError::InvalidInput { errors, .. } => errors.clone(),
                _ => vec![],
            };
            if matches!(e, StartError::Drive(_)) {
                tracing::error!(error = %e, "start failed");
                let message = "the orchestrator could not record the start; try again".into();
                return (refused("unavailable", message, errors), None);
            }
            refused(e.code(), e.to_string(), errors)
        }
    };
    (response, wait)
}

/// Wait for the started saga's end (or `wait`, or shutdown) and put where it
/// stands into the answer.
async fn with_outcome(
    driver: &Driver,
    response: &mut StartResponse,
    wait: std::time::Duration,
    stop: &CancellationToken,
) {
    let (StartResponse::Started { saga_id, outcome }
    | StartResponse::Existing { saga_id, outcome }) = response
    else {
        return;
    };
    match driver.outcome(saga_id, wait, stop).await {
        Ok(o) => *outcome = Some(o),
        Err(e) => {
            tracing::warn!(error = %e, saga_id = %saga_id, "cannot tell a waiting start its outcome")
        }
    }
}

fn refused(code: &str, message: String, errors: Vec<String>) -> StartResponse {
    StartResponse::Refused { code: code.to_owned(), message, errors }
}
