//! Crashes of the money programs: `skald`, `ledger`, `payment` and `psp-sim`
//! as processes running the shipped `topup` and `payout` sagas; the provider,
//! the ledger and payment die (`kill -9`) in turn and come back, under load.

use super::DOWN_FOR;
use crate::common::load::Make;
use crate::invariants::money::{charges, ledger_cli, verify_ledger, verify_provider};
use crate::invariants::verify;
use crate::load::{LOAD_WITHIN, wait_ended};
use crate::tally::Tally;
use crate::world::{TURN, World, sagas};
use serde_json::json;
use skald_tests::process::{ChildGuard, free_port, wait_port};
use skald_tests::{Backend, NATS_URL, TestDb, delete_streams};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wallets the sagas pay into and out of.
const WALLETS: usize = 10;

/// A program of the scenario, as it is started (and started again).
struct Program<'a> {
    name: &'a str,
    bin: &'a str,
    args: Vec<&'a str>,
    envs: &'a [(&'a str, &'a str)],
}

impl<'a> Program<'a> {
    /// `bin`, run with the `leading` arguments, then each flag and its value.
    fn new(name: &'a str, bin: &'a str, leading: &[&'a str], flags: &[(&'a str, &'a str)]) -> Self {
        let flags = flags.iter().flat_map(|(flag, value)| [*flag, *value]);
        Self { name, bin, args: leading.iter().copied().chain(flags).collect(), envs: &[] }
    }

    fn start(&self, w: &World) -> ChildGuard {
        w.program(self.name, self.bin, &self.args, self.envs)
    }

    /// `kill -9` of `child`, and this program started again in its place.
    async fn restart(&self, w: &World, child: &mut ChildGuard) {
        child.kill9();
        tokio::time::sleep(DOWN_FOR).await;
        *child = self.start(w);
    }
}

/// The ledger's clearing accounts, and `WALLETS` wallets with an opening balance.
fn open_accounts(ledger_url: &str) {
    for clearing in ["psp_clearing", "payout_clearing"] {
        ledger_cli(ledger_url, &["accounts", "create", clearing, "--currency", "EUR"]).unwrap();
    }
    for i in 0..WALLETS {
        let wallet = format!("wallet_{i}");
        let flags = "debits_must_not_exceed_credits";
        ledger_cli(
            ledger_url,
            &["accounts", "create", &wallet, "--currency", "EUR", "--flags", flags],
        )
        .unwrap();
        let args = [
            "transfer",
            &format!("opening_{i}"),
            "--debit",
            "psp_clearing",
            "--credit",
            &wallet,
            "--amount",
            "20000",
            "--currency",
            "EUR",
        ];
        ledger_cli(ledger_url, &args).unwrap();
    }
}

/// 70% top-ups (a card declined or short of funds now and then), 30% payouts.
fn money_load() -> Make {
    Arc::new(|i| {
        let wallet = format!("wallet_{}", i % WALLETS);
        if i % 10 < 7 {
            let card = match i % 20 {
                3 | 13 => "tok_decline",
                5 => "tok_insufficient",
                _ => "tok_visa",
            };
            let amount = 100 + (i as i64 * 37) % 900;
            let input = json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                               "amount": amount, "currency": "EUR", "card_token": card});
            ("topup".to_owned(), format!("topup-{i}"), input)
        } else {
            let amount = 500 + (i as i64 * 53) % 3_000;
            let input = json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                               "amount": amount, "currency": "EUR",
                               "bank_account": format!("DE{i:020}")});
            ("payout".to_owned(), format!("payout-{i}"), input)
        }
    })
}

/// Money sagas (`topup`, `payout`) across `skald`, `ledger`, `payment` and
/// `psp-sim` processes; psp-sim, then the ledger, then payment die (`kill -9`)
/// and come back, under load. Invariants 3 (`ledger verify`) and 4 (the
/// provider's charges) are checked too.
///
/// psp-sim keeps its books in memory, so a killed one forgets every charge
/// made before: invariant 4 is checked on the books of the restarted
/// provider (each reference charged at most once; its charged minus
/// refunded equals the completed top-ups it charged) and on the last view of
/// the first one before the kill (each reference charged at most once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_and_provider_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sagas/definitions");
    let topup = std::fs::read_to_string(shipped.join("topup.yaml")).unwrap();
    let payout = std::fs::read_to_string(shipped.join("payout.yaml")).unwrap();
    let w =
        World::new("money_kill9", NATS_URL, &[("topup.yaml", &topup), ("payout.yaml", &payout)])
            .await;
    let payment_db = TestDb::new(Backend::Postgres).await.unwrap();
    let ledger_url = w.pdb_url.clone();
    let store = w.store().await;

    let psp_port = free_port().unwrap().to_string();
    let psp_flags = [
        ("--port", psp_port.as_str()),
        ("--failure-rate", "0.05"),
        ("--drop-after-charge-rate", "0.02"),
        ("--seed", "7"),
    ];
    let psp_sim = Program::new("psp-sim", env!("CARGO_BIN_EXE_psp-sim-e2e"), &[], &psp_flags);
    let mut psp = psp_sim.start(&w);
    wait_port(psp_port.parse().unwrap(), Duration::from_secs(20)).unwrap();
    let psp_url = format!("http://127.0.0.1:{psp_port}");

    open_accounts(&ledger_url);

    let _skald = w.skald_ready(&store, "o-0", &[]).await;
    let on_bus = [("--prefix", w.prefix.as_str()), ("--nats-url", NATS_URL)];
    let ledger_program = Program {
        envs: &[("DATABASE_URL", ledger_url.as_str())],
        ..Program::new("ledger", env!("CARGO_BIN_EXE_ledger-e2e"), &["serve"], &on_bus)
    };
    let mut ledger = ledger_program.start(&w);
    let payment_flags = [
        ("--prefix", w.prefix.as_str()),
        ("--nats-url", NATS_URL),
        ("--database-url", payment_db.url.as_str()),
        ("--psp-url", &psp_url),
        ("--psp-timeout-ms", "1000"),
        ("--reconcile-interval-ms", "500"),
        ("--reconcile-grace-ms", "2000"),
    ];
    let payment_bin = env!("CARGO_BIN_EXE_payment-e2e");
    let payment_program = Program::new("payment", payment_bin, &["serve"], &payment_flags);
    let mut payment = payment_program.start(&w);

    let client = w.client().await;
    let http = reqwest::Client::new();
    let load = w.starter(&client).load(n, 16, money_load());

    // Kill the provider once it has charged a few cards.
    load.until(n * 15 / 100, LOAD_WITHIN).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let list = charges(&http, &psp_url).await.unwrap();
        if list.charges.len() >= 5 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    psp_sim.restart(&w, &mut psp).await;
    wait_port(psp_port.parse().unwrap(), Duration::from_secs(20)).unwrap();
    println!("psp-sim killed after {} charges and restarted", before.charges.len());

    load.until(n * 40 / 100, LOAD_WITHIN).await;
    ledger_program.restart(&w, &mut ledger).await;
    println!("ledger killed and restarted");

    load.until(n * 65 / 100, LOAD_WITHIN).await;
    payment_program.restart(&w, &mut payment).await;
    let healed = Instant::now();
    println!("payment killed and restarted");

    let begun = load.finish().await;
    let heal = wait_ended(&store, healed).await;
    let mut tally = Tally::default();
    let statuses = verify(&store, &begun, &mut tally).await;
    for kind in ["topup", "payout"] {
        let completed = begun
            .iter()
            .filter(|b| {
                b.saga_type == kind && statuses.get(&b.id).is_some_and(|s| s == "completed")
            })
            .count();
        tally.expect(completed > 0, || format!("no {kind} completed"));
    }
    verify_ledger(&ledger_url, &begun, &statuses, &mut tally).await;
    verify_provider(&http, &psp_url, &before, &begun, &statuses, &mut tally).await;
    drop((psp, ledger, payment));
    delete_streams(&client, &w.ns).await;
    w.finish(tally, heal);
}
