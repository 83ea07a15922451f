//! `skald bench-topup`: the realistic `topup` saga end to end, with figures.
//!
//! Starts the provider simulator (`psp-sim`, no faults), the `ledger` and
//! `payment` participants as processes (each on its own SQLite file), and an
//! orchestrator in this process on a fresh database (a temporary SQLite file,
//! or a temporary PostgreSQL database on `--database-url`); opens wallets; then
//! keeps `--concurrency` top-ups with good cards in flight until `--sagas` have
//! ended and reports sagas per second and start-to-end latency. Each top-up is
//! three steps (ledger `hold`, payment `charge` through psp-sim over HTTP,
//! ledger `post`). Ends with `ledger verify`. A benchmark: it asserts nothing.

use crate::bench::sibling_binary;
use crate::bench_support::{self, TempDatabase, mib, percentile, proc_status_kib};
use crate::serve::{Orchestrator, ServeConfig};
use crate::up::{Services, free_port, ledger, wait_port};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOPUP_DEFINITION: &str = include_str!("../../sagas/definitions/topup.yaml");
pub const SAGAS_MAX: u64 = 1_000_000;
/// Longest wait for the next saga to end before the run is given up.
const STALL_MAX: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub struct TopupConfig {
    /// How many top-ups to run.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=SAGAS_MAX))]
    pub sagas: u64,
    /// How many top-ups are in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Wallets the top-ups are spread over (round robin).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub wallets: u64,
    /// PostgreSQL admin URL for the orchestrator: a database
    /// `skald_topup_<random>` is created and dropped afterwards. Default: a
    /// temporary SQLite file. The ledger and payment use SQLite files either way.
    #[arg(long)]
    pub database_url: Option<String>,
    /// NATS server URL (with JetStream).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Latency psp-sim adds to every provider call, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub psp_latency_ms: u64,
    /// The `ledger` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub ledger_bin: Option<PathBuf>,
    /// The `payment` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub payment_bin: Option<PathBuf>,
    /// The `psp-sim` program (default: next to `skald`, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub psp_sim_bin: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sagas: u64,
    pub concurrency: u64,
    pub completed: u64,
    pub compensated: u64,
    pub parked: u64,
    pub failed: u64,
    pub sagas_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub elapsed_s: f64,
    /// This process (orchestrator and load generator).
    pub peak_rss_mb: f64,
    pub database: String,
    /// `ledger verify --pending-older-than 0ms` passed.
    pub ledger_sound: bool,
}

impl Report {
    /// A human table.
    #[must_use]
    pub fn to_table(&self) -> String {
        format!(
            "sagas        {} topup (hold, charge via psp-sim, post)\nconcurrency  {}\ndatabase     {} (ledger, payment: SQLite)\ncompleted    {}\ncompensated  {}\nparked       {}\nfailed       {}\nelapsed      {:.2} s\nthroughput   {:.0} sagas/s\nlatency p50  {:.2} ms\nlatency p99  {:.2} ms\nlatency max  {:.2} ms\npeak memory  {:.1} MiB (this process: orchestrator and load generator)\nledger       {}\n",
            self.sagas,
            self.concurrency,
            self.database,
            self.completed,
            self.compensated,
            self.parked,
            self.failed,
            self.elapsed_s,
            self.sagas_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.peak_rss_mb,
            if self.ledger_sound { "verify: sound" } else { "verify: NOT sound" },
        )
    }
}

/// `skald bench-topup`: run, print, exit status.
pub fn main(config: &TopupConfig) -> anyhow::Result<ExitCode> {
    bench_support::run_main("bench-topup", config.json, run(config), Report::to_table)
}

/// Run the benchmark on a temporary database, then remove it.
pub async fn run(config: &TopupConfig) -> Result<Report, String> {
    let db = TempDatabase::create(config.database_url.as_deref(), "topup").await?;
    let prefix = format!("topup{}", bench_support::token());
    let mut services = Services(Vec::new());
    let result = topups(config, &db, &prefix, &mut services).await;
    services.stop().await;
    if let Ok(client) = crate::bus::connect(&config.nats_url, "skald-bench-topup").await {
        bench_support::delete_streams(&client, &prefix).await;
    }
    db.remove().await;
    result
}

fn status_counts(counts: &[(String, i64)]) -> HashMap<String, i64> {
    counts.iter().cloned().collect()
}

async fn topups(
    config: &TopupConfig,
    db: &TempDatabase,
    prefix: &str,
    services: &mut Services,
) -> Result<Report, String> {
    let pick =
        |given: &Option<PathBuf>, name: &str| given.clone().unwrap_or_else(|| sibling_binary(name));
    let (ledger_bin, payment_bin, psp_bin) = (
        pick(&config.ledger_bin, "ledger"),
        pick(&config.payment_bin, "payment"),
        pick(&config.psp_sim_bin, "psp-sim"),
    );
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", db.dir.join(name).display());
    let (ledger_db, payment_db) = (sqlite("ledger.db"), sqlite("payment.db"));
    let e = |e: crate::up::UpError| e.to_string();

    let psp_port = free_port().map_err(e)?;
    services
        .spawn(
            &psp_bin,
            &["--port", &psp_port.to_string(), "--latency-ms", &config.psp_latency_ms.to_string()],
            &[],
        )
        .map_err(e)?;
    wait_port(psp_port, "psp-sim").await.map_err(e)?;
    ledger(&ledger_bin, &ledger_db, &["accounts", "create", "psp_clearing", "--currency", "EUR"])
        .await
        .map_err(e)?;
    let wallets: Vec<String> = (0..config.wallets).map(|w| format!("wallet{w}")).collect();
    for w in &wallets {
        let args = [
            "accounts",
            "create",
            w,
            "--currency",
            "EUR",
            "--flags",
            "debits_must_not_exceed_credits",
        ];
        ledger(&ledger_bin, &ledger_db, &args).await.map_err(e)?;
    }
    let nats = config.nats_url.as_str();
    let participants = config.concurrency.clamp(1, 256).to_string();
    services
        .spawn(
            &ledger_bin,
            &["serve", "--prefix", prefix, "--nats-url", nats, "--concurrency", &participants],
            &[("DATABASE_URL", ledger_db.clone())],
        )
        .map_err(e)?;
    let psp_url = format!("http://127.0.0.1:{psp_port}");
    services
        .spawn(
            &payment_bin,
            &[
                "serve",
                "--prefix",
                prefix,
                "--nats-url",
                nats,
                "--database-url",
                &payment_db,
                "--psp-url",
                &psp_url,
                "--concurrency",
                &participants,
            ],
            &[],
        )
        .map_err(e)?;

    let definition =
        sagas::definition::load("topup.yaml", TOPUP_DEFINITION).map_err(|e| e.to_string())?;
    let serve = ServeConfig {
        nats_url: config.nats_url.clone(),
        database_url: db.url.clone(),
        prefix: prefix.to_owned(),
        definitions: db.dir.clone(),
        partitions: 16,
        http_addr: "off".to_owned(),
        instance: Some("bench-topup".to_owned()),
        ..ServeConfig::defaults()
    };
    let mut orchestrator = Orchestrator::connect_with(&serve, Some(vec![definition]))
        .await
        .map_err(|e| e.to_string())?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    orchestrator.driver = orchestrator.driver.clone().with_end_listener(ended_tx);
    let driver = orchestrator.driver.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(orchestrator.run(shutdown.clone()));

    let input = |i: u64| {
        json!({
            "wallet_account": wallets[usize::try_from(i % config.wallets).unwrap_or(0)],
            "funding_account": "psp_clearing",
            "amount": 1_000 + (i % 100) * 10,
            "currency": "EUR",
            "card_token": "tok_visa",
        })
    };
    let measured = async {
        // A few top-ups first, so the participants are up and their consumers made.
        let warmup = config.concurrency.clamp(1, 8);
        let mut open = std::collections::HashSet::new();
        for i in 0..warmup {
            let started = driver
                .start("topup", &format!("warmup-{i}"), &input(i))
                .await
                .map_err(|e| format!("cannot start a saga: {e}"))?;
            open.insert(started.saga_id().to_owned());
        }
        while !open.is_empty() {
            match tokio::time::timeout(STALL_MAX, ended_rx.recv()).await {
                Ok(Some(id)) => {
                    open.remove(&id);
                }
                _ => {
                    return Err("the warm-up top-ups did not end (are the participants up?)".into());
                }
            }
        }
        let before =
            status_counts(&driver.store().count_by_status().await.map_err(|e| e.to_string())?);

        let mut started_at: HashMap<String, Instant> = HashMap::new();
        let mut latencies_ms: Vec<f64> =
            Vec::with_capacity(usize::try_from(config.sagas).unwrap_or(0));
        let began = Instant::now();
        let mut next = 0u64;
        while (latencies_ms.len() as u64) < config.sagas {
            while next < config.sagas && (started_at.len() as u64) < config.concurrency {
                let t = Instant::now();
                let started = driver
                    .start("topup", &format!("topup-{next}"), &input(next))
                    .await
                    .map_err(|e| format!("cannot start a saga: {e}"))?;
                started_at.insert(started.saga_id().to_owned(), t);
                next += 1;
            }
            match tokio::time::timeout(STALL_MAX, ended_rx.recv()).await {
                Ok(Some(id)) => {
                    if let Some(t) = started_at.remove(&id) {
                        latencies_ms.push(t.elapsed().as_secs_f64() * 1_000.0);
                    }
                }
                Ok(None) => return Err("the orchestrator stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "no top-up ended for {} s ({} of {} ended)",
                        STALL_MAX.as_secs(),
                        latencies_ms.len(),
                        config.sagas
                    ));
                }
            }
        }
        let elapsed = began.elapsed();
        let after =
            status_counts(&driver.store().count_by_status().await.map_err(|e| e.to_string())?);
        let count = |s: &str| {
            let n = after.get(s).copied().unwrap_or(0) - before.get(s).copied().unwrap_or(0);
            u64::try_from(n).unwrap_or(0)
        };
        latencies_ms.sort_by(f64::total_cmp);
        Ok::<_, String>(Report {
            sagas: config.sagas,
            concurrency: config.concurrency,
            completed: count("completed"),
            compensated: count("compensated"),
            parked: count("parked"),
            failed: count("failed"),
            sagas_per_sec: config.sagas as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: percentile(&latencies_ms, 0.50),
            p99_ms: percentile(&latencies_ms, 0.99),
            max_ms: percentile(&latencies_ms, 1.0),
            elapsed_s: elapsed.as_secs_f64(),
            peak_rss_mb: proc_status_kib(None, "VmHWM").map_or(0.0, mib),
            database: db.kind().to_owned(),
            ledger_sound: false,
        })
    }
    .await;
    shutdown.cancel();
    let _ = server.await;
    let mut report = measured?;
    report.ledger_sound =
        ledger(&ledger_bin, &ledger_db, &["verify", "--pending-older-than", "0ms"]).await.is_ok();
    Ok(report)
}
