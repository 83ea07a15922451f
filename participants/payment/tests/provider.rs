//! The provider client and the outcome mapping against a wiremock provider:
//! every provider behaviour the participant must survive, and the answer it
//! gives the saga for each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use payment::api::{ChargeRequest, IDEMPOTENCY_KEY_HEADER, PayoutRequest, RefundRequest};
use payment::outcome::{Action, ProviderOutcome, Verdict, verdict};
use payment::provider::{Provider, ProviderConfig};
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "saga-1.charge.do";

fn client(server: &MockServer) -> Provider {
    Provider::new(&ProviderConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(400),
        ..ProviderConfig::new(server.uri())
    })
    .unwrap()
}

fn charge_request() -> ChargeRequest {
    ChargeRequest {
        amount: 1_250,
        currency: "EUR".into(),
        card_token: "tok_visa".into(),
        reference: "saga-1".into(),
    }
}

fn charge_json() -> serde_json::Value {
    json!({ "id": "ch_1", "object": "charge", "amount": 1250, "currency": "EUR", "status": "succeeded" })
}

fn error_json(code: &str) -> serde_json::Value {
    json!({ "error": { "code": code, "message": format!("because {code}") } })
}

/// The idempotency keys of every request the mock received, in order.
async fn keys_seen(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers.get(IDEMPOTENCY_KEY_HEADER).unwrap().to_str().unwrap().to_owned())
        .collect()
}

/// A provider that answers every charge with `response`.
async fn charges_answered(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// A provider that answers the first charge with `first`, and a repeat with
/// the same key with the charge (from its idempotency store).
async fn charged_on_repeat(first: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header(IDEMPOTENCY_KEY_HEADER, KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(charge_json()))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// The verdict on one charge (key [`KEY`]) against `server`.
async fn charge_verdict(server: &MockServer) -> Verdict {
    verdict(Action::Charge, client(server).charge(KEY, &charge_request()).await)
}

/// The verdict on one charge the provider answers with `response`.
async fn verdict_on(response: ResponseTemplate) -> Verdict {
    charge_verdict(&charges_answered(response).await).await
}

/// `retry`, `failed`, ... and the code of a verdict that is not `Done`.
fn answer_code(verdict: &Verdict) -> (&'static str, &str) {
    match verdict {
        Verdict::Done(_) => ("done", ""),
        Verdict::NothingToRefund { code, .. } => ("nothing_to_refund", code),
        Verdict::Failed { code, .. } => ("failed", code),
        Verdict::Retry { code, .. } => ("retry", code),
        Verdict::Unsent { code, .. } => ("unsent", code),
    }
}

#[tokio::test]
async fn a_charge_sends_its_key_and_body_and_reads_the_receipt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/charges"))
        .and(header(IDEMPOTENCY_KEY_HEADER, KEY))
        .and(body_json(json!({
            "amount": 1250, "currency": "EUR", "card_token": "tok_visa", "reference": "saga-1"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(charge_json()))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = client(&server).charge(KEY, &charge_request()).await;
    let Verdict::Done(receipt) = verdict(Action::Charge, outcome) else { panic!() };
    assert_eq!((receipt.id.as_str(), receipt.status.as_str()), ("ch_1", "succeeded"));
}

#[tokio::test]
async fn a_decline_fails_with_the_providers_reason() {
    let declined = ResponseTemplate::new(402).set_body_json(error_json("card_declined"));
    let answer = verdict_on(declined).await.into_answer(|_| json!({}));
    let Err(skald_participant::HandlerError::Failed { code, message }) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!((code.as_str(), message.as_str()), ("card_declined", "because card_declined"));
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_key_and_then_succeeds() {
    let server =
        charged_on_repeat(ResponseTemplate::new(500).set_body_string("<html>oops</html>")).await;
    let provider = client(&server);

    let first = verdict(Action::Charge, provider.charge(KEY, &charge_request()).await);
    assert_eq!(answer_code(&first), ("retry", "provider_unavailable"), "{first:?}");
    // The orchestrator's retry carries the same command id, so the same key.
    let second = verdict(Action::Charge, provider.charge(KEY, &charge_request()).await);
    assert!(matches!(&second, Verdict::Done(r) if r.id == "ch_1"), "{second:?}");
    assert_eq!(keys_seen(&server).await, [KEY, KEY]);
}

#[tokio::test]
async fn a_timeout_after_the_provider_charged_is_retried_and_the_retry_gets_the_charge() {
    // The provider charges, but answers after the client gave up.
    let late =
        ResponseTemplate::new(200).set_body_json(charge_json()).set_delay(Duration::from_secs(2));
    let server = charged_on_repeat(late).await;
    let provider = client(&server);

    let first = provider.charge(KEY, &charge_request()).await;
    assert!(
        matches!(&first, ProviderOutcome::Transient { code, .. } if code == "provider_timeout"),
        "{first:?}"
    );
    assert!(matches!(verdict(Action::Charge, first), Verdict::Retry { .. }));
    let second = verdict(Action::Charge, provider.charge(KEY, &charge_request()).await);
    assert!(matches!(&second, Verdict::Done(r) if r.id == "ch_1"), "{second:?}");
    assert_eq!(keys_seen(&server).await, [KEY, KEY]);
}

#[tokio::test]
async fn a_malformed_body_is_retried_without_repeating_it() {
    let body = "{\"card\": \"4111111111111111\"";
    let out = verdict_on(ResponseTemplate::new(200).set_body_string(body)).await;
    let Verdict::Retry { code, message } = out else { panic!("{out:?}") };
    assert_eq!(code, "provider_bad_response");
    assert!(message.contains("27 bytes"), "{message}");
    assert!(!message.contains("4111"), "the body must not leak: {message}");
}

#[tokio::test]
async fn an_oversized_body_is_retried() {
    let body = "x".repeat(100 * 1024);
    let out = verdict_on(ResponseTemplate::new(200).set_body_string(body)).await;
    assert_eq!(answer_code(&out), ("retry", "provider_bad_response"), "{out:?}");
}

#[tokio::test]
async fn an_idempotency_conflict_fails() {
    let conflict = ResponseTemplate::new(409).set_body_json(error_json("idempotency_conflict"));
    let out = verdict_on(conflict).await;
    assert_eq!(answer_code(&out), ("failed", "idempotency_conflict"), "{out:?}");
}

#[tokio::test]
async fn a_refund_of_an_unknown_charge_has_nothing_to_refund() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header(IDEMPOTENCY_KEY_HEADER, "saga-1.charge.undo"))
        .and(body_json(json!({ "charge_id": "ch_404", "amount": 1250 })))
        .respond_with(ResponseTemplate::new(404).set_body_json(error_json("unknown_charge")))
        .expect(1)
        .mount(&server)
        .await;
    let request =
        RefundRequest { charge_id: Some("ch_404".into()), reference: None, amount: 1_250 };
    let outcome = client(&server).refund("saga-1.charge.undo", &request).await;
    let answer = verdict(Action::Refund, outcome).into_answer(|_| json!({ "refund_id": "x" }));
    assert_eq!(answer, Ok(json!({ "nothing_to_refund": true })));
}

#[tokio::test]
async fn a_404_on_a_charge_or_payout_is_a_misconfiguration_and_retried() {
    let server = MockServer::start().await; // no mocks: every path is 404
    let out = charge_verdict(&server).await;
    assert_eq!(answer_code(&out), ("retry", "provider_not_found"), "{out:?}");
    let payout = PayoutRequest {
        amount: 1,
        currency: "EUR".into(),
        destination: "ba_1".into(),
        reference: "r".into(),
    };
    let out = verdict(Action::Payout, client(&server).payout("p.payout.do", &payout).await);
    assert!(matches!(out, Verdict::Retry { .. }), "{out:?}");
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_as_unsent() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let provider = Provider::new(&ProviderConfig::new(format!("http://127.0.0.1:{port}"))).unwrap();
    let out = verdict(Action::Charge, provider.charge(KEY, &charge_request()).await);
    assert_eq!(answer_code(&out), ("unsent", "provider_unreachable"), "{out:?}");
}
