//! Malformed JSON (and worse) on every NATS subject the system reads and on
//! every API route.

use super::Barrage;
use super::api::ADMIN;
use crate::load::{LOAD_WITHIN, flow_load};
use crate::tally::Tally;
use crate::world::FLOW_FILE;
use async_nats::jetstream;
use sagas::protocol::StartResponse;
use serde_json::json;
use skald_tests::Delivery;
use skald_tests::{PARTITIONS, RunningOrchestrator};
use std::time::{Duration, Instant};

/// Junk on the start, reply and command subjects (of the default delivery)
/// and on every API route: every start is refused, every API answer a JSON
/// error (never a 5xx), and the load goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_everywhere() {
    let b = Barrage::new("malformed_json", &[FLOW_FILE], true, Delivery::default()).await;
    let (o, api) = (&b.o, &b.api);
    let load = b.load(b.n, flow_load());
    load.until(b.n / 4, LOAD_WITHIN).await;
    let real = load.some_id();
    let mut tally = Tally::default();
    let starter = b.starter();

    // Start requests: refused, never started, never "unavailable".
    for body in junk() {
        let answer = starter.request("flow", body.clone()).await;
        let refused = matches!(&answer, Some(StartResponse::Refused { code, .. })
            if code == "bad_request" || code == "invalid_input");
        tally.expect(refused, || format!("start with {} answered {answer:?}", show(&body)));
    }
    let answer = starter.request("no_such_type", b"{}".to_vec()).await;
    tally.expect(matches!(&answer, Some(StartResponse::Refused { .. })), || {
        format!("a start of an unknown type answered {answer:?}")
    });
    // Replies and commands: junk on the subjects this delivery reads.
    junk_on_the_bus(o, &real, &mut tally).await;
    // The API: junk to every route, with and without a JSON content type.
    let admin = format!("Bearer {ADMIN}");
    let mut posts = vec![
        "/v1/sagas".to_owned(),
        "/v1/bulk".to_owned(),
        "/v1/definitions".to_owned(),
        "/v1/definitions/validate".to_owned(),
        "/v1/sagas/no-such-saga/abort".to_owned(),
    ];
    for action in ["retry", "skip", "abort", "resume", "resolve", "explode"] {
        posts.push(format!("/v1/sagas/{real}/{action}"));
    }
    for path in &posts {
        for body in junk() {
            for ct in [Some("application/json"), Some("application/yaml"), Some("text/plain"), None]
            {
                let a = api.send("POST", path, Some(&admin), ct, body.clone()).await;
                tally.expect(a.is_sound(), || {
                    format!("POST {path} ({ct:?}) {} answered {}", show(&body), a.brief())
                });
            }
        }
    }
    let gets = [
        "/v1/sagas?limit=abc",
        "/v1/sagas?limit=-1",
        "/v1/sagas?limit=0",
        "/v1/sagas?limit=99999999999999999999999",
        "/v1/sagas?status=nonsense",
        "/v1/sagas?status=,,,",
        "/v1/sagas?older_than=forever",
        "/v1/sagas?newer_than=-5m",
        "/v1/sagas?older_than=99999999999999d",
        "/v1/sagas?stuck=x",
        "/v1/sagas?cursor=..%2F..",
        "/v1/sagas?unknown=1",
        "/v1/sagas?type=a&type=b",
        "/v1/sagas?%FF=%FE",
        "/v1/sagas/%FF%FE",
        "/v1/sagas/..%2F..%2Fetc%2Fpasswd",
        "/v1/bulk/nope",
        "/v1/bulk/%00",
        "/v1/definitions/%7B%7D",
        "/v1/definitions/flow?version=x",
        "/v1/definitions/flow?version=-1",
        "/v1/nope",
        "/v1/sagas/x/y/z",
    ];
    for path in gets {
        let a = api.send("GET", path, Some(&admin), None, Vec::new()).await;
        tally.expect(a.is_sound(), || format!("GET {path} answered {}", a.brief()));
    }
    for (method, path) in
        [("DELETE", "/v1/sagas"), ("PUT", "/v1/definitions"), ("PATCH", "/v1/bulk")]
    {
        let a = api.send(method, path, Some(&admin), None, Vec::new()).await;
        tally.expect(a.status.is_client_error() && a.is_error_shape(), || {
            format!("{method} {path} answered {}", a.brief())
        });
    }
    // It still works: sagas started after the junk end too.
    let (begun, heal) = b.after_barrage(load, Vec::new()).await;
    b.verify(&begun, &mut tally).await;
    b.finish(tally, heal).await;
}

/// Junk on the reply and command subjects of the streams (`--delivery
/// jetstream`): every junk reply and command is settled (terminated, not
/// left to be delivered again), and the load goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_on_the_streams() {
    let b = Barrage::new("malformed_json_streams", &[FLOW_FILE], true, Delivery::JetStream).await;
    let (w, o) = (&b.w, &b.o);
    let load = b.load(b.n, flow_load());
    load.until(b.n / 4, LOAD_WITHIN).await;
    let real = load.some_id();
    let mut tally = Tally::default();
    junk_on_the_bus(o, &real, &mut tally).await;
    let (begun, heal) = b.after_barrage(load, Vec::new()).await;
    if let Err(e) = o.wait_replies_settled(Duration::from_secs(30)).await {
        tally.fail(format!("junk replies not settled: {e}"));
    }
    // The participant settled every junk command (terminated, not left to redeliver).
    let js = jetstream::new(o.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumer: Result<jetstream::consumer::PullConsumer, _> =
            js.get_consumer_from_stream("bench", w.ns.commands_stream()).await;
        let unsettled = match consumer {
            Ok(mut c) => c
                .info()
                .await
                .map(|i| i.num_pending + i.num_ack_pending as u64)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if unsettled == Ok(0) {
            break;
        }
        if Instant::now() > deadline {
            tally.fail(format!("the participant left junk commands unsettled: {unsettled:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.verify(&begun, &mut tally).await;
    b.finish(tally, heal).await;
}

/// Junk, and well-formed replies naming no command (`real` is a saga of the
/// load), on every partition's reply subject and on the bench participant's
/// command subjects, as `o` delivers them: published to the streams and
/// acknowledged, or on the direct subjects.
async fn junk_on_the_bus(o: &RunningOrchestrator, real: &str, tally: &mut Tally) {
    let forged = [
        json!({"command_id": "no-such-saga.one.do", "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.nope.do"), "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.one.do"), "attempt": 999, "outcome": {"status": "ok"}}),
        json!({"command_id": format!("{real}.one.sideways"), "attempt": 1, "outcome": {"status": "ok"}}),
        json!({"command_id": "", "attempt": 0, "outcome": {"status": "failed", "code": "", "message": ""}}),
    ];
    let mut messages = Vec::new();
    for p in 0..PARTITIONS {
        let bodies = junk().into_iter().chain(forged.iter().map(|f| f.to_string().into_bytes()));
        messages.extend(bodies.map(|body| (o.ns.reply_subject(p, "bench"), body)));
    }
    for action in ["step1", "undo2", "nope"] {
        messages
            .extend(junk().into_iter().map(|body| (o.ns.command_subject("bench", action), body)));
    }
    let js = jetstream::new(o.client.clone());
    for (subject, body) in messages {
        let published = match o.delivery {
            Delivery::JetStream => async { js.publish(subject.clone(), body.into()).await?.await }
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Delivery::Direct => o
                .client
                .publish(o.ns.direct(&subject), body.into())
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = published {
            tally.fail(format!("cannot publish junk on {subject}: {e}"));
        }
    }
    if let Err(e) = o.client.flush().await {
        tally.fail(format!("cannot flush the junk: {e}"));
    }
}

/// Bodies that are not what anything expects.
fn junk() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "null",
        "true",
        "[]",
        "42",
        "\"text\"",
        "{\"a\":}",
        "{'single': 'quotes'}",
        "NaN",
        "\u{feff}{}",
        "{\"idempotency_key\": 5, \"input\": {}}",
        "{\"idempotency_key\": \"k\", \"input\": {}, \"extra\": 1}",
        "{\"command_id\": null, \"attempt\": \"one\"}",
        "{\"command_id\": \"x\", \"attempt\": -1, \"outcome\": {\"status\": \"ok\"}}",
        "{\"command_id\": \"x\", \"attempt\": 1, \"outcome\": {\"status\": \"maybe\"}}",
        "{\"command_id\": \"x\", \"attempt\": 99999999999, \"outcome\": {\"status\": \"ok\"}}",
        "{\"saga_id\": 1e999}",
        "name: [unclosed\n  - : :",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, 0xfd, 0x00]); // not UTF-8
    bodies.push(vec![0; 16]); // NUL bytes
    bodies.push("[".repeat(100_000).into_bytes()); // nesting no parser should follow
    let deep = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    bodies.push(format!("{{\"idempotency_key\": \"k\", \"input\": {deep}}}").into_bytes());
    bodies
}

/// The start of `body`, and its size.
fn show(body: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(body).chars().take(40).collect();
    format!("{s:?} ({} bytes)", body.len())
}
