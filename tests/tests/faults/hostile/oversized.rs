//! Payloads near and over the limits: a start request, a saga's input and a
//! step's output, an API body, and messages published straight to JetStream.

use super::Barrage;
use super::api::OPERATOR;
use crate::common::load::{Begun, Make};
use crate::invariants::verify;
use crate::load::{LOAD_WITHIN, wait_ended};
use crate::tally::Tally;
use async_nats::jetstream;
use axum::http::StatusCode;
use sagas::machine::SagaEvent;
use sagas::protocol::{Outcome, StartResponse};
use serde_json::json;
use skald_tests::{Delivery, Script, scripted_participant};
use std::sync::Arc;
use std::time::Instant;

/// Two steps on a scripted participant (`p`); `pad` goes into the first
/// command, the first step's `blob` output into the second.
const BIG: &str = include_str!("../definitions/big.yaml");

/// Payloads over the limits: a start request over 512 KiB is refused; an
/// input too large to send as a command fails its step; an output too large
/// to feed the next step compensates; an API body over 1 MiB is refused; a
/// message over the stream's limit is refused by JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_payloads() {
    // About the streams' limits, on a scripted participant: over JetStream.
    let b =
        Barrage::new("oversized_payloads", &[("big.yaml", BIG)], false, Delivery::JetStream).await;
    let (w, o, api, n) = (&b.w, &b.o, &b.api, b.n);
    let script: Script = Arc::new(|cmd| {
        let big = cmd.action == "a1" && cmd.payload["big_output"] == json!(true);
        let blob = if big { "b".repeat(300 * 1024) } else { String::new() };
        Some(Outcome::Ok { output: json!({ "blob": blob }) })
    });
    let (_seen, stop) = scripted_participant(o.client.clone(), &w.ns, "p", script).await.unwrap();
    let mut tally = Tally::default();
    // Every 10th saga carries a 300 KiB input, every 10th (offset 5) makes a 300 KiB output.
    let make: Make = Arc::new(|i| {
        let pad = if i % 10 == 0 { "p".repeat(300 * 1024) } else { String::new() };
        let input = json!({ "n": i, "pad": pad, "big_output": i % 10 == 5 });
        ("big".to_owned(), format!("k{i}"), input)
    });
    let load = b.load(n, make);
    load.until(n / 4, LOAD_WITHIN).await;

    let huge = format!(
        "{{\"idempotency_key\": \"huge\", \"input\": {{\"n\": 1, \"pad\": \"{}\", \"big_output\": false}}}}",
        "h".repeat(600 * 1024)
    );
    let answer = b.starter().request("big", huge.clone().into_bytes()).await;
    tally.expect(
        matches!(&answer, Some(StartResponse::Refused { code, .. }) if code == "bad_request"),
        || format!("a 600 KiB start request was answered {answer:?}"),
    );
    let body = json!({"type": "big", "idempotency_key": "huge-api",
                      "input": {"n": 1, "pad": "h".repeat(2 << 20), "big_output": false}});
    let a = api.post("/v1/sagas", OPERATOR, &body).await;
    tally.expect(a.status == StatusCode::PAYLOAD_TOO_LARGE && a.is_error_shape(), || {
        format!("a 2 MiB API body was answered {}", a.brief())
    });
    // Under the API's limit, but too large for a command: accepted, then its step fails.
    let body = json!({"type": "big", "idempotency_key": "large-api",
                      "input": {"n": 1, "pad": "l".repeat(600 * 1024), "big_output": false}});
    let a = api.post("/v1/sagas", OPERATOR, &body).await;
    let large_api = a.json.as_ref().and_then(|v| v["saga_id"].as_str()).map(str::to_owned);
    tally.expect(a.status == StatusCode::CREATED && large_api.is_some(), || {
        format!("a 600 KiB input through the API was answered {}", a.brief())
    });
    let js = jetstream::new(o.client.clone());
    for subject in [w.ns.reply_subject(0, "p"), w.ns.command_subject("p", "a1")] {
        let published = async {
            js.publish(subject.clone(), vec![b'x'; 600 * 1024].into()).await?.await?;
            Ok::<_, anyhow::Error>(())
        };
        tally.expect(published.await.is_err(), || format!("JetStream took 600 KiB on {subject}"));
    }

    let mut begun = load.finish().await;
    if let Some(id) = large_api {
        let input = json!({"n": 1, "pad": "l".repeat(600 * 1024), "big_output": false});
        begun.push(Begun { saga_type: "big".into(), key: "large-api".into(), id, input });
    }
    let heal = wait_ended(&o.store, Instant::now()).await;
    let statuses = verify(&o.store, &begun, &mut tally).await;
    for s in &begun {
        let i = s.input["n"].as_u64().unwrap_or(0);
        let status = statuses.get(&s.id).map_or("?", String::as_str);
        let want = if s.key == "large-api" || i % 10 == 0 {
            "failed"
        } else if i % 10 == 5 {
            "compensated"
        } else {
            "completed"
        };
        tally.expect(status == want, || format!("saga {} ended {status}, not {want}", s.key));
        if want != "completed" {
            let events = o.store.load(&s.id).await.unwrap().unwrap().events;
            let unrenderable = events.iter().any(
                |e| matches!(e, SagaEvent::StepFailed { code, .. } if code == "input_unrenderable"),
            );
            tally.expect(unrenderable, || format!("saga {}: no input_unrenderable", s.key));
        }
    }
    stop.cancel();
    b.finish(tally, heal).await;
}
