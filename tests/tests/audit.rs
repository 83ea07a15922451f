//! The audit across services, end to end: `skald`, `ledger`, `payment` and
//! `psp-sim` as processes over real NATS, on SQLite and on PostgreSQL. Money
//! sagas run and end; the audit finds every one agreeing. Then each kind of
//! disagreement is made behind the services' backs (a participant's database
//! edited, the provider used directly) and the audit reports each, for its
//! saga and in the window's counts; a participant that is down leaves its
//! steps unchecked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::load::Starter;
use common::money::{ApiTokens, Bus, MoneyWorld, ProviderFaults, skald_cli, skald_with_api};
use common::on_each_backend;
use futures::future::join_all;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use skald_tests::process::{ChildGuard, wait_port};
use skald_tests::{Backend, NATS_URL, TestDb, delete_streams, token};
use std::collections::BTreeMap;
use std::time::Duration;

/// The sagas of the run, by what is done to them afterwards.
const TOPUPS: [(&str, &str); 7] = [
    ("clean", "tok_visa"),
    ("declined_clean", "tok_decline"),
    ("charge_record_deleted", "tok_visa"),
    ("void_reverted", "tok_decline"),
    ("transfer_deleted", "tok_visa"),
    ("charged_again", "tok_visa"),
    ("post_record_edited", "tok_visa"),
];
const REFUNDED_AT_PROVIDER: &str = "refunded_at_provider";
/// Payouts larger than the wallet: the ledger refuses the hold.
const PAYOUTS: [&str; 2] = ["payout_record_invented", "payout_transfer_invented"];

async fn sql(url: &str, statement: &str) {
    let db = Database::connect(url).await.unwrap();
    let done = db.execute_unprepared(statement).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{statement} changed {} rows", done.rows_affected());
    db.close().await.unwrap();
}

async fn audit_of(http: &reqwest::Client, api: &str, token: &str, saga_id: &str) -> Value {
    let answer = http
        .get(format!("{api}/v1/sagas/{saga_id}/audit"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "audit of {saga_id}");
    answer.json().await.unwrap()
}

fn kinds(audit: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = audit["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

async fn audit_across_services(backend: Backend) {
    let orchestrator_db = TestDb::new(backend).await.unwrap();
    let prefix = format!("t{}", token());
    let ns = sagas::protocol::Namespace::new(&prefix).unwrap();
    let mut world =
        MoneyWorld::start(backend, &prefix, &Bus::Open, ProviderFaults::NONE, 1, 1_000).await;

    let tokens = ApiTokens::new();
    let (mut skald, api) = skald_with_api(&prefix, &orchestrator_db.url, None, &tokens);
    let _skald = ChildGuard::spawn("skald", &mut skald).unwrap();
    wait_port(api.rsplit(':').next().unwrap().parse().unwrap(), Duration::from_secs(60)).unwrap();

    let client = async_nats::connect(NATS_URL).await.unwrap();
    let starter = Starter::new(&client, &ns, Duration::from_secs(60)).retrying_unavailable();
    let topup = |card: &str| {
        json!({"wallet_account": "wallet_0", "funding_account": "psp_clearing",
               "amount": 100, "currency": "EUR", "card_token": card})
    };
    let mut jobs: Vec<(String, &str, Value)> = TOPUPS
        .iter()
        .map(|(name, card)| ((*name).to_owned(), "topup", topup(card)))
        .chain(std::iter::once((REFUNDED_AT_PROVIDER.to_owned(), "topup", topup("tok_visa"))))
        .collect();
    for name in PAYOUTS {
        let input = json!({"wallet_account": "wallet_0", "payout_account": "payout_clearing",
                           "amount": 50_000, "currency": "EUR", "bank_account": "DE0001"});
        jobs.push((name.to_owned(), "payout", input));
    }
    let started = join_all(jobs.iter().map(|(name, saga_type, input)| {
        let starter = &starter;
        async move { (name.clone(), starter.start(saga_type, name, input).await) }
    }))
    .await;
    let ids: BTreeMap<String, String> = started.into_iter().collect();

    // Every saga ends as its card and wallet say.
    let http = reqwest::Client::new();
    for (name, id) in &ids {
        let saga: Value = http
            .get(format!("{api}/v1/sagas/{id}?wait=60s"))
            .bearer_auth(&tokens.viewer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = saga["status"].as_str().unwrap_or_default().to_owned();
        let expected = if name.contains("declin") || name == "void_reverted" {
            "compensated"
        } else if name.starts_with("payout") {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(status, expected, "{name} ({id}): {saga}");
    }

    // Before anything is touched, every saga agrees.
    let (code, out, err) = skald_cli(&api, &tokens.viewer, &["audit", "--since", "1h", "--json"]);
    let totals: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(totals["checked"], ids.len(), "{totals}");
    assert_eq!(totals["agreeing"], ids.len(), "{totals:#}");
    assert_eq!(code, 0, "{totals:#}");

    // Each kind of disagreement, made behind the services' backs.
    let (ledger, payment) = (world.ledger_url.clone(), world.payment_url.clone());
    let id = |name: &str| ids[name].clone();
    // The payment service forgets it charged (its inbox row is gone).
    let saga = id("charge_record_deleted");
    sql(&payment, &format!("DELETE FROM skald_inbox WHERE command_id = '{saga}.charge.do'")).await;
    // A voided hold is made pending again: compensated here, in force there.
    let saga = id("void_reverted");
    sql(&ledger, &format!("UPDATE transfers SET state = 'pending' WHERE id = '{saga}-topup'"))
        .await;
    // The held and posted transfer vanishes: ok here, no effect there.
    let saga = id("transfer_deleted");
    sql(&ledger, &format!("DELETE FROM transfers WHERE id = '{saga}-topup'")).await;
    // The post's stored answer is edited to a refusal.
    let saga = id("post_record_edited");
    let reply = json!({"command_id": format!("{saga}.post.do"), "attempt": 1,
                       "outcome": {"status": "failed", "code": "edited", "message": "by hand"}});
    sql(
        &ledger,
        &format!(
            "UPDATE skald_inbox SET reply_json = '{reply}' WHERE command_id = '{saga}.post.do'"
        ),
    )
    .await;
    // A payout the ledger refused: the payment service records one all the same ...
    let saga = id("payout_record_invented");
    let ok = json!({"command_id": format!("{saga}.payout.do"), "attempt": 1,
                    "outcome": {"status": "ok", "output": {}}});
    sql(
        &payment,
        &format!(
            "INSERT INTO skald_inbox (command_id, saga_id, step, kind, reply_json, created_at_ms) \
             VALUES ('{saga}.payout.do', '{saga}', 'payout', 'do', '{ok}', 1)"
        ),
    )
    .await;
    // ... and the ledger holds the money it refused to hold.
    let saga = id("payout_transfer_invented");
    sql(
        &ledger,
        &format!(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, \
             pending, state, created_at_ms) VALUES ('{saga}-payout', 'wallet_0', \
             'payout_clearing', 50000, 'EUR', TRUE, 'pending', 1)"
        ),
    )
    .await;
    // The provider is used directly: a second charge under a saga's reference ...
    let saga = id("charged_again");
    let charged = http
        .post(format!("{}/v1/charges", world.psp_url))
        .header("Idempotency-Key", format!("by-hand-{saga}"))
        .json(
            &json!({"amount": 100, "currency": "EUR", "card_token": "tok_visa", "reference": saga}),
        )
        .send()
        .await
        .unwrap();
    assert!(charged.status().is_success(), "{:?}", charged.text().await);
    // ... and a completed top-up's charge refunded behind the saga's back.
    let saga = id(REFUNDED_AT_PROVIDER);
    let list: Value = http
        .get(format!("{}/v1/charges?reference={saga}", world.psp_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let charge_id = list["charges"][0]["id"].as_str().unwrap().to_owned();
    let refunded = http
        .post(format!("{}/v1/refunds", world.psp_url))
        .header("Idempotency-Key", format!("by-hand-refund-{saga}"))
        .json(&json!({"charge_id": charge_id, "amount": 100}))
        .send()
        .await
        .unwrap();
    assert!(refunded.status().is_success(), "{:?}", refunded.text().await);

    // Each saga's own audit names what was done to it.
    let expected: [(&str, &[&str]); 10] = [
        ("clean", &[]),
        ("declined_clean", &[]),
        ("charge_record_deleted", &["missing_record"]),
        ("void_reverted", &["not_undone"]),
        ("transfer_deleted", &["no_effect", "no_effect"]),
        ("charged_again", &["unexplained_effect"]),
        ("post_record_edited", &["outcome_differs"]),
        (REFUNDED_AT_PROVIDER, &["undone_there"]),
        ("payout_record_invented", &["unexpected_record"]),
        ("payout_transfer_invented", &["unexpected_effect"]),
    ];
    for (name, kinds_expected) in expected {
        let audit = audit_of(&http, &api, &tokens.viewer, &ids[name]).await;
        assert_eq!(kinds(&audit), kinds_expected, "{name}: {audit:#}");
        assert!(audit["unchecked"].as_array().unwrap().is_empty(), "{name}: {audit:#}");
    }

    // The window's audit counts them by kind and exits 1.
    let (code, out, err) = skald_cli(&api, &tokens.viewer, &["audit", "--since", "1h", "--json"]);
    let totals: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(code, 1, "{totals:#}");
    assert_eq!(totals["checked"], ids.len());
    assert_eq!(totals["agreeing"], 2, "{totals:#}");
    assert_eq!(totals["disagreeing"], 8, "{totals:#}");
    let by_kind: BTreeMap<String, u64> = serde_json::from_value(totals["by_kind"].clone()).unwrap();
    let want: BTreeMap<String, u64> = [
        ("missing_record", 1),
        ("outcome_differs", 1),
        ("no_effect", 2),
        ("undone_there", 1),
        ("not_undone", 1),
        ("unexpected_effect", 1),
        ("unexpected_record", 1),
        ("unexplained_effect", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(by_kind, want);
    // Narrowed to a type, only its sagas.
    let (code, out, _) =
        skald_cli(&api, &tokens.viewer, &["audit", "--since", "1h", "--type", "payout"]);
    assert_eq!(code, 1);
    assert!(out.contains("audited 2 sagas of type payout"), "{out}");
    assert!(out.contains("unexpected_record") && !out.contains("not_undone"), "{out}");

    // One saga in the CLI: tables, and the exit status says whether all agree.
    let (code, out, _) = skald_cli(&api, &tokens.viewer, &["sagas", "audit", &ids["clean"]]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every participant agrees"), "{out}");
    let (code, out, _) =
        skald_cli(&api, &tokens.viewer, &["sagas", "audit", &ids["void_reverted"]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not_undone") && out.contains("still in force"), "{out}");

    // A participant that can answer only in part leaves its steps unchecked:
    // without the provider, the payment service cannot say what it holds.
    world.stop("psp-sim");
    let audit = audit_of(&http, &api, &tokens.viewer, &ids["clean"]).await;
    assert_eq!(audit["unchecked"][0]["participant"], "payment", "{audit:#}");
    let reason = audit["unchecked"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("provider could not be asked"), "{reason}");
    let charge = &audit["steps"][1];
    assert_eq!((&charge["step"], &charge["verdict"]), (&json!("charge"), &json!("unchecked")));
    assert!(kinds(&audit).is_empty(), "{audit:#}");

    // A participant that is down leaves its steps unchecked, never "agrees".
    world.stop("payment");
    let audit = audit_of(&http, &api, &tokens.viewer, &ids["clean"]).await;
    assert_eq!(audit["unchecked"][0]["participant"], "payment", "{audit:#}");
    let (code, out, _) = skald_cli(&api, &tokens.viewer, &["sagas", "audit", &ids["clean"]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not checked: payment"), "{out}");

    delete_streams(&client, &ns).await;
}

on_each_backend!(audit_across_services: audit_across_services_sqlite, audit_across_services_postgres);
