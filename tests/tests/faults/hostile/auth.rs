//! Authentication and authorisation: calls without a valid token, and
//! calls beyond the caller's role.

use super::Barrage;
use super::api::{EXPIRED, OPERATOR, VIEWER, VIEWER_NAME};
use crate::invariants::count;
use crate::load::{LOAD_WITHIN, flow_load, wait_ended};
use crate::tally::Tally;
use crate::world::{FLOW, FLOW_FILE};
use axum::http::StatusCode;
use serde_json::json;
use skald_tests::Delivery;
use skald_tests::token;
use std::time::Instant;

/// No token, an expired one, forged ones: 401 on every route; a viewer's
/// repair, start, bulk or registration: 403; nothing is recorded in their name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_and_unauthorised_calls() {
    let b = Barrage::new("auth", &[FLOW_FILE], true, Delivery::default()).await;
    let (o, api) = (&b.o, &b.api);
    let load = b.load(b.n, flow_load());
    load.until(b.n / 4, LOAD_WITHIN).await;
    let id = load.some_id();
    let mut tally = Tally::default();

    let flow = FLOW.to_owned();
    let start = json!({"type": "flow", "idempotency_key": "auth", "input": {"note": ""}});
    let bulk =
        json!({"action": "abort", "filter": {"type": "flow"}, "reason": "r", "dry_run": true});
    let routes: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/v1/sagas".into(), vec![]),
        ("GET", format!("/v1/sagas/{id}"), vec![]),
        ("GET", "/v1/overview".into(), vec![]),
        ("GET", "/v1/definitions".into(), vec![]),
        ("GET", "/metrics".into(), vec![]),
        ("POST", "/v1/sagas".into(), start.to_string().into_bytes()),
        ("POST", format!("/v1/sagas/{id}/abort"), b"{\"reason\": \"r\"}".to_vec()),
        ("POST", "/v1/bulk".into(), bulk.to_string().into_bytes()),
        ("POST", "/v1/definitions".into(), flow.clone().into_bytes()),
    ];
    let forged_hash = orchestrator::api::auth::hash_token(VIEWER);
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(format!("Bearer {EXPIRED}"))),
        ("forged", Some(format!("Bearer forged-{}", token()))),
        ("the stored hash", Some(format!("Bearer {forged_hash}"))),
        ("a longer token", Some(format!("Bearer {VIEWER}x"))),
        ("empty", Some("Bearer ".to_owned())),
        ("basic", Some("Basic dmVyYTpzZWNyZXQ=".to_owned())),
        ("2 KiB", Some(format!("Bearer {}", "a".repeat(2048)))),
    ];
    for (method, path, body) in &routes {
        let ct = if path.starts_with("/v1/definitions") {
            "application/yaml"
        } else {
            "application/json"
        };
        for (what, auth) in &refused {
            let a = api.send(method, path, auth.as_deref(), Some(ct), body.clone()).await;
            tally.expect(
                a.status == StatusCode::UNAUTHORIZED && a.is_error_shape() && a.www_authenticate,
                || format!("{method} {path} with {what} answered {}", a.brief()),
            );
        }
    }
    let viewer = format!("Bearer {VIEWER}");
    for action in ["retry", "skip", "abort", "resume", "resolve"] {
        let path = format!("/v1/sagas/{id}/{action}");
        let body = json!({"reason": "viewer tries", "outcome": "completed"});
        let a = api
            .send("POST", &path, Some(&viewer), Some("application/json"), body.to_string().into())
            .await;
        tally.expect(a.status == StatusCode::FORBIDDEN && a.is_error_shape(), || {
            format!("a viewer's {action} answered {}", a.brief())
        });
    }
    for (_, path, body) in routes.iter().filter(|(m, _, _)| *m == "POST") {
        let ct = if path.starts_with("/v1/definitions") {
            "application/yaml"
        } else {
            "application/json"
        };
        let a = api.send("POST", path, Some(&viewer), Some(ct), body.clone()).await;
        tally.expect(a.status == StatusCode::FORBIDDEN && a.is_error_shape(), || {
            format!("a viewer's POST {path} answered {}", a.brief())
        });
    }
    let a = api
        .send(
            "POST",
            "/v1/definitions",
            Some(&format!("Bearer {OPERATOR}")),
            Some("application/yaml"),
            flow.into_bytes(),
        )
        .await;
    tally.expect(a.status == StatusCode::FORBIDDEN, || {
        format!("an operator's registration answered {}", a.brief())
    });
    // The same tokens do work where they are allowed.
    let a = api.get("/v1/sagas", VIEWER).await;
    tally.expect(a.status == StatusCode::OK, || format!("the viewer cannot list: {}", a.brief()));
    let a = api.post(&format!("/v1/sagas/{id}/retry"), OPERATOR, &json!({})).await;
    tally.expect(a.status == StatusCode::OK || a.status == StatusCode::CONFLICT, || {
        format!("the operator's retry answered {}", a.brief())
    });

    let calls_over = Instant::now();
    let begun = load.finish().await;
    let heal = wait_ended(&o.store, calls_over).await;
    b.verify(&begun, &mut tally).await;
    let db = o.store.db();
    let by_viewer = count(
        db,
        &format!(
            "SELECT count(*) AS n FROM saga_events WHERE event LIKE '%\"by\":\"{VIEWER_NAME}\"%'"
        ),
    )
    .await;
    tally.expect(by_viewer == Ok(0), || format!("events recorded for the viewer: {by_viewer:?}"));
    let definitions = count(db, "SELECT count(*) AS n FROM definitions").await;
    tally.expect(definitions == Ok(1), || {
        format!("definitions after refused registrations: {definitions:?}")
    });
    b.finish(tally, heal).await;
}
