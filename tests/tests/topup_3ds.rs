//! The 3-D Secure top-up end to end: `skald`, `ledger`, `payment` (taking
//! the provider's webhooks) and `psp-sim` (answering 3-D Secure cards
//! `pending`, then a webhook after a seeded delay; some webhooks lost, some
//! sent twice) as processes over real NATS, on SQLite and PostgreSQL. Large
//! top-ups are reviewed first (a flagged card is refused there); the card is
//! screened beside the ledger's hold (a sanctioned one is refused); a failed
//! challenge, a declined card or a lost webhook turn the saga back. Afterwards
//! every saga ended as its card says, the ledger verifies, the provider holds
//! at most one charge per saga, and charged − refunded is what completed
//! top-ups took. 1,000 sagas on each database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::load::Starter;
use common::money::{Bus, MoneyWorld, ProviderFaults, ledger, provider_net_comes_to};
use common::on_each_backend;
use common::processes::skald_serve;
use futures::future::join_all;
use orchestrator::store::Store;
use serde_json::json;
use skald_testkit::fixtures;
use skald_tests::process::{ChildGuard, free_port};
use skald_tests::{Backend, NATS_URL, PARTITIONS, TestDb, definitions_dir, delete_streams, token};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SAGAS: usize = 1_000;
/// How long a saga waits for its webhook in this test (30 minutes shipped).
const WAIT: &str = "6s";

/// The card and amount of saga `i`, and how it must end (`None`: completed,
/// or compensated when its webhook was lost).
fn sample(i: usize) -> (&'static str, i64, Option<&'static str>) {
    match i % 10 {
        0..=4 => ("tok_3ds", 100 + i as i64, None),
        5 => ("tok_3ds_fail", 200, Some("compensated")),
        6 => ("tok_decline", 300, Some("compensated")),
        7 => ("tok_fraud", 60_000, Some("compensated")),
        8 => ("tok_3ds", 70_000, None),
        // Screening (beside the hold) refuses the card: the hold is voided.
        _ if i % 20 == 19 => ("tok_sanctioned", 500, Some("compensated")),
        _ => ("tok_visa", 400, Some("completed")),
    }
}

async fn topup_3ds(backend: Backend) {
    let orchestrator_db = TestDb::new(backend).await.unwrap();
    let prefix = format!("t{}", token());
    let ns = sagas::protocol::Namespace::new(&prefix).unwrap();
    let hook_port = free_port().unwrap();
    let hook_addr = format!("127.0.0.1:{hook_port}");
    let webhook_url = format!("http://{hook_addr}/webhooks/psp");
    let psp_args = [
        "--webhook-url",
        &webhook_url,
        "--challenge-min-ms",
        "50",
        "--challenge-max-ms",
        "800",
        "--webhook-loss-rate",
        "0.05",
        "--webhook-duplicate-rate",
        "0.2",
    ];
    let world = MoneyWorld::start_with(
        backend,
        &prefix,
        &Bus::Open,
        ProviderFaults::NONE,
        4,
        1_000,
        &psp_args,
        &["--webhook-addr", &hook_addr],
    )
    .await;

    // The shipped definition, waiting seconds instead of minutes.
    let shipped = std::fs::read_to_string(fixtures::shipped("topup_3ds.yaml")).unwrap();
    let quick = shipped
        .replace("timeout: 30m", &format!("timeout: {WAIT}"))
        .replace("deadline: 35m", "deadline: 1m");
    assert_ne!(quick, shipped, "the wait was shortened");
    let defs = definitions_dir(&[("topup_3ds.yaml", &quick)]).unwrap();
    let mut skald = skald_serve(NATS_URL, &prefix, &orchestrator_db.url, PARTITIONS, &defs);
    skald.args(["--http-addr", "off"]).env("RUST_LOG", "error");
    let _skald = ChildGuard::spawn("skald", &mut skald).unwrap();

    let client = async_nats::connect(NATS_URL).await.unwrap();
    let starter = Starter::new(&client, &ns, Duration::from_secs(60)).retrying_unavailable();
    let mut ids = Vec::with_capacity(SAGAS);
    for chunk in (0..SAGAS).collect::<Vec<_>>().chunks(50) {
        let started = join_all(chunk.iter().map(|&i| {
            let starter = &starter;
            async move {
                let (card, amount, _) = sample(i);
                let input = json!({"wallet_account": format!("wallet_{}", i % 4),
                    "funding_account": "psp_clearing", "amount": amount, "currency": "EUR",
                    "card_token": card});
                (i, starter.start("topup_3ds", &format!("3ds-{i}"), &input).await)
            }
        }))
        .await;
        ids.extend(started);
    }

    let store = Store::connect(&orchestrator_db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ended: HashMap<usize, String> = HashMap::new();
    for (i, id) in &ids {
        loop {
            let status = store.load(id).await.unwrap().expect("no saga lost").row.status;
            if ["completed", "compensated", "failed", "parked"].contains(&status.as_str()) {
                ended.insert(*i, status);
                break;
            }
            assert!(Instant::now() < deadline, "saga {id} (#{i}) still {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut by: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, status) in &ended {
        let (card, _, expected) = sample(*i);
        if let Some(expected) = expected {
            assert_eq!(status, expected, "saga #{i} with {card}");
        } else {
            assert!(["completed", "compensated"].contains(&status.as_str()), "#{i}: {status}");
        }
        *by.entry((card, status.as_str())).or_default() += 1;
    }
    println!("{backend:?}: {by:?}");
    let completed_3ds = by.get(&("tok_3ds", "completed")).copied().unwrap_or(0);
    assert!(completed_3ds > SAGAS / 2, "most 3-D Secure top-ups complete: {by:?}");

    ledger(&world.ledger_url, &["verify", "--pending-older-than", "0ms"]);
    let completed: i64 =
        ended.iter().filter(|(_, s)| *s == "completed").map(|(i, _)| sample(*i).1).sum();
    provider_net_comes_to(&world.psp_url, completed).await;
    delete_streams(&client, &ns).await;
    let _ = std::fs::remove_dir_all(defs);
}

on_each_backend!(topup_3ds: topup_3ds_sqlite, topup_3ds_postgres);
