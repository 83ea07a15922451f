//! Hostile strings (SQL, NUL bytes, templates, control characters, 64 KiB)
//! in saga inputs, idempotency keys, repair reasons and request ids, filters
//! and paths.

use super::Barrage;
use super::api::{OPERATOR, VIEWER};
use crate::common::load::Begun;
use crate::invariants::count;
use crate::load::flow_load;
use crate::tally::Tally;
use crate::world::FLOW_FILE;
use axum::http::StatusCode;
use sagas::machine::{CompensationCause, SagaEvent};
use sagas::protocol::{Kind, Outcome, StartRequest, StartResponse};
use serde_json::{Value, json};
use skald_tests::{Delivery, Script, scripted_participant};
use std::sync::Arc;

/// One step on a participant (`slowp`) that never answers its `do` (so the
/// saga waits for an operator's abort) and answers its `undo`.
const HELD: &str = include_str!("../definitions/held.yaml");

/// SQL, NUL bytes, templates and 64 KiB strings in saga inputs, idempotency
/// keys, repair reasons and request ids, filter values and paths: each is
/// stored exactly as sent or refused with a JSON error, never a 5xx; the
/// `sagas` table is intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_strings_everywhere() {
    let definitions = [FLOW_FILE, ("held.yaml", HELD)];
    // The scripted participant (`slowp`) takes its commands from JetStream.
    let b = Barrage::new("hostile_strings", &definitions, true, Delivery::JetStream).await;
    let (w, o, api) = (&b.w, &b.o, &b.api);
    let script: Script =
        Arc::new(|cmd| (cmd.kind == Kind::Undo).then(|| Outcome::Ok { output: json!({}) }));
    let (_seen, stop) =
        scripted_participant(o.client.clone(), &w.ns, "slowp", script).await.unwrap();
    let load = b.load(b.n, flow_load());
    let starter = b.starter();
    let mut tally = Tally::default();
    let mut extra: Vec<Begun> = Vec::new();
    let hostile = hostile();
    let start_body = |key: &str, input: &Value| {
        serde_json::to_vec(&StartRequest {
            idempotency_key: key.to_owned(),
            input: input.clone(),
            wait_ms: None,
        })
        .unwrap()
    };

    // Saga inputs, over NATS: stored as sent, and sent on as sent (no template re-rendering).
    let mut inputs = Vec::new();
    for (label, h) in &hostile {
        let key = format!("input-{label}");
        let input = json!({ "note": h });
        match starter.request("flow", start_body(&key, &input)).await {
            Some(StartResponse::Started { saga_id, .. }) => {
                inputs.push((label, h.clone(), saga_id.clone()));
                extra.push(Begun { saga_type: "flow".into(), key, id: saga_id, input });
            }
            other => tally.fail(format!("a {label} input was answered {other:?}")),
        }
    }
    // Idempotency keys, over NATS and the API: stored exactly (the same key finds the same
    // saga) or refused as a bad request; never "unavailable".
    for (label, h) in &hostile {
        let input = json!({ "note": format!("key {label}") });
        match starter.request("flow", start_body(h, &input)).await {
            Some(StartResponse::Started { saga_id, .. }) => {
                let again = starter.request("flow", start_body(h, &input)).await;
                let same = matches!(&again, Some(StartResponse::Existing { saga_id: s, .. }) if *s == saga_id);
                tally.expect(same, || format!("the {label} key again answered {again:?}"));
                extra.push(Begun { saga_type: "flow".into(), key: h.clone(), id: saga_id, input });
            }
            Some(StartResponse::Refused { code, .. }) if code == "bad_request" => {}
            other => tally.fail(format!("a {label} key over NATS was answered {other:?}")),
        }
        let key = format!("api-{h}");
        let input = json!({ "note": h });
        let body = json!({"type": "flow", "idempotency_key": key, "input": input});
        let a = api.post("/v1/sagas", OPERATOR, &body).await;
        match a.status {
            StatusCode::CREATED => {
                let id = a.json.as_ref().and_then(|v| v["saga_id"].as_str()).unwrap().to_owned();
                extra.push(Begun { saga_type: "flow".into(), key, id, input });
            }
            s if s.is_client_error() && a.is_error_shape() => {}
            _ => tally.fail(format!("a {label} key through the API was answered {}", a.brief())),
        }
        let body = json!({"type": h, "idempotency_key": "k", "input": {"note": ""}});
        let a = api.post("/v1/sagas", OPERATOR, &body).await;
        tally.expect(a.status == StatusCode::UNPROCESSABLE_ENTITY && a.is_error_shape(), || {
            format!("a {label} saga type was answered {}", a.brief())
        });
    }
    // Repairs: abort held sagas with hostile reasons, and with hostile request ids.
    for (label, h) in &hostile {
        for field in ["reason", "request_id"] {
            let key = format!("held-{field}-{label}");
            let id = starter.start("held", &key, &json!({})).await;
            extra.push(Begun { saga_type: "held".into(), key, id: id.clone(), input: json!({}) });
            let body = if field == "reason" {
                json!({ "reason": h })
            } else {
                json!({ "reason": "hostile request id", "request_id": h })
            };
            let path = format!("/v1/sagas/{id}/abort");
            let a = api.post(&path, OPERATOR, &body).await;
            if a.status == StatusCode::OK && field == "reason" {
                let events = o.store.load(&id).await.unwrap().unwrap().events;
                let stored = events.iter().any(|e| matches!(e,
                    SagaEvent::CompensationStarted { cause: CompensationCause::Aborted { reason, .. }, .. }
                    if reason == h));
                tally.expect(stored, || format!("the {label} reason was not stored as sent"));
            } else if a.status != StatusCode::OK {
                tally.expect(a.status.is_client_error() && a.is_error_shape(), || {
                    format!("an abort with a {label} {field} was answered {}", a.brief())
                });
                // Still waiting: end it for the count.
                let a = api.post(&path, OPERATOR, &json!({ "reason": "cleanup" })).await;
                tally.expect(a.status == StatusCode::OK, || {
                    format!("cannot abort held saga {id}: {}", a.brief())
                });
            }
        }
    }
    // Filters and paths.
    for (label, h) in &hostile {
        let e = enc(h);
        for field in ["type", "status", "step", "key", "cursor", "older_than", "stuck"] {
            let a = api.get(&format!("/v1/sagas?{field}={e}"), VIEWER).await;
            tally.expect(a.is_sound(), || format!("filter {field}={label} answered {}", a.brief()));
            if field == "key" && a.status == StatusCode::OK {
                let items = a.json.as_ref().and_then(|v| v["items"].as_array()).cloned();
                let all_match = items.unwrap_or_default().iter().all(|it| {
                    it["idempotency_key"].as_str().is_some_and(|k| k.contains(h.as_str()))
                });
                tally.expect(all_match, || format!("key={label} listed keys without it"));
            }
        }
        let bulk = json!({"action": "abort", "filter": {"key": h, "type": h}, "reason": h,
                          "dry_run": true, "request_id": h});
        let a = api.post("/v1/bulk", OPERATOR, &bulk).await;
        tally.expect(a.is_sound(), || format!("a {label} bulk answered {}", a.brief()));
        for path in
            [format!("/v1/sagas/{e}"), format!("/v1/definitions/{e}"), format!("/v1/bulk/{e}")]
        {
            let a = api.get(&path, VIEWER).await;
            let refused = a.unsendable || (a.status == StatusCode::NOT_FOUND && a.is_error_shape());
            tally.expect(refused, || format!("GET {path:.60} answered {}", a.brief()));
        }
        let a = api.post(&format!("/v1/sagas/{e}/retry"), OPERATOR, &json!({})).await;
        let refused = a.unsendable || (a.status == StatusCode::NOT_FOUND && a.is_error_shape());
        tally.expect(refused, || format!("a repair of saga {label} answered {}", a.brief()));
    }

    // It still works: sagas started after the hostile ones end too.
    let (begun, heal) = b.after_barrage(load, extra).await;
    let statuses = b.verify(&begun, &mut tally).await;
    for (label, h, id) in &inputs {
        let events = o.store.load(id).await.unwrap().unwrap().events;
        let input_kept = events.iter().any(
            |e| matches!(e, SagaEvent::SagaStarted { input, .. } if input["note"] == json!(h)),
        );
        let sent_as_is = events.iter().any(
            |e| matches!(e, SagaEvent::CommandSent { payload, .. } if payload["note"] == json!(h)),
        );
        tally.expect(input_kept && sent_as_is, || {
            format!("the {label} input was not kept ({input_kept}) or sent ({sent_as_is}) as is")
        });
        let status = statuses.get(id).map_or("?", String::as_str);
        tally.expect(status == "completed", || format!("the {label} input saga ended {status}"));
    }
    let db = o.store.db();
    let events = count(db, "SELECT count(*) AS n FROM saga_events").await;
    tally.expect(events.as_ref().is_ok_and(|n| *n > 0), || format!("saga_events: {events:?}"));
    stop.cancel();
    b.finish(tally, heal).await;
}

/// Percent-encode everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Strings that try to break whatever stores or renders them.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("sql", "'; DROP TABLE sagas;--".to_owned()),
        ("sql-double-quote", "\"; DROP TABLE sagas; --".to_owned()),
        ("sql-tautology", "1' OR '1'='1".to_owned()),
        ("nul", "\u{0}".to_owned()),
        ("nul-inside", "ab\u{0}cd'; DROP TABLE sagas;--\u{0}".to_owned()),
        ("like-wildcards", "%_\\".to_owned()),
        ("template", "{{saga.id}}{{input.note}}".to_owned()),
        ("html", "<script>alert(1)</script>".to_owned()),
        ("unicode", "\u{202e}ǝɯɐu 😀 \u{fffd}".to_owned()),
        ("control", "\r\n\t\u{1b}[31m".to_owned()),
        ("64KiB", "x".repeat(64 * 1024)),
        ("64KiB-sql", "'; DROP TABLE sagas;--".repeat(3_000)),
    ]
}
