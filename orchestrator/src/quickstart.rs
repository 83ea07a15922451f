//! `skald quickstart`: Skald's main job on one machine, in one command.
//!
//! Starts the provider simulator (`psp-sim`), the `ledger` and `payment`
//! participants as processes and an orchestrator in this process, all on SQLite
//! files in one data directory and the local NATS; opens wallets in the ledger;
//! runs a batch of sample `topup` and `payout` sagas (good cards, declined
//! cards, payouts larger than a wallet); prints how each ended, the balances and
//! the result of `ledger verify`; and then stops everything, or keeps running
//! with `--keep-running` until Ctrl-C.

use crate::bench::sibling_binary;
use crate::serve::{Orchestrator, ServeConfig, ServeError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const DEFINITIONS: [(&str, &str); 3] = [
    ("topup.yaml", include_str!("../../sagas/definitions/topup.yaml")),
    ("payout.yaml", include_str!("../../sagas/definitions/payout.yaml")),
    ("bench.yaml", include_str!("../../sagas/definitions/bench.yaml")),
];
const WALLETS: [&str; 3] = ["alice", "bob", "carol"];
const OPENING_BALANCE: i64 = 5_000;
pub const SAGAS_MAX: u32 = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct QuickstartConfig {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Directory for the SQLite files (created if missing; reused by later runs).
    #[arg(long, default_value = "skald-quickstart")]
    pub data_dir: PathBuf,
    /// How many sample sagas to run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=i64::from(SAGAS_MAX)))]
    pub sagas: u32,
    /// Subject and stream prefix of this stack.
    #[arg(long, env = "SKALD_PREFIX", default_value = "quickstart")]
    pub prefix: String,
    /// Keep everything running after the batch, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// The `ledger` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub ledger_bin: Option<PathBuf>,
    /// The `payment` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub payment_bin: Option<PathBuf>,
    /// The `psp-sim` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub psp_sim_bin: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(
        "cannot run `{bin}`: {source}. Build the services first: `cargo build --release -p orchestrator -p ledger -p payment`"
    )]
    Spawn { bin: String, source: std::io::Error },
    #[error("`ledger {args}` failed: {output}")]
    Ledger { args: String, output: String },
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The children, killed when dropped.
struct Services(Vec<Child>);

impl Services {
    fn spawn(
        &mut self,
        bin: &Path,
        args: &[&str],
        envs: &[(&str, String)],
    ) -> Result<(), QuickstartError> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|source| QuickstartError::Spawn { bin: bin.display().to_string(), source })?;
        self.0.push(child);
        Ok(())
    }

    async fn stop(mut self) {
        for child in &mut self.0 {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
        }
        for child in &mut self.0 {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

async fn ledger(bin: &Path, db: &str, args: &[&str]) -> Result<String, QuickstartError> {
    let out = Command::new(bin)
        .args(args)
        .env("DATABASE_URL", db)
        .env("RUST_LOG", "error")
        .output()
        .await
        .map_err(|source| QuickstartError::Spawn { bin: bin.display().to_string(), source })?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(QuickstartError::Ledger { args: args.join(" "), output: text.trim().to_owned() })
    }
}

fn free_port() -> Result<u16, QuickstartError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_port(port: u16) -> Result<(), QuickstartError> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(QuickstartError::Setup(format!("psp-sim did not listen on port {port} within 10 s")))
}

/// The sample batch: (type, key, input, what to expect).
fn samples(run: &str, n: u32) -> Vec<(&'static str, String, Value, &'static str)> {
    (0..n)
        .map(|i| {
            let wallet = WALLETS[i as usize % WALLETS.len()];
            match i % 6 {
                0..=2 => ("topup", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                            "amount": 1_000 + i64::from(i) * 10, "currency": "EUR", "card_token": "tok_visa"}), "completed"),
                3 => ("topup", json!({"wallet_account": wallet, "funding_account": "psp_clearing",
                       "amount": 700, "currency": "EUR", "card_token": "tok_decline"}), "compensated: card declined"),
                4 => ("payout", json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                       "amount": 500, "currency": "EUR", "bank_account": "DE89370400440532013000"}), "completed"),
                _ => ("payout", json!({"wallet_account": wallet, "payout_account": "payout_clearing",
                       "amount": 1_000_000, "currency": "EUR", "bank_account": "DE89370400440532013000"}), "failed: insufficient funds"),
            }
        })
        .enumerate()
        .map(|(i, (t, input, expect))| (t, format!("{run}-{i}"), input, expect))
        .collect()
}

/// Run the quickstart; returns once the batch is done (or at Ctrl-C with
/// `--keep-running`): `true` when every saga ended as expected and the ledger is sound.
pub async fn run(config: &QuickstartConfig) -> Result<bool, QuickstartError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let dir = std::fs::canonicalize(&config.data_dir)?;
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.join(name).display());
    let (ledger_db, payment_db) = (sqlite("ledger.db"), sqlite("payment.db"));
    let pick =
        |given: &Option<PathBuf>, name: &str| given.clone().unwrap_or_else(|| sibling_binary(name));
    let (ledger_bin, payment_bin, psp_bin) = (
        pick(&config.ledger_bin, "ledger"),
        pick(&config.payment_bin, "payment"),
        pick(&config.psp_sim_bin, "psp-sim"),
    );
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    println!("Skald quickstart — data in {}", dir.display());
    let mut services = Services(Vec::new());
    let psp_port = free_port()?;
    services.spawn(&psp_bin, &["--port", &psp_port.to_string()], &[])?;
    wait_port(psp_port).await?;
    println!("  psp-sim       http://127.0.0.1:{psp_port}");

    ledger(&ledger_bin, &ledger_db, &["accounts", "create", "psp_clearing", "--currency", "EUR"])
        .await?;
    ledger(
        &ledger_bin,
        &ledger_db,
        &["accounts", "create", "payout_clearing", "--currency", "EUR"],
    )
    .await?;
    for w in WALLETS {
        ledger(
            &ledger_bin,
            &ledger_db,
            &[
                "accounts",
                "create",
                w,
                "--currency",
                "EUR",
                "--flags",
                "debits_must_not_exceed_credits",
            ],
        )
        .await?;
        ledger(
            &ledger_bin,
            &ledger_db,
            &[
                "transfer",
                &format!("opening-{w}"),
                "--debit",
                "psp_clearing",
                "--credit",
                w,
                "--amount",
                &OPENING_BALANCE.to_string(),
                "--currency",
                "EUR",
            ],
        )
        .await?;
    }
    println!(
        "  ledger        {} (wallets {} opened with {OPENING_BALANCE} each)",
        dir.join("ledger.db").display(),
        WALLETS.join(", ")
    );
    let nats = config.nats_url.clone();
    services.spawn(
        &ledger_bin,
        &["serve", "--prefix", &config.prefix, "--nats-url", &nats],
        &[("DATABASE_URL", ledger_db.clone())],
    )?;
    services.spawn(
        &payment_bin,
        &[
            "serve",
            "--prefix",
            &config.prefix,
            "--nats-url",
            &nats,
            "--database-url",
            &payment_db,
            "--psp-url",
            &format!("http://127.0.0.1:{psp_port}"),
        ],
        &[],
    )?;
    println!("  payment       {}", dir.join("payment.db").display());

    let definitions = DEFINITIONS
        .iter()
        .map(|(name, yaml)| {
            sagas::definition::load(name, yaml).map_err(|e| QuickstartError::Setup(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serve = ServeConfig {
        nats_url: nats.clone(),
        database_url: format!("sqlite://{}", dir.join("skald.db").display()),
        prefix: config.prefix.clone(),
        definitions: dir.clone(),
        partitions: 16,
    };
    let mut orchestrator = Orchestrator::connect_with(&serve, Some(definitions)).await?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    orchestrator.driver = orchestrator.driver.clone().with_end_listener(ended_tx);
    let driver = orchestrator.driver.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(orchestrator.run(shutdown.clone()));
    println!(
        "  orchestrator  {} (subjects `{}.*`)\n",
        dir.join("skald.db").display(),
        config.prefix
    );

    let batch = samples(&run_id, config.sagas);
    let mut open: HashMap<String, usize> = HashMap::new();
    for (i, (saga_type, key, input, _)) in batch.iter().enumerate() {
        let started = driver
            .start(saga_type, key, input)
            .await
            .map_err(|e| QuickstartError::Setup(e.to_string()))?;
        open.insert(started.saga_id().to_owned(), i);
    }
    let ids: Vec<(String, usize)> = open.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let wait = async {
        while !open.is_empty() {
            match ended_rx.recv().await {
                Some(id) => {
                    open.remove(&id);
                }
                None => break,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), wait).await.is_err() {
        println!("(some sagas had not ended after 2 minutes)");
    }

    let mut all_as_expected = true;
    let mut rows: Vec<(usize, String)> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (id, i) in &ids {
        let loaded =
            driver.store().load(id).await.map_err(|e| QuickstartError::Setup(e.to_string()))?;
        let (status, error) =
            loaded.map_or(("missing".into(), None), |l| (l.row.status, l.row.last_error));
        *counts.entry(status.clone()).or_default() += 1;
        let (saga_type, _, input, expect) = &batch[*i];
        if !expect.starts_with(status.as_str()) {
            all_as_expected = false;
        }
        let note = error
            .map(|e| format!(" ({})", e.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        rows.push((
            *i,
            format!(
                "{saga_type:<7} {:<7} {:>8}  {status:<12} expected {expect}{note}",
                input["wallet_account"].as_str().unwrap_or(""),
                input["amount"].as_i64().unwrap_or(0)
            ),
        ));
    }
    rows.sort();
    println!("saga    wallet    amount  ended as");
    for (_, row) in &rows {
        println!("{row}");
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    println!(
        "\n{}\n",
        counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    );

    let mut accounts: Vec<&str> = WALLETS.to_vec();
    accounts.extend(["psp_clearing", "payout_clearing"]);
    let mut args = vec!["balance"];
    args.extend(accounts);
    print!("{}", ledger(&ledger_bin, &ledger_db, &args).await?);
    let sound =
        match ledger(&ledger_bin, &ledger_db, &["verify", "--pending-older-than", "0ms"]).await {
            Ok(report) => {
                println!("\nledger verify: sound\n{}", report.trim());
                true
            }
            Err(e) => {
                println!("\nledger verify: NOT sound\n{e}");
                false
            }
        };
    if !all_as_expected {
        println!("\nsome sagas did not end as expected (see above)");
    }

    if config.keep_running {
        println!(
            "\nRunning. Start sagas with NATS requests on `{}.start.topup`; Ctrl-C stops.",
            config.prefix
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
    let _ = server.await;
    services.stop().await;
    Ok(sound && all_as_expected)
}
