//! The `ledger` participant over real NATS JetStream, on SQLite and
//! PostgreSQL: `hold`, `post` and `void` commands published as the
//! orchestrator does, their replies, and one effect per command however
//! often it is delivered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Bus, TestDb, balances, bank_and_wallet, ledger_on};
use ledger::store::Store;
use ledger::verify::{VerifyOptions, verify};
use sagas::protocol::{Command, Kind, Outcome};
use serde_json::{Value, json};
use std::collections::HashMap;

on_both_databases!(
    a_hold_is_posted_once_and_duplicates_get_the_same_reply,
    a_void_releases_the_hold_once,
    refusals_are_failed_replies_with_their_code,
    concurrent_hold_commands_never_overdraw_a_wallet,
);

/// A ledger where `alice` holds 1000 EUR cents, with its participant running.
async fn funded_ledger(backend: Backend) -> (TestDb, Store, Bus) {
    funded_ledger_grouped(backend, 1).await
}

/// The same, with up to `commit_group_max` commands sharing a commit.
async fn funded_ledger_grouped(backend: Backend, commit_group_max: usize) -> (TestDb, Store, Bus) {
    let (db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;
    let mut bus = Bus::new().await;
    bus.start_grouped(&store, commit_group_max);
    (db, store, bus)
}

/// A payout's hold: from alice's wallet to the bank.
fn hold_payload(transfer_id: &str, amount: i64) -> Value {
    json!({
        "transfer_id": transfer_id,
        "debit_account": "alice",
        "credit_account": "bank",
        "amount": amount,
        "currency": "EUR",
    })
}

fn ok(output: Value) -> Outcome {
    Outcome::Ok { output }
}

fn failed_code(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { code, .. } => code,
        other => panic!("expected failed, got {other:?}"),
    }
}

fn again(command: &Command) -> Command {
    Command { attempt: command.attempt + 1, ..command.clone() }
}

/// The number of events, after checking the ledger is sound.
async fn sound_events(store: &Store) -> u64 {
    let report = verify(
        store,
        VerifyOptions { pending_older_than_ms: 3_600_000, now_ms: ledger::handlers::now_ms() },
    )
    .await
    .unwrap();
    assert!(report.passed(), "{report:#?}");
    report.events
}

async fn a_hold_is_posted_once_and_duplicates_get_the_same_reply(backend: Backend) {
    let (_db, store, mut bus) = funded_ledger(backend).await;

    let hold = bus.command("s1", "hold", Kind::Do, "hold", 1, hold_payload("s1-payout", 300));
    let held = bus.ask(&hold).await;
    assert_eq!(held, ok(json!({ "transfer_id": "s1-payout", "result": "created" })));
    // A retry of the same command: the stored reply, no second hold.
    assert_eq!(bus.ask(&again(&hold)).await, held);
    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.available()), (300, 700));

    let post =
        bus.command("s1", "post", Kind::Do, "post", 1, json!({ "transfer_id": "s1-payout" }));
    let posted = bus.ask(&post).await;
    assert_eq!(posted, ok(json!({ "transfer_id": "s1-payout", "result": "posted" })));
    // The retry is answered from the inbox ("posted", not "already_posted").
    assert_eq!(bus.ask(&again(&post)).await, posted);
    // Another command posting the same transfer: idempotent by transfer id.
    let other =
        bus.command("s1b", "post", Kind::Do, "post", 1, json!({ "transfer_id": "s1-payout" }));
    assert_eq!(
        bus.ask(&other).await,
        ok(json!({ "transfer_id": "s1-payout", "result": "already_posted" }))
    );

    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.debits_posted, b.available()), (0, 300, 700));
    assert_eq!(balances(&store, "bank").await.credits_posted, 300);
    assert_eq!(sound_events(&store).await, 3 + 2, "one hold and one post, nothing more");
    bus.stop().await;
}

async fn a_void_releases_the_hold_once(backend: Backend) {
    let (_db, store, mut bus) = funded_ledger(backend).await;

    let payload = hold_payload("s2-payout", 400);
    let hold = bus.command("s2", "hold", Kind::Do, "hold", 1, payload.clone());
    assert!(matches!(bus.ask(&hold).await, Outcome::Ok { .. }));
    let void = bus.command("s2", "hold", Kind::Undo, "void", 1, payload);
    let voided = bus.ask(&void).await;
    assert_eq!(voided, ok(json!({ "transfer_id": "s2-payout", "result": "voided" })));
    assert_eq!(bus.ask(&again(&void)).await, voided);
    assert_eq!(balances(&store, "alice").await.available(), 1000);
    assert_eq!(balances(&store, "bank").await.credits_pending, 0);

    // A voided hold cannot be posted, nor held again by another command.
    let post =
        bus.command("s2", "post", Kind::Do, "post", 1, json!({ "transfer_id": "s2-payout" }));
    assert_eq!(failed_code(&bus.ask(&post).await), "transfer_voided");
    let rehold = bus.command("s2b", "hold", Kind::Do, "hold", 1, hold_payload("s2-payout", 400));
    assert_eq!(failed_code(&bus.ask(&rehold).await), "transfer_voided");

    // A posted hold cannot be voided.
    let payload = hold_payload("s3-payout", 100);
    let hold = bus.command("s3", "hold", Kind::Do, "hold", 1, payload.clone());
    assert!(matches!(bus.ask(&hold).await, Outcome::Ok { .. }));
    let post =
        bus.command("s3", "post", Kind::Do, "post", 1, json!({ "transfer_id": "s3-payout" }));
    assert!(matches!(bus.ask(&post).await, Outcome::Ok { .. }));
    let void = bus.command("s3", "hold", Kind::Undo, "void", 1, payload);
    assert_eq!(failed_code(&bus.ask(&void).await), "transfer_posted");

    // An undo before its do: the SDK's tombstone, and the late do is refused.
    let void = bus.command("s4", "hold", Kind::Undo, "void", 1, hold_payload("s4-payout", 50));
    assert_eq!(bus.ask(&void).await, ok(json!({ "tombstone": true })));
    let hold = bus.command("s4", "hold", Kind::Do, "hold", 1, hold_payload("s4-payout", 50));
    assert_eq!(failed_code(&bus.ask(&hold).await), "tombstoned");

    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.debits_posted), (0, 100));
    assert_eq!(sound_events(&store).await, 3 + 2 + 2);
    bus.stop().await;
}

async fn refusals_are_failed_replies_with_their_code(backend: Backend) {
    let (_db, store, mut bus) = funded_ledger(backend).await;

    let mut ask = async |saga: &str, action: &str, payload: Value| {
        let kind = if action == "void" { Kind::Undo } else { Kind::Do };
        let step = if action == "post" { "post" } else { "hold" };
        let command = bus.command(saga, step, kind, action, 1, payload);
        bus.ask(&command).await
    };
    let too_much = ask("r1", "hold", hold_payload("r1", 1001)).await;
    assert_eq!(failed_code(&too_much), "insufficient_funds");
    let Outcome::Failed { message, .. } = &too_much else { unreachable!() };
    assert!(message.contains("1001 requested, 1000 available"), "{message}");
    // The undo of a refused hold has nothing to undo (the SDK answers it).
    assert_eq!(
        ask("r1", "void", hold_payload("r1", 1001)).await,
        ok(json!({ "nothing_to_undo": true }))
    );

    let mut usd = hold_payload("r2", 1);
    usd["currency"] = json!("USD");
    assert_eq!(failed_code(&ask("r2", "hold", usd).await), "currency_mismatch");
    let mut ghost = hold_payload("r3", 1);
    ghost["debit_account"] = json!("ghost");
    assert_eq!(failed_code(&ask("r3", "hold", ghost).await), "debit_account_not_found");
    assert_eq!(failed_code(&ask("r4", "hold", hold_payload("r4", 0)).await), "invalid_amount");
    let mut text = hold_payload("r5", 1);
    text["amount"] = json!("12");
    assert_eq!(failed_code(&ask("r5", "hold", text).await), "invalid_payload");
    assert_eq!(
        failed_code(&ask("r6", "hold", json!({ "transfer_id": "r6" })).await),
        "invalid_payload"
    );

    // Another saga reusing a transfer id with other fields.
    assert!(matches!(ask("r7", "hold", hold_payload("shared", 10)).await, Outcome::Ok { .. }));
    assert_eq!(
        failed_code(&ask("r8", "hold", hold_payload("shared", 11)).await),
        "exists_with_different_fields"
    );
    // The same fields from another command: `exists`, still one hold.
    assert_eq!(
        ask("r9", "hold", hold_payload("shared", 10)).await,
        ok(json!({ "transfer_id": "shared", "result": "exists" }))
    );
    assert_eq!(
        failed_code(&ask("r10", "post", json!({ "transfer_id": "nope" })).await),
        "transfer_not_found"
    );

    assert_eq!(balances(&store, "alice").await.debits_pending, 10);
    assert_eq!(sound_events(&store).await, 3 + 1);
    bus.stop().await;
}

async fn concurrent_hold_commands_never_overdraw_a_wallet(backend: Backend) {
    holds_at_once_never_overdraw(backend, 1).await;
}

/// With group commit the holds share commits: each sees the holds committed
/// before it in its group (they are read in the shared transaction), so the
/// wallet is still never overdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_sharing_commits_never_overdraw_a_wallet() {
    holds_at_once_never_overdraw(Backend::Sqlite, 16).await;
}

async fn holds_at_once_never_overdraw(backend: Backend, commit_group_max: usize) {
    const HOLDS: usize = 50;
    // 1000 covers 33 holds of 30.
    let (_db, store, mut bus) = funded_ledger_grouped(backend, commit_group_max).await;

    let commands: Vec<Command> = (0..HOLDS)
        .map(|i| {
            let saga = format!("c{i}");
            bus.command(
                &saga,
                "hold",
                Kind::Do,
                "hold",
                1,
                hold_payload(&format!("{saga}-payout"), 30),
            )
        })
        .collect();
    futures::future::join_all(commands.iter().map(|c| bus.wire.send(c))).await;
    let mut answers: HashMap<String, Outcome> = HashMap::new();
    for _ in 0..HOLDS {
        let reply = bus.wire.reply().await;
        assert!(
            answers.insert(reply.command_id.clone(), reply.outcome).is_none(),
            "one reply each"
        );
    }
    let held = answers.values().filter(|o| matches!(o, Outcome::Ok { .. })).count();
    let refused = answers
        .values()
        .filter(|o| matches!(o, Outcome::Failed { code, .. } if code == "insufficient_funds"))
        .count();
    assert_eq!((held, refused), (33, HOLDS - 33), "{answers:#?}");
    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.available()), (990, 10));
    assert_eq!(sound_events(&store).await, 3 + 33);
    bus.stop().await;
}
