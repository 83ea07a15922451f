//! Events for waiting sagas over NATS (`<prefix>.signal.<event>`), against a
//! running orchestrator on each database: an event is taken by the step
//! waiting for it, once per event id; what cannot be taken is refused with a
//! code (`ended`, `unknown_saga`, `bad_request`, `ambiguous`, `invalid`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::on_each_backend;
use sagas::protocol::{SignalRequest, SignalResponse, StartResponse};
use serde_json::json;
use skald_tests::{Backend, RunningOrchestrator, TestDb, definitions_dir, token};
use std::time::Duration;

/// One step that waits up to a minute for `approval`; the saga's output is
/// who approved.
const APPROVAL: &str = "name: approval\nversion: 1\n\
    input_schema: {type: object}\n\
    output: {by: \"{{steps.approved.output.by}}\"}\n\
    steps:\n  - name: approved\n    wait_for: {event: approval, timeout: 1m}\n";

/// One step that waits for `paid`, keyed by the order number.
const KEYED: &str = "name: keyed\nversion: 1\n\
    input_schema: {type: object, properties: {order: {type: string}}}\n\
    steps:\n  - name: paid\n    wait_for: {event: paid, key: \"{{input.order}}\", timeout: 1m}\n";

async fn events_over_nats(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let defs = definitions_dir(&[("approval.yaml", APPROVAL), ("keyed.yaml", KEYED)]).unwrap();
    let prefix = format!("t{}", token());
    let mut o = RunningOrchestrator::start(&db, &prefix, defs.clone()).await.unwrap();
    let StartResponse::Started { saga_id, .. } =
        o.start_saga("approval", "k1", json!({})).await.unwrap()
    else {
        panic!("not started");
    };
    let send = async |request: SignalRequest| -> SignalResponse {
        let body = serde_json::to_vec(&request).unwrap();
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            o.client.request(o.ns.signal_subject("approval"), body.into()),
        )
        .await
        .unwrap()
        .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    };
    let event = |event_id: &str| SignalRequest {
        saga_id: saga_id.clone(),
        event_id: event_id.into(),
        key: None,
        payload: json!({"by": "ann"}),
    };
    assert_eq!(
        send(event("e1")).await,
        SignalResponse::Accepted { saga_id: saga_id.clone(), taken: true }
    );
    let loaded = o.store.load(&saga_id).await.unwrap().unwrap();
    assert_eq!(loaded.row.status, "completed");
    assert_eq!(send(event("e1")).await, SignalResponse::Duplicate { saga_id: saga_id.clone() });
    let ended = send(event("e2")).await;
    assert!(matches!(&ended, SignalResponse::Refused { code, .. } if code == "ended"), "{ended:?}");
    let unknown = send(SignalRequest { saga_id: "01a2-nobody".into(), ..event("e3") }).await;
    assert!(
        matches!(&unknown, SignalResponse::Refused { code, .. } if code == "unknown_saga"),
        "{unknown:?}"
    );
    let not_json = o.client.request(o.ns.signal_subject("approval"), "{".into()).await.unwrap();
    let not_json: SignalResponse = serde_json::from_slice(&not_json.payload).unwrap();
    assert!(matches!(&not_json, SignalResponse::Refused { code, .. } if code == "bad_request"));

    // By its key alone: the saga waiting for `paid` with the order number.
    let StartResponse::Started { saga_id: keyed, .. } =
        o.start_saga("keyed", "k2", json!({"order": "o-1"})).await.unwrap()
    else {
        panic!("not started");
    };
    let by_key = async |key: Option<&str>, event_id: &str| -> SignalResponse {
        let request = SignalRequest {
            saga_id: String::new(),
            event_id: event_id.into(),
            key: key.map(str::to_owned),
            payload: json!({"paid": true}),
        };
        let body = serde_json::to_vec(&request).unwrap();
        let msg = o.client.request(o.ns.signal_subject("paid"), body.into()).await.unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    };
    let nobody = by_key(Some("o-2"), "p1").await;
    assert!(
        matches!(&nobody, SignalResponse::Refused { code, .. } if code == "unknown_saga"),
        "{nobody:?}"
    );
    let no_key = by_key(None, "p1").await;
    assert!(
        matches!(&no_key, SignalResponse::Refused { code, .. } if code == "bad_request"),
        "{no_key:?}"
    );
    assert_eq!(
        by_key(Some("o-1"), "p1").await,
        SignalResponse::Accepted { saga_id: keyed.clone(), taken: true }
    );
    assert_eq!(o.store.load(&keyed).await.unwrap().unwrap().row.status, "completed");

    // Two sagas waiting for the same key: the key alone names neither.
    let mut twins = Vec::new();
    for idempotency in ["k3", "k4"] {
        let StartResponse::Started { saga_id, .. } =
            o.start_saga("keyed", idempotency, json!({"order": "o-3"})).await.unwrap()
        else {
            panic!("not started");
        };
        twins.push(saga_id);
    }
    let ambiguous = by_key(Some("o-3"), "p3").await;
    assert!(
        matches!(&ambiguous, SignalResponse::Refused { code, .. } if code == "ambiguous"),
        "{ambiguous:?}"
    );
    // An event none of the saga's steps waits for.
    let invalid = send(SignalRequest { saga_id: twins[0].clone(), ..event("e4") }).await;
    assert!(
        matches!(&invalid, SignalResponse::Refused { code, message } if code == "invalid" && message.contains("no step of `keyed` waits")),
        "{invalid:?}"
    );
    for twin in &twins {
        assert_eq!(o.store.load(twin).await.unwrap().unwrap().row.status, "running");
    }
    o.stop().await;
    let _ = std::fs::remove_dir_all(defs);
}

on_each_backend!(events_over_nats: events_over_nats_sqlite, events_over_nats_postgres);
