//! Crashes of the money programs: `skald`, `ledger`, `payment` and `psp-sim`
//! as processes running the shipped `topup` and `payout` sagas; the provider,
//! the ledger and payment die (`kill -9`) in turn and come back, under load.

use super::DOWN_FOR;
use crate::common::load::{Begun, Load, Make};
use crate::invariants::money::{charges, ledger_cli, verify_ledger, verify_provider};
use crate::invariants::verify;
use crate::load::{LOAD_WITHIN, wait_ended};
use crate::tally::Tally;
use crate::world::{TURN, World, full, sagas};
use orchestrator::store::Store;
use payment::api::ChargeList;
use sagas::machine::SagaEvent;
use serde_json::json;
use skald_tests::process::{ChildGuard, free_port, wait_port};
use skald_tests::{Backend, NATS_URL, TestDb, delete_streams};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wallets the sagas pay into and out of.
const WALLETS: usize = 10;

/// A program of the scenario, as it is started (and started again).
struct Program {
    name: &'static str,
    bin: &'static str,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
}

impl Program {
    /// `bin`, run with the `leading` arguments, then each flag and its value.
    fn new(
        name: &'static str,
        bin: &'static str,
        leading: &[&str],
        flags: &[(&str, &str)],
    ) -> Self {
        let flags = flags.iter().flat_map(|(flag, value)| [*flag, *value]);
        let args = leading.iter().copied().chain(flags).map(str::to_owned).collect();
        Self { name, bin, args, envs: vec![] }
    }

    fn start(&self, w: &World) -> ChildGuard {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.program(self.name, self.bin, &args, &envs)
    }

    /// `kill -9` of `child`, and this program started again in its place.
    async fn restart(&self, w: &World, child: &mut ChildGuard) {
        child.kill9();
        tokio::time::sleep(DOWN_FOR).await;
        *child = self.start(w);
    }
}

/// The money programs of a scenario: `skald`, `ledger`, `payment` (on
/// PostgreSQL) and `psp-sim` (5% of calls failing, 2% of charges made and
/// their answer dropped), the shipped `topup` and `payout` definitions, and
/// the ledger's accounts opened.
struct MoneyStack {
    w: World,
    store: Store,
    _payment_db: TestDb,
    psp_port: u16,
    psp_url: String,
    psp_sim: Program,
    ledger_program: Program,
    payment_program: Program,
    client: async_nats::Client,
    http: reqwest::Client,
}

/// The running processes of a [`MoneyStack`].
struct MoneyProcesses {
    _skald: ChildGuard,
    psp: ChildGuard,
    ledger: ChildGuard,
    payment: ChildGuard,
}

impl MoneyStack {
    async fn new(scenario: &'static str) -> Self {
        let shipped = Path::new(skald_testkit::fixtures::SHIPPED_DIR);
        let topup = std::fs::read_to_string(shipped.join("topup.yaml")).unwrap();
        let payout = std::fs::read_to_string(shipped.join("payout.yaml")).unwrap();
        let definitions = [("topup.yaml", topup.as_str()), ("payout.yaml", payout.as_str())];
        let w = World::new(scenario, NATS_URL, &definitions).await;
        let payment_db = TestDb::new(Backend::Postgres).await.unwrap();
        let store = w.store().await;
        let psp_port = free_port().unwrap();
        let psp_url = format!("http://127.0.0.1:{psp_port}");
        let port = psp_port.to_string();
        let books = w.logs.join("psp-sim.books").display().to_string();
        let psp_flags = [
            ("--port", port.as_str()),
            ("--books", books.as_str()),
            ("--failure-rate", "0.05"),
            ("--drop-after-charge-rate", "0.02"),
            ("--seed", "7"),
        ];
        let psp_sim = Program::new("psp-sim", env!("CARGO_BIN_EXE_psp-sim-e2e"), &[], &psp_flags);
        let on_bus = [("--prefix", w.prefix.as_str()), ("--nats-url", NATS_URL)];
        let ledger_program = Program {
            envs: vec![("DATABASE_URL", w.pdb_url.clone())],
            ..Program::new("ledger", env!("CARGO_BIN_EXE_ledger-e2e"), &["serve"], &on_bus)
        };
        let payment_flags = [
            ("--prefix", w.prefix.as_str()),
            ("--nats-url", NATS_URL),
            ("--database-url", payment_db.url.as_str()),
            ("--psp-url", &psp_url),
            ("--psp-timeout-ms", "1000"),
            ("--reconcile-interval-ms", "500"),
            ("--reconcile-grace-ms", "2000"),
        ];
        let payment_program =
            Program::new("payment", env!("CARGO_BIN_EXE_payment-e2e"), &["serve"], &payment_flags);
        let client = w.client().await;
        Self {
            w,
            store,
            _payment_db: payment_db,
            psp_port,
            psp_url,
            psp_sim,
            ledger_program,
            payment_program,
            client,
            http: reqwest::Client::new(),
        }
    }

    /// Every program started, the ledger's accounts opened.
    async fn start(&self) -> MoneyProcesses {
        let psp = self.psp_sim.start(&self.w);
        self.psp_listening();
        open_accounts(&self.w.pdb_url);
        let skald = self.w.skald_ready(&self.store, "o-0", &[]).await;
        let ledger = self.ledger_program.start(&self.w);
        let payment = self.payment_program.start(&self.w);
        MoneyProcesses { _skald: skald, psp, ledger, payment }
    }

    fn psp_listening(&self) {
        wait_port(self.psp_port, Duration::from_secs(20)).unwrap();
    }

    /// `n` money sagas, started 16 at a time.
    fn load(&self, n: usize) -> Load {
        self.w.starter(&self.client).load(n, 16, money_load())
    }

    /// The provider's books once it has charged a few cards (or after a minute).
    async fn some_charges(&self) -> ChargeList {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = charges(&self.http, &self.psp_url).await.unwrap();
            if list.charges.len() >= 5 || Instant::now() > deadline {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every saga ended (heal time from `healed`); invariants 1, 2, 5, 6, 3
    /// and 4 (on `before`, the first provider's books) into a tally, and each
    /// saga's status.
    async fn verify(
        &self,
        load: Load,
        healed: Instant,
        before: &ChargeList,
    ) -> (Vec<Begun>, HashMap<String, String>, Tally, Duration) {
        let begun = load.finish().await;
        let heal = wait_ended(&self.store, healed).await;
        let mut tally = Tally::default();
        let statuses = verify(&self.store, &begun, &mut tally).await;
        for kind in ["topup", "payout"] {
            let completed = begun
                .iter()
                .filter(|b| {
                    b.saga_type == kind && statuses.get(&b.id).is_some_and(|s| s == "completed")
                })
                .count();
            tally.expect(completed > 0, || format!("no {kind} completed"));
        }
        verify_ledger(&self.w.pdb_url, &begun, &statuses, &mut tally).await;
        verify_provider(&self.http, &self.psp_url, before, &begun, &statuses, &mut tally).await;
        (begun, statuses, tally, heal)
    }

    async fn finish(self, processes: MoneyProcesses, tally: Tally, heal: Duration) {
        drop(processes);
        delete_streams(&self.client, &self.w.ns).await;
        self.w.finish(tally, heal);
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
/// psp-sim keeps its books in a journal (`--books`), so the restarted
/// provider is the same one: invariant 4 is checked on its books (each
/// reference charged at most once; charged minus refunded equals the
/// completed top-ups) and on the last view of it before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_and_provider_killed() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let stack = MoneyStack::new("money_kill9").await;
    let mut p = stack.start().await;
    let load = stack.load(n);

    // Kill the provider once it has charged a few cards.
    load.until(n * 15 / 100, LOAD_WITHIN).await;
    let before = stack.some_charges().await;
    stack.psp_sim.restart(&stack.w, &mut p.psp).await;
    stack.psp_listening();
    println!("psp-sim killed after {} charges and restarted", before.charges.len());

    load.until(n * 40 / 100, LOAD_WITHIN).await;
    stack.ledger_program.restart(&stack.w, &mut p.ledger).await;
    println!("ledger killed and restarted");

    load.until(n * 65 / 100, LOAD_WITHIN).await;
    stack.payment_program.restart(&stack.w, &mut p.payment).await;
    let healed = Instant::now();
    println!("payment killed and restarted");

    let (_, _, tally, heal) = stack.verify(load, healed, &before).await;
    stack.finish(p, tally, heal).await;
}

/// The provider is down (nothing listens on its port) for 20 s (CI) or a
/// minute, under load. A call that cannot connect sent nothing, so the
/// outage itself spends no retry budget: every `provider_unreachable`
/// answer is an unsent attempt, and a step's outcome is unknown only when
/// its budget went on answers that may have acted (the simulator's injected
/// 500s and dropped answers, a call cut off by the kill, a timeout). A saga
/// is parked only after such an unknown outcome (a payout past its pivot).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_outage() {
    let _turn = TURN.lock().await;
    let n = sagas(150, 1_000);
    let outage = Duration::from_secs(if full() { 60 } else { 20 });
    let stack = MoneyStack::new("provider_outage").await;
    let mut p = stack.start().await;
    let load = stack.load(n);
    load.until(n * 15 / 100, LOAD_WITHIN).await;
    let before = stack.some_charges().await;
    p.psp.kill9();
    tokio::time::sleep(outage).await;
    p.psp = stack.psp_sim.start(&stack.w);
    stack.psp_listening();
    let healed = Instant::now();
    println!("psp-sim down for {outage:?} after {} charges", before.charges.len());

    let (begun, statuses, mut tally, heal) = stack.verify(load, healed, &before).await;
    let (mut unsent, mut unknown) = (0, 0);
    for b in &begun {
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let events = stack.store.load(&b.id).await.ok().flatten().map(|l| l.events);
        let events = events.unwrap_or_default();
        for e in &events {
            if let SagaEvent::AttemptFailed { step, attempt, code, unsent: was_unsent, .. } = e {
                unsent += usize::from(*was_unsent);
                tally.expect(code != "provider_unreachable" || *was_unsent, || {
                    format!(
                        "{} {}: {step} attempt {attempt} unreachable but counted",
                        b.saga_type, b.id
                    )
                });
            }
        }
        let outcome_unknown =
            events.iter().any(|e| matches!(e, SagaEvent::StepOutcomeUnknown { .. }));
        unknown += usize::from(outcome_unknown);
        tally.expect(status != "parked" || outcome_unknown, || {
            format!("{} {} parked without an unknown outcome", b.saga_type, b.id)
        });
    }
    // The outage was felt: some attempts found nobody listening.
    tally.expect(unsent > 0, || "no attempt was answered unsent during the outage".to_owned());
    println!("provider_outage: {unsent} unsent attempts, {unknown} sagas with an unknown outcome");
    stack.finish(p, tally, heal).await;
}
