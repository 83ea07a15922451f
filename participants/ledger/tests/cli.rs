//! The `ledger` binary: clear start-up errors, the quickstart (open, fund,
//! hold, balance, verify, tamper → verify fails), and `serve` answering a
//! saga command and stopping on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backend, Bus, TestDb};
use sagas::protocol::{Kind, Outcome};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use skald_testkit::ChildGuard;
use std::process::{Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ledger");

/// Run `ledger ARGS` on `db` and wait for it.
async fn ledger(db: &TestDb, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// The words of a command line (no word holds a space).
fn args(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[tokio::test]
async fn unreachable_nats_is_a_clear_error() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let out = ledger(&db, &["serve", "--nats-url", "nats://127.0.0.1:1"]).await;
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains("cannot reach NATS at nats://127.0.0.1:1"), "{err}");
    assert!(err.contains("nats-server -js"), "{err}");
}

#[tokio::test]
async fn unreachable_database_is_a_clear_error_without_the_password() {
    let out = tokio::process::Command::new(BIN)
        .args(["balance", "alice", "--database-url", "postgres://led:s3cret@127.0.0.1:1/db"])
        .output()
        .await
        .unwrap();
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains("cannot open the database at postgres://led:***@127.0.0.1:1/db"), "{err}");
    assert!(err.contains("docker compose up -d postgres"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn usage_errors_exit_2_and_every_command_has_help() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    assert_eq!(code(&ledger(&db, &["transfer", "t1", "--amount", "1.5"]).await), 2);
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["accounts", "create", "--help"],
        vec!["transfer", "--help"],
        vec!["post", "--help"],
        vec!["void", "--help"],
        vec!["balance", "--help"],
        vec!["verify", "--help"],
    ] {
        let out = ledger(&db, &command).await;
        assert_eq!(code(&out), 0, "{command:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage: ledger"), "{command:?}");
    }
}

#[tokio::test]
async fn quickstart_then_verify_catches_a_tampered_balance() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let run = async |args: &[&str]| ledger(&db, args).await;

    let out = run(&["accounts", "create", "bank", "--currency", "EUR"]).await;
    assert_eq!((code(&out), stdout(&out).trim()), (0, "account bank: created"), "{}", stderr(&out));
    let wallet =
        args("accounts create alice --currency EUR --flags debits_must_not_exceed_credits");
    assert_eq!(code(&run(&wallet).await), 0);
    let out = run(&wallet).await;
    assert_eq!((code(&out), stdout(&out).trim()), (0, "account alice: exists"));
    let out = run(&["accounts", "create", "alice", "--currency", "USD"]).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("refused (exists_with_different_fields)"), "{}", stderr(&out));

    let fund =
        args("transfer fund-alice --debit bank --credit alice --amount 10000 --currency EUR");
    let out = run(&fund).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("fund-alice: created"), "{}", stdout(&out));
    assert!(stdout(&run(&fund).await).contains("fund-alice: exists"));
    let hold =
        args("transfer h1 --debit alice --credit bank --amount 2500 --currency EUR --pending");
    assert_eq!(code(&run(&hold).await), 0);
    let out =
        run(&args("transfer big --debit alice --credit bank --amount 7501 --currency EUR")).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("refused (insufficient_funds)"), "{}", stderr(&out));

    let out = run(&["balance", "alice", "bank", "--json"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let balances: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let alice = &balances["accounts"][0];
    assert_eq!(alice["id"], "alice");
    assert_eq!(
        (alice["credits_posted"].clone(), alice["debits_pending"].clone()),
        (json!(10000), json!(2500))
    );
    assert_eq!((alice["balance"].clone(), alice["available"].clone()), (json!(10000), json!(7500)));
    assert_eq!(balances["accounts"][1]["balance"], json!(-10000));
    let table = stdout(&run(&["balance", "alice"]).await);
    assert!(table.starts_with("ACCOUNT  CURRENCY"), "{table}");
    assert!(table.contains("debits_must_not_exceed_credits"), "{table}");
    assert_eq!(code(&run(&["balance", "nobody"]).await), 1);

    // Sound; the hold is younger than an hour but not than 0s.
    let out = run(&["verify", "--pending-older-than", "1h"]).await;
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("ledger sound: 4 events, 2 accounts, 2 transfers"),
        "{}",
        stdout(&out)
    );
    let out = run(&["verify", "--pending-older-than", "0s"]).await;
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("h1: 2500 EUR from alice to bank"), "{}", stdout(&out));
    assert_eq!(code(&run(&["post", "h1"]).await), 0);
    assert!(stdout(&run(&["post", "h1"]).await).contains("h1: already_posted"));
    let out = run(&["void", "h1"]).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("refused (transfer_posted)"), "{}", stderr(&out));
    assert_eq!(code(&run(&["verify", "--pending-older-than", "0s"]).await), 0);

    // Tamper with a balance behind the log's back: verify fails and says where.
    let conn = Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared("UPDATE accounts SET credits_posted = 999999 WHERE id = 'alice'")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let out = run(&["verify"]).await;
    assert_eq!(code(&out), 1);
    let report = stdout(&out);
    assert!(report.starts_with("ledger NOT SOUND"), "{report}");
    assert!(
        report
            .contains("account alice: credits_posted is 999999 in `accounts` but 10000 by the log"),
        "{report}"
    );
    assert!(report.contains("EUR does not balance"), "{report}");
    let out = run(&["verify", "--json"]).await;
    assert_eq!(code(&out), 1);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["sound"], json!(false));
    assert_eq!(report["problems"][0]["kind"], "account_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_a_hold_while_the_cli_writes_and_stops_on_sigterm() {
    let (db, store) = common::ledger_on(Backend::Sqlite).await;
    common::bank_and_wallet(&store, 1000).await;
    let mut bus = Bus::new().await;
    let mut child = ChildGuard::spawn(
        "ledger serve",
        std::process::Command::new(BIN)
            .args(["serve", "--prefix", bus.wire.ns.prefix(), "--concurrency", "4"])
            .args(["--delivery", skald_testkit::OrchestratorSide::DELIVERY.as_str()])
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", skald_testkit::nats_url())
            .stderr(Stdio::null()),
    )
    .unwrap();

    let payload = json!({
        "transfer_id": "s1-payout",
        "debit_account": "alice",
        "credit_account": "bank",
        "amount": 400,
        "currency": "EUR",
    });
    let hold = bus.command("s1", "hold", Kind::Do, "hold", 1, payload);
    assert_eq!(
        bus.ask(&hold).await,
        Outcome::Ok { output: json!({ "transfer_id": "s1-payout", "result": "created" }) }
    );
    // The command line writes to the same SQLite file while `serve` runs.
    let fund = args("transfer more --debit bank --credit alice --amount 5 --currency EUR");
    let out = ledger(&db, &fund).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let post =
        bus.command("s1", "post", Kind::Do, "post", 1, json!({ "transfer_id": "s1-payout" }));
    assert!(matches!(bus.ask(&post).await, Outcome::Ok { .. }));
    assert_eq!(common::balances(&store, "alice").await.available(), 605);

    let status = child.terminate(Duration::from_secs(40)).unwrap();
    assert!(status.success(), "{status}");
    let out = ledger(&db, &["verify", "--pending-older-than", "0s"]).await;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}
