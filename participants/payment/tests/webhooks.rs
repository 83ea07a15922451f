//! The webhook receiver on its own, over real NATS and a real database: what
//! it answers the provider for a body that is no webhook, and for each answer
//! (or none) from the orchestrator on `<prefix>.signal.psp_result`. A 2xx
//! ends the provider's retries, so only what could go through later is 503.
//! The orchestrator's side is played by a subscriber on that subject; the
//! whole flow with a real orchestrator is `tests/tests/topup_3ds.rs`.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use payment::handlers::Payments;
use payment::provider::{Provider, ProviderConfig};
use payment::store::migration::PaymentSchema;
use payment::webhooks::{EVENT, WEBHOOK_PATH, app};
use sagas::protocol::{SignalRequest, SignalResponse};
use serde_json::{Value, json};
use skald_testkit::{Backend, TempDatabase, namespace, nats_url};
use std::sync::Arc;
use tower::ServiceExt;

fn webhook(charge_id: &str) -> Value {
    json!({
        "id": format!("evt_{charge_id}"),
        "type": "charge.succeeded",
        "data": {
            "id": charge_id, "object": "charge", "amount": 500, "currency": "EUR",
            "reference": "saga-1", "status": "succeeded", "amount_refunded": 0
        }
    })
}

/// The receiver's answer (status and `status` field) to `body`, while the
/// orchestrator's side answers each event with `answer` (`None`: nobody
/// listens on the subject).
async fn post(body: &str, answer: Option<Vec<u8>>) -> (StatusCode, String) {
    let database = TempDatabase::new(Backend::Sqlite).await.unwrap();
    let db = database.connect().await.unwrap();
    skald_participant::migrate::migrate::<PaymentSchema>(&db).await.unwrap();
    let provider = Provider::new(&ProviderConfig::new("http://127.0.0.1:9")).unwrap();
    let nats = async_nats::connect(nats_url()).await.unwrap();
    let ns = namespace();
    let responder = if let Some(answer) = answer {
        let mut events = nats.subscribe(ns.signal_subject(EVENT)).await.unwrap();
        nats.flush().await.unwrap();
        let nats = nats.clone();
        Some(tokio::spawn(async move {
            while let Some(msg) = events.next().await {
                let request: SignalRequest = serde_json::from_slice(&msg.payload).unwrap();
                assert_eq!(request.saga_id, "saga-1", "the charge's reference names the saga");
                assert_eq!(
                    request.key.as_deref(),
                    Some(request.payload["charge_id"].as_str().unwrap())
                );
                nats.publish(msg.reply.unwrap(), answer.clone().into()).await.unwrap();
            }
        }))
    } else {
        None
    };
    let request = Request::post(WEBHOOK_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response =
        app(Arc::new(Payments { db, provider }), nats, ns).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let said: Value = serde_json::from_slice(&bytes).unwrap();
    if let Some(r) = responder {
        r.abort();
    }
    (status, said["status"].as_str().unwrap().to_owned())
}

fn answer(response: &SignalResponse) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(response).unwrap())
}

#[tokio::test]
async fn a_body_that_is_no_webhook_is_refused_400() {
    assert_eq!(post("{", None).await, (StatusCode::BAD_REQUEST, "not a webhook event".into()));
    let no_charge = json!({"id": "evt_1", "type": "charge.succeeded"}).to_string();
    assert_eq!(post(&no_charge, None).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn what_the_orchestrator_answers_decides_whether_the_provider_sends_it_again() {
    let body = webhook("ch_1").to_string();
    let accepted = SignalResponse::Accepted { saga_id: "saga-1".into(), taken: true };
    assert_eq!(post(&body, answer(&accepted)).await, (StatusCode::OK, "accepted".into()));
    let duplicate = SignalResponse::Duplicate { saga_id: "saga-1".into() };
    assert_eq!(post(&body, answer(&duplicate)).await, (StatusCode::OK, "duplicate".into()));
    let refused = |code: &str| SignalResponse::Refused { code: code.into(), message: "m".into() };
    // It will never be taken: sending it again changes nothing.
    assert_eq!(post(&body, answer(&refused("ended"))).await, (StatusCode::OK, "refused".into()));
    // It could be taken later: the provider is told to send it again.
    assert_eq!(
        post(&body, answer(&refused("unavailable"))).await,
        (StatusCode::SERVICE_UNAVAILABLE, "orchestrator unavailable".into())
    );
    assert_eq!(
        post(&body, Some(b"not json".to_vec())).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unreadable answer".into())
    );
    assert_eq!(
        post(&body, None).await,
        (StatusCode::SERVICE_UNAVAILABLE, "orchestrator unavailable".into()),
        "nobody listens: no responders"
    );
}
