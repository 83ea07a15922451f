//! The HTTP API through its router (no socket): every route, its role, and its
//! errors, on SQLite and (for the queries) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::Engine;
use orchestrator::api::{Role, Tokens};
use sagas::machine::Input;
use sagas::protocol::{Outcome, Reply};
use serde_json::{Value, json};
use skald_testkit::Backend;
use std::time::{Duration, SystemTime};

/// Two steps on participant `bank`; the tests also post it to the API.
const DEFINITION: &str = include_str!("fixtures/transfer.yaml");

const VIEWER: &str = "viewer-token";
const OPERATOR: &str = "operator-token";
const ADMIN: &str = "admin-token";
const EXPIRED: &str = "expired-token";

struct Api {
    app: Router,
    engine: Engine,
}

async fn api_on(backend: Backend) -> Api {
    let engine = Engine::new(backend, &[DEFINITION]).await;
    let mut tokens = Tokens::none();
    tokens.insert("vera", Role::Viewer, VIEWER, None);
    tokens.insert("otto", Role::Operator, OPERATOR, None);
    tokens.insert("ada", Role::Admin, ADMIN, None);
    tokens.insert("old", Role::Admin, EXPIRED, Some(SystemTime::now() - Duration::from_secs(1)));
    Api { app: engine.router(tokens, "test-1"), engine }
}

async fn api() -> Api {
    api_on(Backend::Sqlite).await
}

/// Two tests of one check, named `$sqlite` and `$postgres`: `$check` runs on
/// an API over each database.
macro_rules! on_each_backend {
    ($check:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $check(api_on(Backend::Sqlite).await).await;
        }

        #[tokio::test]
        async fn $postgres() {
            $check(api_on(Backend::Postgres).await).await;
        }
    };
}

impl Api {
    async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, bytes) = common::send(&self.app, req).await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.call(req.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.call(req.body(Body::from(body.to_string())).unwrap()).await
    }

    async fn post_text(&self, path: &str, token: &str, text: &str) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/yaml")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(text.to_owned()))
            .unwrap();
        self.call(req).await
    }

    async fn start(&self, key: &str, amount: i64) -> String {
        let (status, v) = self
            .post(
                "/v1/sagas",
                Some(OPERATOR),
                json!({"type": "transfer", "input": {"amount": amount}, "idempotency_key": key}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["saga_id"].as_str().unwrap().to_owned()
    }

    /// Answer the first attempt of `step`'s command of saga `id`, as its
    /// participant would.
    async fn reply(&self, id: &str, step: &str, outcome: Outcome) {
        let reply = Reply { command_id: format!("{id}.{step}.do"), attempt: 1, outcome };
        self.engine.driver.handle(id, &Input::Reply(reply)).await.unwrap();
    }
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test]
async fn health_is_open_and_everything_else_needs_a_valid_token() {
    let api = api().await;
    assert_eq!(api.get("/healthz", None).await.0, StatusCode::OK);
    let (status, v) = api.get("/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["partitions_owned"], 4);

    let req = Request::get("/v1/sagas").body(Body::empty()).unwrap();
    let (status, headers, _) = common::send(&api.app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    for token in [None, Some("forged"), Some(EXPIRED), Some("")] {
        for path in ["/v1/sagas", "/v1/overview", "/v1/definitions", "/metrics", "/v1/bulk"] {
            let (status, v) = api.get(path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
            assert_error(&v, "unauthorized");
        }
    }
    let req = Request::get("/v1/sagas")
        .header(header::AUTHORIZATION, format!("Basic {VIEWER}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.call(req).await.0, StatusCode::UNAUTHORIZED, "only bearer tokens");
    assert_eq!(api.get("/v1/sagas", Some(VIEWER)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_write_route_declares_its_role() {
    let api = api().await;
    let id = api.start("k-role", 5).await;
    let start = json!({"type": "transfer", "input": {"amount": 1}, "idempotency_key": "x"});
    let (status, v) = api.post("/v1/sagas", Some(VIEWER), start.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden");
    assert!(v["error"]["message"].as_str().unwrap().contains("operator"), "{v}");
    let abort = json!({"reason": "test"});
    let path = format!("/v1/sagas/{id}/abort");
    assert_eq!(api.post(&path, Some(VIEWER), abort.clone()).await.0, StatusCode::FORBIDDEN);
    let bulk = json!({"action": "abort", "reason": "r", "dry_run": true});
    assert_eq!(api.post("/v1/bulk", Some(VIEWER), bulk).await.0, StatusCode::FORBIDDEN);
    let (status, v) = api.post_text("/v1/definitions", OPERATOR, DEFINITION).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("admin"), "{v}");
    // The operator may do what the viewer may not.
    assert_eq!(api.post(&path, Some(OPERATOR), abort).await.0, StatusCode::OK);
}

#[tokio::test]
async fn starts_are_idempotent_and_bad_input_is_refused_with_details() {
    let api = api().await;
    let body = json!({"type": "transfer", "input": {"amount": 7}, "idempotency_key": "order-1"});
    let (status, first) = api.post("/v1/sagas", Some(OPERATOR), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["created"], true);
    let (status, again) = api.post("/v1/sagas", Some(OPERATOR), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["saga_id"], first["saga_id"]);
    assert_eq!(again["created"], false);

    let other = json!({"type": "transfer", "input": {"amount": 8}, "idempotency_key": "order-1"});
    let (status, v) = api.post("/v1/sagas", Some(OPERATOR), other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&v, "idempotency_conflict");

    let unknown = json!({"type": "nope", "input": {}, "idempotency_key": "k"});
    let (status, v) = api.post("/v1/sagas", Some(OPERATOR), unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["message"].as_str().unwrap().contains("transfer"), "lists known: {v}");

    let bad = json!({"type": "transfer", "input": {"amount": "lots"}, "idempotency_key": "k2"});
    let (status, v) = api.post("/v1/sagas", Some(OPERATOR), bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!v["error"]["details"].as_array().unwrap().is_empty(), "{v}");

    let empty_key = json!({"type": "transfer", "input": {"amount": 1}, "idempotency_key": ""});
    assert_eq!(
        api.post("/v1/sagas", Some(OPERATOR), empty_key).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let extra = json!({"type": "transfer", "input": {"amount": 1}, "idempotency_key": "z", "x": 1});
    assert_eq!(
        api.post("/v1/sagas", Some(OPERATOR), extra).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Malformed JSON, the wrong content type, and an oversized body.
    let req = Request::post("/v1/sagas")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .body(Body::from("{\"type\": "))
        .unwrap();
    let (status, v) = api.call(req).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&v, "invalid");
    let req = Request::post("/v1/sagas")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(api.call(req).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = "x".repeat(2 * 1024 * 1024);
    let req = Request::post("/v1/sagas")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .body(Body::from(format!("{{\"type\":\"{huge}\"}}")))
        .unwrap();
    let (status, v) = api.call(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_error(&v, "too_large");
}

#[tokio::test]
async fn one_saga_shows_its_steps_history_commands_and_replies() {
    let api = api().await;
    let id = api.start("show-1", 3).await;
    api.reply(&id, "reserve", Outcome::Ok { output: json!({"hold": "h1"}) }).await;
    let (status, v) = api.get(&format!("/v1/sagas/{id}"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["saga_id"], id.as_str());
    assert_eq!(v["status"], "running");
    assert_eq!(v["current_step"], "confirm");
    assert_eq!(v["owner"], "test-1");
    assert_eq!(v["input"]["amount"], 3);
    assert_eq!(v["steps"][0]["result"], "succeeded");
    assert_eq!(v["steps"][0]["output"]["hold"], "h1");
    assert_eq!(v["steps"][1]["do"]["waiting"], "reply");
    let types: Vec<&str> =
        v["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["saga_started", "command_sent", "step_succeeded", "command_sent"]);
    let seqs: Vec<i64> =
        v["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(v["commands"].as_array().unwrap().len(), 2);
    assert_eq!(v["replies"][0]["outcome"], "ok");

    let (status, v) = api.get("/v1/sagas/0190aaaa-0000-7000-8000-000000000000", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (status, _) = api.get("/v1/sagas/%27%3B%20DROP%20TABLE%20sagas%3B--", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = api.get("/v1/nothing-here", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
}

async fn list_filters_and_pages(api: Api) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.start(&format!("page-{i}"), i + 1).await);
    }
    api.start("other-key", 9).await;
    // Newest first, two per page, stable while a new saga is started.
    let (status, p1) = api.get("/v1/sagas?key=page-&limit=2", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{p1}");
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    api.start("page-new", 1).await;
    let (_, p2) =
        api.get(&format!("/v1/sagas?key=page-&limit=2&cursor={cursor}"), Some(VIEWER)).await;
    let cursor = p2["next_cursor"].as_str().unwrap().to_owned();
    let (_, p3) =
        api.get(&format!("/v1/sagas?key=page-&limit=2&cursor={cursor}"), Some(VIEWER)).await;
    assert!(p3["next_cursor"].is_null(), "{p3}");
    let seen: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().iter())
        .map(|s| s["saga_id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every saga once, newest first, the new one not shifting pages");

    // The key filter treats LIKE wildcards as text.
    let (_, v) = api.get("/v1/sagas?key=%25", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = api.get("/v1/sagas?type=transfer&status=running&step=reserve", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 7);
    let (_, v) = api.get("/v1/sagas?status=completed", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    let (_, v) = api.get("/v1/sagas?older_than=1h", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    let (_, v) = api.get("/v1/sagas?newer_than=1h", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 7);

    for bad in [
        "limit=0",
        "limit=201",
        "status=done",
        "stuck=wedged",
        "older_than=soon",
        "cursor=%27or%201%3D1",
        "colour=red",
    ] {
        let (status, v) = api.get(&format!("/v1/sagas?{bad}"), Some(VIEWER)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_error(&v, "invalid");
    }
}

on_each_backend!(
    list_filters_and_pages: lists_filter_and_page_stably_on_sqlite,
    lists_filter_and_page_stably_on_postgres
);

async fn stuck_sagas_are_classified(api: Api) {
    let calm = api.start("calm", 1).await;
    let shaky = api.start("shaky", 2).await;
    let busy = Outcome::retry("busy", "bank busy");
    api.reply(&shaky, "reserve", busy).await;
    let (_, v) = api.get("/v1/sagas?stuck=retrying", Some(VIEWER)).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["saga_id"], shaky.as_str());
    let detail = items[0]["stuck"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("of 4") && detail.contains("bank busy"), "{detail}");
    let (_, v) = api.get("/v1/sagas?stuck=any", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = api.get(&format!("/v1/sagas/{calm}"), Some(VIEWER)).await;
    assert_eq!(v["stuck"].as_array().unwrap().len(), 0);

    let (status, o) = api.get("/v1/overview", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["by_status"]["running"], 2);
    assert_eq!(o["by_type"]["transfer"]["running"], 2);
    assert_eq!(o["stuck"]["retrying"], 1);
    assert_eq!(o["stuck_total"], 1);
}

on_each_backend!(
    stuck_sagas_are_classified: stuck_sagas_are_classified_on_sqlite,
    stuck_sagas_are_classified_on_postgres
);

#[tokio::test]
async fn repairs_are_recorded_with_who_and_why_and_are_idempotent() {
    let api = api().await;
    let id = api.start("repair-1", 4).await;
    let other = api.start("repair-2", 4).await;
    let path = format!("/v1/sagas/{id}/abort");

    let (status, v) = api.post(&path, Some(OPERATOR), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a reason is required: {v}");
    let (status, v) = api.post(&format!("/v1/sagas/{id}/resume"), Some(OPERATOR), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing to resume: {v}");
    assert_error(&v, "not_now");
    let (status, _) = api.post(&format!("/v1/sagas/{id}/explode"), Some(OPERATOR), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        api.post(&format!("/v1/sagas/{id}/resolve"), Some(OPERATOR), json!({"reason": "r"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "resolve needs an outcome");

    let body = json!({"reason": "customer cancelled", "request_id": "req-1"});
    let (status, first) = api.post(&path, Some(OPERATOR), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "compensating");
    assert_eq!(first["replayed"], false);
    let (status, again) = api.post(&path, Some(OPERATOR), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["events"], first["events"]);
    let (status, v) = api.post(&format!("/v1/sagas/{other}/abort"), Some(OPERATOR), body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&v, "request_reused");

    // Recorded once, with who and why.
    let (_, v) = api.get(&format!("/v1/sagas/{id}"), Some(VIEWER)).await;
    let events = v["events"].as_array().unwrap();
    let aborted: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "compensation_started").collect();
    assert_eq!(aborted.len(), 1, "{v}");
    assert_eq!(aborted[0]["event"]["cause"]["by"], "otto");
    assert_eq!(aborted[0]["event"]["cause"]["reason"], "customer cancelled");
}

#[tokio::test]
async fn bulk_repairs_preview_then_run_as_a_job() {
    let api = api().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(api.start(&format!("bulk-{i}"), 1).await);
    }
    let keep = api.start("keep-me", 1).await;
    let filter = json!({"key": "bulk-"});
    let dry_abort = |reason: &str| json!({"action": "abort", "filter": filter, "reason": reason, "dry_run": true});
    let (status, preview) = api.post("/v1/bulk", Some(OPERATOR), dry_abort("bank outage")).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["matched"], 4);
    assert_eq!(preview["would_change"].as_array().unwrap().len(), 4);
    // Nothing changed.
    let (_, v) = api.get("/v1/sagas?status=compensating", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);

    let body = json!({
        "action": "abort", "filter": filter, "reason": "bank outage",
        "rate_per_second": 1000, "request_id": "outage-1",
    });
    let (status, job) = api.post("/v1/bulk", Some(OPERATOR), body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["total"], 4);
    let mut done = Value::Null;
    for _ in 0..100 {
        let (_, j) = api.get("/v1/bulk/outage-1", Some(VIEWER)).await;
        if j["state"] == "done" {
            done = j;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["succeeded"], 4, "{done}");
    assert_eq!(done["failed_count"], 0);
    let (_, again) = api.post("/v1/bulk", Some(OPERATOR), body).await;
    assert_eq!(again["job_id"], "outage-1", "the same request id is the same job");
    for id in &ids {
        let (_, v) = api.get(&format!("/v1/sagas/{id}"), Some(VIEWER)).await;
        assert_eq!(v["status"], "compensating");
    }
    let (_, v) = api.get(&format!("/v1/sagas/{keep}"), Some(VIEWER)).await;
    assert_eq!(v["status"], "running");

    // A second abort of the same sagas fails per saga and says why.
    let (_, job) = api.post("/v1/bulk", Some(OPERATOR), dry_abort("again")).await;
    assert_eq!(job["would_fail"].as_array().unwrap().len(), 4, "{job}");
    for bad in [
        json!({"action": "abort", "reason": "r", "max_sagas": 0}),
        json!({"action": "abort", "reason": "r", "rate_per_second": 5000}),
        json!({"action": "melt", "reason": "r"}),
        json!({"action": "abort", "reason": "r", "filter": {"status": "bogus"}}),
        json!({"action": "abort", "reason": "r", "request_id": "no spaces"}),
    ] {
        let (status, v) = api.post("/v1/bulk", Some(OPERATOR), bad.clone()).await;
        assert!(status.is_client_error(), "{bad}: {status} {v}");
    }
    assert_eq!(api.get("/v1/bulk/nope", Some(VIEWER)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn definitions_are_listed_validated_and_registered_by_admins() {
    let api = api().await;
    let (status, v) = api.get("/v1/definitions", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v[0]["name"], "transfer");
    assert_eq!(v[0]["newest"], true);
    let (status, v) = api.get("/v1/definitions/transfer", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["definition"]["steps"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(api.get("/v1/definitions/nope", Some(VIEWER)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/v1/definitions/transfer?version=9", Some(VIEWER)).await.0,
        StatusCode::NOT_FOUND
    );

    let broken = DEFINITION.replace("participant: bank\n    action: confirm", "action: confirm");
    let (status, v) = api.post_text("/v1/definitions/validate", VIEWER, &broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(!v["error"]["details"].as_array().unwrap().is_empty());
    let (status, v) = api.post_text("/v1/definitions/validate", VIEWER, DEFINITION).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let v2 = DEFINITION.replace("version: 1", "version: 2");
    let (status, v) = api.post_text("/v1/definitions", ADMIN, &v2).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(api.post_text("/v1/definitions", ADMIN, &v2).await.0, StatusCode::OK);
    let changed = v2.replace("Two steps", "Changed");
    let (status, v) = api.post_text("/v1/definitions", ADMIN, &changed).await;
    assert_eq!(status, StatusCode::CONFLICT, "same version, other content: {v}");
    let (_, v) = api.get("/v1/definitions/transfer", Some(VIEWER)).await;
    assert_eq!(v["version"], 2);
    // New starts use version 2.
    let id = api.start("after-v2", 1).await;
    let (_, v) = api.get(&format!("/v1/sagas/{id}"), Some(VIEWER)).await;
    assert_eq!(v["definition_version"], 2);
}

#[tokio::test]
async fn the_openapi_document_docs_and_metrics_are_served() {
    let api = api().await;
    let (status, doc) = api.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/sagas",
        "/v1/sagas/{saga_id}",
        "/v1/sagas/{saga_id}/{action}",
        "/v1/bulk",
        "/v1/sagas/{saga_id}/events/{name}",
        "/v1/events/{name}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (status, page) = api.get("/docs/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("swagger"), "Swagger UI from the binary");
    api.start("metrics-1", 1).await;
    let (status, text) = api.get("/metrics", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("skald_sagas_started"), "{text}");
}

async fn outcomes_tags_and_waits(api: Api) {
    let first = api.start("outcome-1", 3).await;
    let second = api.start("outcome-2", 4).await;

    // Tags are stored at start, listed and filtered on.
    let (status, v) = api.get("/v1/sagas?tag.amount=3", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["saga_id"], first.as_str());
    assert_eq!(items[0]["tags"], json!({"amount": "3"}));
    let (_, v) = api.get("/v1/sagas?tag.amount=3&tag.other=x&limit=5", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    let (status, v) = api.get("/v1/sagas?tag.bad%20name=1", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = api.get("/v1/sagas?tag.amount=", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an empty tag never widens a filter: {v}");
    let (status, v) = api.get("/v1/sagas?nonsense=1", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // A wait that runs out answers with the saga as it is.
    let began = std::time::Instant::now();
    let (status, v) = api.get(&format!("/v1/sagas/{second}?wait=300ms"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "running");
    assert!(began.elapsed() >= Duration::from_millis(300), "{:?}", began.elapsed());
    let (status, v) = api.get(&format!("/v1/sagas/{second}?wait=61s"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // A wait answers as soon as the saga ends, with its output.
    let driver = api.engine.driver.clone();
    let id = first.clone();
    let replies = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (step, output) in [("reserve", json!({"hold": "h1"})), ("confirm", json!({}))] {
            let reply = Reply {
                command_id: format!("{id}.{step}.do"),
                attempt: 1,
                outcome: Outcome::Ok { output },
            };
            driver.handle(&id, &Input::Reply(reply)).await.unwrap();
        }
    });
    let began = std::time::Instant::now();
    let (status, v) = api.get(&format!("/v1/sagas/{first}?wait=20s"), Some(VIEWER)).await;
    replies.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"], json!({"hold": "h1", "amount": 3}));
    assert_eq!(v["tags"], json!({"amount": "3"}));
    assert!(began.elapsed() < Duration::from_secs(10), "woken late: {:?}", began.elapsed());

    // A start that waits, and one whose wait runs out.
    let (status, v) = api
        .post(
            "/v1/sagas?wait=200ms",
            Some(OPERATOR),
            json!({"type": "transfer", "input": {"amount": 9}, "idempotency_key": "outcome-3"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["outcome"], json!({"status": "running", "ended": false}));
    let (status, v) = api
        .post(
            "/v1/sagas?wait=1s",
            Some(OPERATOR),
            json!({"type": "transfer", "input": {"amount": 3}, "idempotency_key": "outcome-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"]["output"], json!({"hold": "h1", "amount": 3}));

    // The end is queued for `<prefix>.ended.transfer`, once, with the same facts.
    use orchestrator::store::entities::outbox;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let ended = outbox::Entity::find()
        .filter(outbox::Column::Subject.ends_with(".ended.transfer"))
        .all(api.engine.driver.store().db())
        .await
        .unwrap();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let message: sagas::protocol::SagaEnded = serde_json::from_str(&ended[0].body).unwrap();
    assert_eq!(message.saga_id, first);
    assert_eq!(message.outcome.status, "completed");
    assert_eq!(message.outcome.output, Some(json!({"hold": "h1", "amount": 3})));
    assert_eq!(message.tags.get("amount").map(String::as_str), Some("3"));
    assert_eq!(ended[0].msg_id, format!("{first}.ended"));
}

on_each_backend!(outcomes_tags_and_waits: outcomes_tags_and_waits_sqlite, outcomes_tags_and_waits_postgres);

/// The bulk job `id`, once done.
async fn finished_job(api: &Api, id: &str) -> Value {
    for _ in 0..200 {
        let (_, j) = api.get(&format!("/v1/bulk/{id}"), Some(VIEWER)).await;
        if j["state"] == "done" {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bulk job {id} did not finish");
}

async fn running_sagas_move_to_a_compatible_version(api: Api) {
    let at_confirm = api.start("evolve-1", 3).await;
    api.reply(&at_confirm, "reserve", Outcome::Ok { output: json!({"hold": "h1"}) }).await;
    let at_reserve = api.start("evolve-2", 4).await;
    // v2 adds a step after the two; v3 changes the compensation of `reserve`,
    // which both sagas have reached.
    let notify =
        "  - name: notify\n    participant: bank\n    action: notify\n    compensation: unnotify\n";
    let v2 = format!("{}{notify}", DEFINITION.replace("version: 1", "version: 2"))
        .replace("tags:\n", "tags:\n  kind: \"t-{{saga.type}}\"\n");
    let v3 = DEFINITION
        .replace("version: 1", "version: 3")
        .replace("compensation: release", "compensation: release_all");

    let (status, _) = api.post_text("/v1/definitions/check", VIEWER, &v3).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reading every history is for operators");
    let (status, v) = api.post_text("/v1/definitions/check", OPERATOR, &v3).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let c = &v["compatibility"];
    assert_eq!((c["running"].as_u64(), c["compatible"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(c["incompatible"]["step_changed"], 2, "{v}");
    assert_eq!(c["examples"].as_array().unwrap().len(), 2, "{v}");
    let (status, v) = api.post_text("/v1/definitions", ADMIN, &v2).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["compatibility"]["compatible"], 2, "registering tells what could move: {v}");

    // Registering changed nothing for them: they run v1 until moved.
    let (_, v) = api.get(&format!("/v1/sagas/{at_confirm}"), Some(VIEWER)).await;
    assert_eq!(v["definition_version"], 1);
    let migrate = |to: u32, dry_run: bool, request: &str| json!({"to_version": to, "reason": "notify the customer", "dry_run": dry_run, "request_id": request});
    let path = format!("/v1/sagas/{at_confirm}/migrate");
    let (status, v) = api.post(&path, Some(OPERATOR), migrate(2, true, "m-0")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = api.get(&format!("/v1/sagas/{at_confirm}"), Some(VIEWER)).await;
    assert_eq!(v["definition_version"], 1, "a dry run moves nothing");
    let (status, v) = api.post(&path, Some(OPERATOR), migrate(9, false, "m-1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = api.post(&path, Some(VIEWER), migrate(2, false, "m-2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = api.post(&path, Some(OPERATOR), migrate(2, false, "m-3")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["events"], json!(["definition_changed"]));

    // v3 is registered too; moving to it is refused: its history is not v3's.
    assert_eq!(api.post_text("/v1/definitions", ADMIN, &v3).await.0, StatusCode::CREATED);
    let other = format!("/v1/sagas/{at_reserve}/migrate");
    let (status, v) = api.post(&other, Some(OPERATOR), migrate(3, false, "m-4")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "incompatible");

    // The rest by a bulk move: the moved one fails (already on v2), the other moves.
    let bulk = |dry_run: bool| {
        json!({"action": "migrate", "to_version": 2, "filter": {"key": "evolve-"},
               "reason": "notify the customer", "dry_run": dry_run, "rate_per_second": 1000,
               "request_id": "evolve-job"})
    };
    let (status, preview) = api.post("/v1/bulk", Some(OPERATOR), bulk(true)).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["would_change"].as_array().unwrap().len(), 1, "{preview}");
    assert_eq!(preview["would_fail"].as_array().unwrap().len(), 1, "{preview}");
    let (status, job) = api.post("/v1/bulk", Some(OPERATOR), bulk(false)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let done = finished_job(&api, "evolve-job").await;
    assert_eq!(
        (done["succeeded"].as_u64(), done["failed_count"].as_u64()),
        (Some(1), Some(1)),
        "{done}"
    );

    // Moved, each runs v2's remaining steps: after `confirm` comes `notify`.
    api.reply(&at_confirm, "confirm", Outcome::Ok { output: json!({}) }).await;
    let (_, v) = api.get(&format!("/v1/sagas/{at_confirm}"), Some(VIEWER)).await;
    assert_eq!(v["definition_version"], 2, "{v}");
    assert_eq!(v["current_step"], "notify", "{v}");
    assert_eq!(v["tags"], json!({"amount": "3", "kind": "t-transfer"}), "v2's tags: {v}");
    let types: Vec<&str> =
        v["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"definition_changed"), "{types:?}");
    let (_, v) = api.get(&format!("/v1/sagas/{at_reserve}"), Some(VIEWER)).await;
    assert_eq!(v["definition_version"], 2, "{v}");
}

on_each_backend!(
    running_sagas_move_to_a_compatible_version:
    running_sagas_move_to_a_compatible_version_sqlite,
    running_sagas_move_to_a_compatible_version_postgres
);

async fn retention_archives_ended_sagas_and_the_api_says_where(api: Api) {
    use orchestrator::retention::{self, Retention};
    let done = api.start("keep-1", 3).await;
    api.reply(&done, "reserve", Outcome::Ok { output: json!({"hold": "h1"}) }).await;
    api.reply(&done, "confirm", Outcome::Ok { output: json!({}) }).await;
    let failed = api.start("keep-2", 4).await;
    let refused = Outcome::Failed { code: "no".into(), message: "refused".into() };
    api.reply(&failed, "reserve", refused).await;
    let running = api.start("keep-3", 5).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let dir = std::env::temp_dir().join(format!("skald-archive-{}", uuid::Uuid::new_v4()));
    let policy = Retention { keep: Duration::ZERO, dir: dir.clone() };
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = &api.engine.driver;
    assert_eq!(retention::pass(driver, &policy, &stop).await.unwrap(), 2);
    assert_eq!(retention::pass(driver, &policy, &stop).await.unwrap(), 0, "nothing twice");

    // The archive holds both, whole; the database only the running one.
    let lines = skald_testkit::fixtures::gz_json_lines(&dir);
    let mut archived: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["saga_id"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    archived.sort_unstable();
    let mut expected = vec![(done.as_str(), "completed"), (failed.as_str(), "failed")];
    expected.sort_unstable();
    assert_eq!(archived, expected);
    let completed = lines.iter().find(|l| l["saga_id"] == done.as_str()).unwrap();
    assert_eq!(completed["tags"], json!({"amount": "3"}));
    let events = completed["events"].as_array().unwrap();
    assert_eq!(events.first().unwrap()["event"]["type"], "saga_started");
    assert_eq!(events.last().unwrap()["event"]["type"], "saga_completed");

    let (status, v) = api.get(&format!("/v1/sagas/{done}"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::GONE, "{v}");
    assert_error(&v, "gone");
    assert!(v["error"]["message"].as_str().unwrap().contains("archived on"), "{v}");
    let (status, _) = api.get(&format!("/v1/sagas/{done}?wait=1s"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::GONE);
    let (status, v) = api.get(&format!("/v1/sagas/{running}"), Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = api.get("/v1/sagas?tag.amount=3", Some(VIEWER)).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "its tags went with it: {v}");
    let metrics = api.engine.driver.metrics().render();
    assert!(metrics.contains("skald_sagas_archived_total 2"), "{metrics}");

    // Its key still names it: the same start is answered, another is refused.
    let again = |amount: i64| json!({"type": "transfer", "input": {"amount": amount}, "idempotency_key": "keep-1"});
    let (status, v) = api.post("/v1/sagas?wait=1s", Some(OPERATOR), again(3)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["saga_id"], done.as_str());
    assert_eq!(v["outcome"]["status"], "completed", "{v}");
    assert_eq!(v["outcome"]["cause"]["cause"], "archived", "{v}");
    let (status, v) = api.post("/v1/sagas", Some(OPERATOR), again(4)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    std::fs::remove_dir_all(&dir).unwrap();
}

on_each_backend!(
    retention_archives_ended_sagas_and_the_api_says_where:
    retention_archives_ended_sagas_sqlite,
    retention_archives_ended_sagas_postgres
);

async fn whole_sagas_are_read_within_a_size(api: Api) {
    for key in ["size-1", "size-2", "size-3"] {
        api.start(key, 1).await;
    }
    let store = api.engine.driver.store();
    let filter = orchestrator::store::ListFilter::default();
    let rows = store.list(&filter, None, 10, 0, &[]).await.unwrap().rows;
    assert_eq!(store.whole_within(rows.clone(), i64::MAX).await.unwrap().len(), 3);
    let one = store.whole_within(rows.clone(), 1).await.unwrap();
    assert_eq!(one.len(), 1, "the first always, however long");
    assert_eq!(one[0].row.saga_id, rows[0].saga_id);
    assert!(one[0].events.len() >= 2, "with its history");
}

on_each_backend!(
    whole_sagas_are_read_within_a_size:
    whole_sagas_are_read_within_a_size_sqlite,
    whole_sagas_are_read_within_a_size_postgres
);
