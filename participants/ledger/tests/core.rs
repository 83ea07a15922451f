//! The ledger core against real SQLite and PostgreSQL: two-phase transfers,
//! idempotency, refusals, flags under 100 concurrent holds, and `verify`
//! on a sound ledger and on one whose projections were tampered with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, WALLET, account, balances, bank_and_wallet, ledger_on, transfer};
use ledger::model::{AccountFlags, NewTransfer, Refusal, TransferState};
use ledger::ops::{CreateResult, OpError, PostResult, VoidResult};
use ledger::store::Store;
use ledger::verify::{Problem, Report, VerifyOptions, verify};
use sea_orm::ConnectionTrait;
use std::sync::Arc;

on_both_databases!(
    holds_are_posted_or_voided_exactly_once,
    repeats_answer_exists_or_exists_with_different_fields,
    currency_mismatch_unknown_accounts_and_bad_fields_are_refused,
    flags_are_kept,
    concurrent_holds_never_overdraw_a_wallet,
    verify_passes_on_a_sound_ledger_and_lists_old_holds,
    verify_fails_when_a_projection_is_tampered_with,
    verify_fails_when_the_log_is_tampered_with,
);

fn code<T: std::fmt::Debug>(result: Result<T, OpError>) -> &'static str {
    match result {
        Err(OpError::Refused(refusal)) => refusal.code(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn check(store: &Store, now_ms: i64, pending_older_than_ms: u64) -> Report {
    verify(store, VerifyOptions { pending_older_than_ms, now_ms }).await.unwrap()
}

/// Check that `verify` passes at time 100 and counts `events` events.
async fn assert_sound(store: &Store, events: u64) {
    let report = check(store, 100, 0).await;
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.events, events);
}

async fn holds_are_posted_or_voided_exactly_once(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;

    // Hold 300, post it twice: the second post changes nothing.
    let hold = transfer("h1", "alice", "bank", 300, true);
    assert_eq!(store.create_transfer(&hold, 10).await.unwrap(), CreateResult::Created);
    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.debits_posted, b.available()), (300, 0, 700));
    assert_eq!(balances(&store, "bank").await.credits_pending, 300);
    assert_eq!(store.post_transfer("h1", 11).await.unwrap(), PostResult::Posted);
    assert_eq!(store.post_transfer("h1", 12).await.unwrap(), PostResult::AlreadyPosted);
    let b = balances(&store, "alice").await;
    assert_eq!((b.debits_pending, b.debits_posted, b.available()), (0, 300, 700));
    let bank = balances(&store, "bank").await;
    assert_eq!((bank.credits_pending, bank.credits_posted), (0, 300));
    assert_eq!(code(store.void_transfer("h1", None, 13).await), "transfer_posted");
    let t = store.transfer("h1").await.unwrap().unwrap();
    assert_eq!((t.state, t.resolved_at_ms), (TransferState::Posted, Some(11)));

    // Hold 200, void it twice: released once; it cannot be posted after.
    store.create_transfer(&transfer("h2", "alice", "bank", 200, true), 20).await.unwrap();
    assert_eq!(balances(&store, "alice").await.available(), 500);
    assert_eq!(store.void_transfer("h2", None, 21).await.unwrap(), VoidResult::Voided);
    assert_eq!(store.void_transfer("h2", None, 22).await.unwrap(), VoidResult::AlreadyVoided);
    assert_eq!(balances(&store, "alice").await.available(), 700);
    assert_eq!(balances(&store, "bank").await.credits_pending, 0);
    assert_eq!(code(store.post_transfer("h2", 23).await), "transfer_voided");

    // Unknown and single-phase transfers cannot be posted or voided.
    assert_eq!(code(store.post_transfer("nope", 30).await), "transfer_not_found");
    assert_eq!(code(store.void_transfer("nope", None, 30).await), "transfer_not_found");
    assert_eq!(code(store.post_transfer("fund-alice", 30).await), "transfer_not_pending");

    // One event per change: 2 accounts, funding, hold+post, hold+void.
    assert_sound(&store, 7).await;
}

async fn repeats_answer_exists_or_exists_with_different_fields(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;

    let hold = transfer("h", "alice", "bank", 100, true);
    assert_eq!(store.create_transfer(&hold, 10).await.unwrap(), CreateResult::Created);
    assert_eq!(store.create_transfer(&hold, 11).await.unwrap(), CreateResult::Exists);
    assert_eq!(balances(&store, "alice").await.debits_pending, 100, "the repeat moved nothing");
    let bigger = NewTransfer { amount: 101, ..hold.clone() };
    match store.create_transfer(&bigger, 12).await {
        Err(OpError::Refused(Refusal::TransferExistsWithDifferentFields { fields, .. })) => {
            assert_eq!(fields, ["amount"]);
        }
        other => panic!("expected exists_with_different_fields, got {other:?}"),
    }
    let posted_at_once = NewTransfer { pending: false, ..hold.clone() };
    assert_eq!(
        code(store.create_transfer(&posted_at_once, 12).await),
        "exists_with_different_fields"
    );
    // Still `exists` after it was posted: the id is the idempotency key.
    store.post_transfer("h", 13).await.unwrap();
    assert_eq!(store.create_transfer(&hold, 14).await.unwrap(), CreateResult::Exists);

    assert_eq!(
        store.create_account(&account("alice", "EUR", WALLET), 15).await.unwrap(),
        CreateResult::Exists
    );
    assert_eq!(
        code(store.create_account(&account("alice", "USD", WALLET), 15).await),
        "exists_with_different_fields"
    );
    assert_eq!(
        code(store.create_account(&account("alice", "EUR", AccountFlags::default()), 15).await),
        "exists_with_different_fields"
    );
    assert_sound(&store, 5).await;
}

async fn currency_mismatch_unknown_accounts_and_bad_fields_are_refused(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;
    store.create_account(&account("dollars", "USD", AccountFlags::default()), 1).await.unwrap();

    let usd = NewTransfer { currency: "USD".into(), ..transfer("x", "alice", "bank", 1, true) };
    match store.create_transfer(&usd, 2).await {
        Err(OpError::Refused(Refusal::CurrencyMismatch {
            account_id, account_currency, ..
        })) => {
            assert_eq!((account_id.as_str(), account_currency.as_str()), ("alice", "EUR"));
        }
        other => panic!("expected currency_mismatch, got {other:?}"),
    }
    let refused_transfers = [
        (transfer("x", "alice", "dollars", 1, true), "currency_mismatch"),
        (transfer("x", "ghost", "bank", 1, true), "debit_account_not_found"),
        (transfer("x", "alice", "ghost", 1, true), "credit_account_not_found"),
        (transfer("x", "alice", "bank", 0, true), "invalid_amount"),
        (transfer("x", "alice", "bank", -5, true), "invalid_amount"),
        (transfer("x", "alice", "alice", 1, true), "accounts_must_be_different"),
        (transfer("x;drop", "alice", "bank", 1, true), "invalid_transfer_id"),
    ];
    for (refused, expected) in refused_transfers {
        assert_eq!(code(store.create_transfer(&refused, 2).await), expected, "{refused:?}");
    }
    for (refused, expected) in [
        (account("a b", "EUR", WALLET), "invalid_account_id"),
        (account("c", "euro", WALLET), "invalid_currency"),
    ] {
        assert_eq!(code(store.create_account(&refused, 2).await), expected, "{refused:?}");
    }
    // Nothing of that was written.
    assert_eq!(balances(&store, "alice").await.debits_pending, 0);
    assert!(store.transfer("x").await.unwrap().is_none());
    assert!(check(&store, 100, 0).await.passed());
}

async fn flags_are_kept(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 100).await;

    // debits_must_not_exceed_credits: pending holds count against the funds.
    store.create_transfer(&transfer("h1", "alice", "bank", 60, true), 3).await.unwrap();
    match store.create_transfer(&transfer("h2", "alice", "bank", 41, true), 3).await {
        Err(OpError::Refused(Refusal::InsufficientFunds { available, amount, .. })) => {
            assert_eq!((available, amount), (40, 41));
        }
        other => panic!("expected insufficient_funds, got {other:?}"),
    }
    assert_eq!(
        code(store.create_transfer(&transfer("t", "alice", "bank", 41, false), 3).await),
        "insufficient_funds"
    );
    store.create_transfer(&transfer("h3", "alice", "bank", 40, true), 3).await.unwrap();
    assert_eq!(balances(&store, "alice").await.available(), 0);
    // Voiding gives the funds back.
    store.void_transfer("h1", None, 4).await.unwrap();
    store.create_transfer(&transfer("h4", "alice", "bank", 60, true), 5).await.unwrap();

    // credits_must_not_exceed_debits.
    let limited = AccountFlags { credits_must_not_exceed_debits: true, ..Default::default() };
    store.create_account(&account("loan", "EUR", limited), 6).await.unwrap();
    assert_eq!(
        code(store.create_transfer(&transfer("l1", "bank", "loan", 1, false), 6).await),
        "exceeds_debits"
    );
    store.create_transfer(&transfer("l2", "loan", "bank", 50, false), 6).await.unwrap();
    store.create_transfer(&transfer("l3", "bank", "loan", 50, true), 6).await.unwrap();
    assert_eq!(
        code(store.create_transfer(&transfer("l4", "bank", "loan", 1, true), 6).await),
        "exceeds_debits"
    );
    // Both flags at once is refused.
    let both =
        AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: true };
    assert_eq!(
        code(store.create_account(&account("z", "EUR", both), 7).await),
        "flags_are_mutually_exclusive"
    );
    assert!(check(&store, 100, 1000).await.passed());
}

async fn concurrent_holds_never_overdraw_a_wallet(backend: Backend) {
    const HOLDS: usize = 100;
    const AMOUNT: i64 = 30;
    const FUNDS: i64 = 1000; // covers 33 holds of 30
    let (_db, store) = ledger_on(backend).await;
    let store = Arc::new(store);
    bank_and_wallet(&store, FUNDS).await;

    let tasks: Vec<_> = (0..HOLDS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let hold = transfer(&format!("hold-{i}"), "alice", "bank", AMOUNT, true);
                store.create_transfer(&hold, 10).await
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(CreateResult::Created) => created += 1,
            Err(OpError::Refused(Refusal::InsufficientFunds { .. })) => refused += 1,
            other => panic!("a hold neither succeeded nor was refused: {other:?}"),
        }
    }
    let covered = usize::try_from(FUNDS / AMOUNT).unwrap();
    assert_eq!((created, refused), (covered, HOLDS - covered));
    let b = balances(&store, "alice").await;
    assert_eq!(b.debits_pending, AMOUNT * i64::try_from(covered).unwrap());
    assert!(b.available() >= 0);
    assert_eq!(balances(&store, "bank").await.credits_pending, b.debits_pending);

    // Post some and void the rest, concurrently too: the wallet ends exact.
    let held: Vec<String> = (0..HOLDS).map(|i| format!("hold-{i}")).collect();
    let tasks: Vec<_> = held
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.post_transfer(&id, 20).await.map(|_| ())
                } else {
                    store.void_transfer(&id, None, 20).await.map(|_| ())
                }
            })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) | Err(OpError::Refused(Refusal::TransferNotFound { .. })) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    let b = balances(&store, "alice").await;
    assert_eq!(b.debits_pending, 0);
    assert!(b.available() >= 0 && b.debits_posted % AMOUNT == 0);
    let report = check(&store, 100, 0).await;
    assert!(report.passed(), "{report:#?}");
    assert_eq!(report.transfers, 1 + covered as u64);
}

async fn verify_passes_on_a_sound_ledger_and_lists_old_holds(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;
    store.create_account(&account("usd-bank", "USD", AccountFlags::default()), 1).await.unwrap();
    store.create_account(&account("usd-wallet", "USD", WALLET), 1).await.unwrap();
    let usd = NewTransfer {
        currency: "USD".into(),
        ..transfer("fund-usd", "usd-bank", "usd-wallet", 70, false)
    };
    store.create_transfer(&usd, 2).await.unwrap();
    store.create_transfer(&transfer("old-hold", "alice", "bank", 10, true), 1_000).await.unwrap();
    store.create_transfer(&transfer("new-hold", "alice", "bank", 20, true), 590_000).await.unwrap();
    store.create_transfer(&transfer("posted", "alice", "bank", 5, true), 1_000).await.unwrap();
    store.post_transfer("posted", 2_000).await.unwrap();

    let now = 601_000; // old-hold is 600 s old, new-hold 11 s.
    let report = check(&store, now, 600_000).await;
    assert!(report.sound, "{report:#?}");
    assert!(!report.passed(), "an old hold fails the check");
    let stale: Vec<&str> = report.stale_holds.iter().map(|h| h.transfer_id.as_str()).collect();
    assert_eq!(stale, ["old-hold"]);
    assert_eq!(report.stale_holds[0].age_ms, 600_000);
    assert_eq!((report.events, report.accounts, report.transfers), (10, 4, 5));
    let eur = &report.currencies[0];
    assert_eq!((eur.currency.as_str(), eur.debits_posted, eur.credits_posted), ("EUR", 1005, 1005));
    assert_eq!((eur.debits_pending, eur.credits_pending), (30, 30));
    assert_eq!(report.currencies[1].credits_posted, 70);

    let report = check(&store, now, 3_600_000).await;
    assert!(report.passed(), "{report:#?}");
}

async fn verify_fails_when_a_projection_is_tampered_with(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;
    store.create_transfer(&transfer("h", "alice", "bank", 100, true), 3).await.unwrap();
    assert!(check(&store, 10, 1000).await.passed());

    // Someone gives alice 500 cents in SQL, behind the log's back.
    tamper(&store, "UPDATE accounts SET credits_posted = credits_posted + 500 WHERE id = 'alice'")
        .await;
    let report = check(&store, 10, 1000).await;
    assert!(!report.sound && !report.passed());
    assert!(
        report.problems.contains(&Problem::AccountMismatch {
            account_id: "alice".into(),
            field: "credits_posted".into(),
            projected: "1500".into(),
            replayed: "1000".into(),
        }),
        "{report:#?}"
    );
    assert!(
        report.problems.contains(&Problem::Unbalanced {
            currency: "EUR".into(),
            side: "posted".into(),
            debits: 1000,
            credits: 1500,
        }),
        "{report:#?}"
    );

    // ... and marks the hold posted without moving its money.
    tamper(&store, "UPDATE accounts SET credits_posted = credits_posted - 500 WHERE id = 'alice'")
        .await;
    tamper(&store, "UPDATE transfers SET state = 'posted' WHERE id = 'h'").await;
    let report = check(&store, 10, 1000).await;
    assert!(!report.sound);
    assert!(report.problems.iter().any(|p| matches!(p,
        Problem::TransferMismatch { transfer_id, field, .. } if transfer_id == "h" && field == "state"
    )), "{report:#?}");

    // ... and breaks the wallet's flag in both the projection and the log's terms.
    tamper(&store, "UPDATE transfers SET state = 'pending' WHERE id = 'h'").await;
    tamper(&store, "UPDATE accounts SET debits_posted = 5000, credits_posted = credits_posted + 4000 WHERE id = 'alice'").await;
    let report = check(&store, 10, 1000).await;
    assert!(
        report.problems.contains(&Problem::FlagViolated {
            account_id: "alice".into(),
            flag: "debits_must_not_exceed_credits".into(),
        }),
        "{report:#?}"
    );
}

async fn verify_fails_when_the_log_is_tampered_with(backend: Backend) {
    let (_db, store) = ledger_on(backend).await;
    bank_and_wallet(&store, 1000).await;
    // An event appended by hand that posts the funding transfer a second time,
    // and one that cannot be read.
    tamper(&store, r#"INSERT INTO ledger_events (transfer_id, event, at_ms) VALUES ('fund-alice', '{"v":1,"type":"transfer_posted","transfer_id":"fund-alice"}', 5)"#).await;
    tamper(
        &store,
        "INSERT INTO ledger_events (transfer_id, event, at_ms) VALUES ('x', 'garbage', 5)",
    )
    .await;
    // A transfer row with no event behind it.
    tamper(&store, "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, pending, state, created_at_ms) VALUES ('ghost', 'bank', 'alice', 1, 'EUR', false, 'posted', 5)").await;
    let report = check(&store, 10, 1000).await;
    assert!(!report.sound);
    let kinds: Vec<String> = report
        .problems
        .iter()
        .map(|p| serde_json::to_value(p).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["illegal_event", "unreadable_event", "transfer_not_in_log"], "{report:#?}");
    assert!(
        matches!(&report.problems[0], Problem::IllegalEvent { code, .. } if code == "transfer_not_pending")
    );
}

async fn tamper(store: &Store, sql: &str) {
    store.db().execute_unprepared(sql).await.unwrap();
}
