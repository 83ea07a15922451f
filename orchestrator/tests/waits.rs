//! Sagas that wait for the outside world, through the API: an event sent to
//! a saga is taken by the step waiting for it (or kept until one does), once
//! per event id; who may send one, and what is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::Engine;
use orchestrator::api::{Role, Tokens};
use sagas::machine::Input;
use sagas::protocol::{Kind, Outcome, Reply, command_id};
use serde_json::{Value, json};
use skald_testkit::Backend;

const DEFINITION: &str = include_str!("fixtures/await.yaml");
const VIEWER: &str = "viewer-token";
const SIGNALLER: &str = "signaller-token";

async fn post(app: &axum::Router, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, bytes) = common::send(app, req).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn answer(engine: &Engine, saga_id: &str, step: &str, output: Value) {
    let reply = Reply {
        command_id: command_id(saga_id, step, Kind::Do),
        attempt: 1,
        outcome: Outcome::Ok { output },
    };
    engine.driver.handle(saga_id, &Input::Reply(reply)).await.unwrap();
}

async fn events_reach_the_waiting_step_once(backend: Backend) {
    let engine = Engine::new(backend, &[DEFINITION]).await;
    let mut tokens = Tokens::none();
    tokens.insert("vera", Role::Viewer, VIEWER, None);
    tokens.insert("sam", Role::Signaller, SIGNALLER, None);
    let app = engine.router(tokens, "test-1");
    let started = engine.driver.start("awaiting", "k1", &json!({"amount": 5})).await.unwrap();
    let id = started.saga_id().to_owned();
    let path = format!("/v1/sagas/{id}/events/confirmation");
    let event = |event_id: &str, key: &str, by: Value| json!({"event_id": event_id, "key": key, "payload": {"by": by}});

    // A viewer may not send events; a signaller may.
    let (status, _) = post(&app, &path, VIEWER, event("e0", "h-1", json!("ann"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Early: kept until `confirmed` waits for it.
    let (status, v) = post(&app, &path, SIGNALLER, event("e1", "h-1", json!("ann"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["status"].as_str(), v["taken"].as_bool()), (Some("accepted"), Some(false)));
    // The same event again changes nothing.
    let (status, v) = post(&app, &path, SIGNALLER, event("e1", "h-1", json!("ann"))).await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("duplicate")));
    // Refused: no step waits for it; a body that does not fit the schema.
    let (status, v) = post(
        &app,
        &format!("/v1/sagas/{id}/events/shipped"),
        SIGNALLER,
        event("e2", "h-1", json!("ann")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = post(&app, &path, SIGNALLER, event("e3", "h-1", json!(42))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("schema"), "{v}");
    // Unknown saga.
    let (status, _) = post(
        &app,
        "/v1/sagas/01a23bea-0000-7000-8000-000000000000/events/confirmation",
        SIGNALLER,
        event("e4", "h-1", json!("ann")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // `reserve` answers: `confirmed` begins waiting for key h-1 and takes e1.
    answer(&engine, &id, "reserve", json!({"hold": "h-1"})).await;
    let (row, state) = engine.driver.state(&id).await.unwrap();
    assert_eq!(state.steps[1].output, Some(json!({"by": "ann"})), "the early event was taken");
    assert_eq!(row.current_step.as_deref(), Some("book"));
    answer(&engine, &id, "book", json!({})).await;
    let (row, state) = engine.driver.state(&id).await.unwrap();
    assert_eq!(row.status, "completed");
    assert_eq!(state.output, Some(json!({"by": "ann"})));
    // An ended saga takes no event.
    let (status, v) = post(&app, &path, SIGNALLER, event("e5", "h-1", json!("ann"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "ended");

    // A second saga: the event comes while the step waits, and is taken at once.
    let id = engine
        .driver
        .start("awaiting", "k2", &json!({"amount": 5}))
        .await
        .unwrap()
        .saga_id()
        .to_owned();
    answer(&engine, &id, "reserve", json!({"hold": "h-2"})).await;
    let path = format!("/v1/sagas/{id}/events/confirmation");
    let (status, v) = post(&app, &path, SIGNALLER, event("w1", "other", json!("bob"))).await;
    assert_eq!(
        (status, v["taken"].as_bool()),
        (StatusCode::OK, Some(false)),
        "another key waits on"
    );
    let (status, v) = post(&app, &path, SIGNALLER, event("w2", "h-2", json!("bob"))).await;
    assert_eq!((status, v["taken"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["saga_status"], "running");

    // By its key alone: the one saga waiting for `confirmation` with h-3.
    let by_key = "/v1/events/confirmation";
    let id = engine
        .driver
        .start("awaiting", "k3", &json!({"amount": 5}))
        .await
        .unwrap()
        .saga_id()
        .to_owned();
    // Not waiting yet: nobody is found (an early event goes by saga id).
    let (status, v) = post(&app, by_key, SIGNALLER, event("x1", "h-3", json!("cy"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    answer(&engine, &id, "reserve", json!({"hold": "h-3"})).await;
    let (status, v) =
        post(&app, by_key, SIGNALLER, json!({"event_id": "x2", "payload": {"by": "cy"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no key: {v}");
    let (status, v) = post(&app, by_key, VIEWER, event("x2", "h-3", json!("cy"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // Two sagas waiting for the same key: which one is meant is not guessed.
    let twin = engine
        .driver
        .start("awaiting", "k4", &json!({"amount": 5}))
        .await
        .unwrap()
        .saga_id()
        .to_owned();
    answer(&engine, &twin, "reserve", json!({"hold": "h-3"})).await;
    let (status, v) = post(&app, by_key, SIGNALLER, event("x3", "h-3", json!("cy"))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ambiguous")),
        "{v}"
    );
    let abort = sagas::machine::Input::Operator(sagas::machine::OperatorInput {
        action: sagas::machine::OperatorAction::Abort,
        by: "test".into(),
        reason: "out of the way".into(),
    });
    engine.driver.handle(&twin, &abort).await.unwrap();
    let (status, v) = post(&app, by_key, SIGNALLER, event("x4", "h-3", json!("cy"))).await;
    assert_eq!((status, v["taken"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(v["saga_id"], json!(id));
}

#[tokio::test]
async fn events_reach_the_waiting_step_once_sqlite() {
    events_reach_the_waiting_step_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn events_reach_the_waiting_step_once_postgres() {
    events_reach_the_waiting_step_once(Backend::Postgres).await;
}
