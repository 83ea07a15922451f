//! The money world the `topup` and `payout` suites run against: psp-sim,
//! the ledger (with a card clearing account, a payout clearing account and
//! funded wallets) and the payment service, each a process on its own
//! database of the test's backend.

use skald_tests::process::{ChildGuard, free_port, wait_port};
use skald_tests::{Backend, NATS_URL, SecuredBus, TestDb};
use skald_transport::BusOptions;
use std::process::Command;
use std::time::Duration;

/// The bus a run uses: the machine's NATS, open; or a private one with an
/// identity per process (as `skald bus init` writes it), TLS and client
/// certificates.
pub enum Bus {
    Open,
    Secured(SecuredBus),
}

impl Bus {
    pub fn options(&self, identity: &str) -> BusOptions {
        match self {
            Self::Open => BusOptions::plain(NATS_URL),
            Self::Secured(bus) => bus.options(identity),
        }
    }
}

fn sqlite_rwc(url: &str) -> String {
    if url.starts_with("sqlite:") { format!("{url}?mode=rwc") } else { url.to_owned() }
}

/// Run the ledger CLI once on `db_url`; panics with its output unless it succeeds.
pub fn ledger(db_url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-e2e"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ledger {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn spawn(
    name: &str,
    bin: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    bus: Option<&BusOptions>,
) -> ChildGuard {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_LOG", "error");
    if let Some(bus) = bus {
        bus.pass_to(&mut cmd);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    ChildGuard::spawn(name, &mut cmd).unwrap()
}

/// How the provider misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct ProviderFaults {
    /// Share of calls answered 5xx.
    pub failure_rate: f64,
    /// Share of charges made and their answer dropped.
    pub drop_after_charge_rate: f64,
}

impl ProviderFaults {
    pub const NONE: Self = Self { failure_rate: 0.0, drop_after_charge_rate: 0.0 };
}

/// psp-sim, the ledger and the payment service, running.
pub struct MoneyWorld {
    pub ledger_url: String,
    pub payment_url: String,
    pub psp_url: String,
    // Fields drop in order: the processes stop before their databases go.
    children: Vec<(&'static str, ChildGuard)>,
    _dbs: (TestDb, TestDb),
}

impl MoneyWorld {
    /// Stop one of its processes (`psp-sim`, `ledger`, `payment`) as SIGTERM does.
    pub fn stop(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| *n == name).unwrap();
        child.terminate(Duration::from_secs(30)).unwrap();
    }

    /// Start the provider with `faults`, open `wallets` wallets with
    /// `opening` each, and start the ledger and payment services under
    /// `prefix` on `bus`.
    pub async fn start(
        backend: Backend,
        prefix: &str,
        bus: &Bus,
        faults: ProviderFaults,
        wallets: usize,
        opening: i64,
    ) -> Self {
        Self::start_with(backend, prefix, bus, faults, wallets, opening, &[], &[]).await
    }

    /// [`Self::start`], with more arguments for psp-sim and for `payment serve`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with(
        backend: Backend,
        prefix: &str,
        bus: &Bus,
        faults: ProviderFaults,
        wallets: usize,
        opening: i64,
        psp_args: &[&str],
        payment_args: &[&str],
    ) -> Self {
        let ledger_db = TestDb::new(backend).await.unwrap();
        let payment_db = TestDb::new(backend).await.unwrap();
        let (ledger_url, payment_url) = (sqlite_rwc(&ledger_db.url), sqlite_rwc(&payment_db.url));
        let psp_port = free_port().unwrap().to_string();
        let (failure, dropped) =
            (faults.failure_rate.to_string(), faults.drop_after_charge_rate.to_string());
        let mut args = vec![
            "--port",
            &psp_port,
            "--failure-rate",
            &failure,
            "--drop-after-charge-rate",
            &dropped,
            "--seed",
            "7",
        ];
        args.extend_from_slice(psp_args);
        let psp = spawn("psp-sim", env!("CARGO_BIN_EXE_psp-sim-e2e"), &args, &[], None);
        wait_port(psp_port.parse().unwrap(), Duration::from_secs(20)).unwrap();
        let psp_url = format!("http://127.0.0.1:{psp_port}");

        ledger(&ledger_url, &["accounts", "create", "psp_clearing", "--currency", "EUR"]);
        ledger(&ledger_url, &["accounts", "create", "payout_clearing", "--currency", "EUR"]);
        for w in 0..wallets {
            let wallet = format!("wallet_{w}");
            ledger(
                &ledger_url,
                &[
                    "accounts",
                    "create",
                    &wallet,
                    "--currency",
                    "EUR",
                    "--flags",
                    "debits_must_not_exceed_credits",
                ],
            );
            ledger(
                &ledger_url,
                &[
                    "transfer",
                    &format!("opening_{w}"),
                    "--debit",
                    "psp_clearing",
                    "--credit",
                    &wallet,
                    "--amount",
                    &opening.to_string(),
                    "--currency",
                    "EUR",
                ],
            );
        }
        let ledger_process = spawn(
            "ledger",
            env!("CARGO_BIN_EXE_ledger-e2e"),
            &["serve", "--prefix", prefix],
            &[("DATABASE_URL", &ledger_url)],
            Some(&bus.options("ledger")),
        );
        let mut args = vec![
            "serve",
            "--prefix",
            prefix,
            "--database-url",
            &payment_url,
            "--psp-url",
            &psp_url,
            "--psp-timeout-ms",
            "1000",
            "--reconcile-interval-ms",
            "500",
            "--reconcile-grace-ms",
            "2000",
        ];
        args.extend_from_slice(payment_args);
        let payment = spawn(
            "payment",
            env!("CARGO_BIN_EXE_payment-e2e"),
            &args,
            &[],
            Some(&bus.options("payment")),
        );
        Self {
            ledger_url,
            payment_url,
            psp_url,
            children: vec![("psp-sim", psp), ("ledger", ledger_process), ("payment", payment)],
            _dbs: (ledger_db, payment_db),
        }
    }
}

/// A tokens file for `skald serve --api-tokens-file` with a viewer token (an
/// auditor) and an operator token (who repairs parked sagas); removed when
/// dropped.
pub struct ApiTokens {
    pub viewer: String,
    pub operator: String,
    pub file: std::path::PathBuf,
}

impl ApiTokens {
    pub fn new() -> Self {
        let viewer = format!("viewer-{}", skald_tests::token());
        let operator = format!("operator-{}", skald_tests::token());
        let file = std::env::temp_dir().join(format!("skald-tokens-{}.yaml", skald_tests::token()));
        let hash = orchestrator::api::auth::hash_token;
        std::fs::write(
            &file,
            format!(
                "tokens:\n  - {{name: auditor, role: viewer, sha256: {}}}\n  - {{name: on-call, role: operator, sha256: {}}}\n",
                hash(&viewer),
                hash(&operator)
            ),
        )
        .unwrap();
        Self { viewer, operator, file }
    }
}

impl Drop for ApiTokens {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Run `skald ARGS` against the API at `api_url` with `token`: its exit code
/// and what it printed (stdout, stderr).
pub fn skald_cli(api_url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skald-e2e"))
        .args(args)
        .env("SKALD_API_URL", api_url)
        .env("SKALD_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `skald serve` for `prefix` on `database_url` with the shipped
/// definitions (or `definitions`), its API on a free port of 127.0.0.1
/// accepting `tokens`: the command, and the API's URL.
pub fn skald_with_api(
    prefix: &str,
    database_url: &str,
    definitions: Option<&std::path::Path>,
    tokens: &ApiTokens,
) -> (Command, String) {
    let http_port = skald_tests::process::free_port().unwrap();
    let shipped = std::path::PathBuf::from(skald_testkit::fixtures::SHIPPED_DIR);
    let mut skald = crate::common::processes::skald_serve(
        NATS_URL,
        prefix,
        database_url,
        skald_tests::PARTITIONS,
        definitions.unwrap_or(&shipped),
    );
    skald
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .arg("--api-tokens-file")
        .arg(&tokens.file)
        .env("RUST_LOG", "error");
    (skald, format!("http://127.0.0.1:{http_port}"))
}

/// Wait (up to 30 s: the payment reconciler may still be giving back a
/// charge whose answer was lost) until the provider's charged − refunded is
/// `completed`, checking on every look that no saga holds two charges that
/// took money.
pub async fn provider_net_comes_to(psp_url: &str, completed: i64) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list: payment::api::ChargeList = http
            .get(format!("{psp_url}/v1/charges?limit=1000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list.count, list.charges.len(), "listing truncated");
        let mut per_reference: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::new();
        for c in list.charges.iter().filter(|c| c.status != "canceled" && c.status != "failed") {
            *per_reference.entry(c.reference.as_str()).or_default() += 1;
        }
        assert!(per_reference.values().all(|n| *n == 1), "a saga was charged twice");
        let eur = list.totals.get("EUR").copied().unwrap_or_default();
        let net = eur.charged - eur.refunded;
        if net == completed {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "provider net {net} != completed top-ups {completed}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
