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

use crate::tools::bench::support::{self, SagaRun, TempDatabase};
use crate::tools::stack::{self, InProcess, MoneyStack, ServiceBins};
use orchestrator::serve::{Orchestrator, ServeConfig};
use serde::Serialize;
use serde_json::json;
use skald_transport::BusOptions;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

pub const SAGAS_MAX: u64 = 1_000_000;

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
    /// NATS server (with JetStream), credentials and TLS; every process of
    /// the run connects with these.
    #[command(flatten)]
    pub bus: BusOptions,
    /// The ledger's group commit (`ledger serve --commit-group-max`): most
    /// postings that share one commit of its SQLite file; 1 commits each alone.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub ledger_commit_group_max: u16,
    /// The payment service's group commit (`payment serve
    /// --commit-group-max`): most of its writes (intents, answers) that share
    /// one commit of its SQLite file; 1 commits each alone.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub payment_commit_group_max: u16,
    /// Latency psp-sim adds to every provider call, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub psp_latency_ms: u64,
    #[command(flatten)]
    pub bins: ServiceBins,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: SagaRun,
    /// `ledger verify --pending-older-than 0ms` passed.
    pub ledger_sound: bool,
}

impl Report {
    /// A human table.
    #[must_use]
    pub fn to_table(&self) -> String {
        let table =
            self.run.table(" topup (hold, charge via psp-sim, post)", " (ledger, payment: SQLite)");
        let verify = if self.ledger_sound { "verify: sound" } else { "verify: NOT sound" };
        format!("{table}ledger       {verify}\n")
    }
}

/// `skald bench-topup`: run, print, exit status.
pub fn main(config: &TopupConfig) -> anyhow::Result<ExitCode> {
    support::run_main("bench-topup", config.json, run(config), Report::to_table)
}

/// Run the benchmark on a temporary database, then remove it.
pub async fn run(config: &TopupConfig) -> Result<Report, String> {
    let db = support::temp_database(config.database_url.as_deref(), "topup").await?;
    let prefix = format!("topup{}", support::token());
    let mut money = MoneyStack::new(&config.bins, &db.dir);
    let result = topups(config, &db, &prefix, &mut money).await;
    money.stop().await;
    if let Ok(client) = config.bus.connect("skald-bench-topup").await {
        support::delete_streams(&client, &prefix).await;
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
    money: &mut MoneyStack,
) -> Result<Report, String> {
    let e = |e: stack::StackError| e.to_string();
    let psp_port = money
        .start_psp_sim(&["--latency-ms", &config.psp_latency_ms.to_string()])
        .await
        .map_err(e)?;
    let ledger = money.ledger.clone();
    ledger.open_clearing("psp_clearing").await.map_err(e)?;
    let wallets: Vec<String> = (0..config.wallets).map(|w| format!("wallet{w}")).collect();
    for w in &wallets {
        ledger.open_wallet(w).await.map_err(e)?;
    }
    let participants = config.concurrency.clamp(1, 256).to_string();
    let ledger_group = config.ledger_commit_group_max.to_string();
    let payment_group = config.payment_commit_group_max.to_string();
    money
        .start_participants(
            prefix,
            [&config.bus, &config.bus],
            psp_port,
            &["--concurrency", &participants],
            [&["--commit-group-max", &ledger_group], &["--commit-group-max", &payment_group]],
        )
        .map_err(e)?;

    let definition = stack::definition(stack::TOPUP)?;
    let serve = ServeConfig {
        bus: config.bus.clone(),
        database_url: db.url.clone(),
        prefix: prefix.to_owned(),
        definitions: db.dir.clone(),
        partitions: 16,
        http_addr: "off".to_owned(),
        instance: Some("bench-topup".to_owned()),
        ..ServeConfig::defaults()
    };
    let orchestrator = Orchestrator::connect_with(&serve, Some(vec![definition]))
        .await
        .map_err(|e| e.to_string())?;
    for participant in ["ledger", "payment"] {
        stack::listening(&orchestrator.client, prefix, participant, || money.services.any_exited())
            .await?;
    }
    let mut running = InProcess::start(orchestrator);
    let driver = running.driver.clone();
    let ended_rx = &mut running.ended;
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
            match tokio::time::timeout(support::STALL_MAX, ended_rx.recv()).await {
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

        let began = Instant::now();
        let latencies_ms =
            support::keep_in_flight(
                (config.sagas, config.concurrency),
                |i| {
                    let (driver, input) = (driver.clone(), input(i));
                    async move {
                        support::start_saga(&driver, "topup", &format!("topup-{i}"), &input).await
                    }
                },
                |_| {},
                ended_rx,
                async {
                    loop {
                        if let Some(status) = money.services.any_exited() {
                            return format!("a service of the run exited early ({status})");
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                },
            )
            .await?;
        let elapsed = began.elapsed();
        let after =
            status_counts(&driver.store().count_by_status().await.map_err(|e| e.to_string())?);
        let count = |s: &str| {
            let n = after.get(s).copied().unwrap_or(0) - before.get(s).copied().unwrap_or(0);
            u64::try_from(n).unwrap_or(0)
        };
        let database = db.kind().to_owned();
        Ok::<_, String>(SagaRun::new(
            config.sagas,
            config.concurrency,
            latencies_ms,
            elapsed,
            count,
            database,
        ))
    }
    .await;
    running.stop().await;
    let run = measured?;
    Ok(Report { run, ledger_sound: ledger.verify().await.is_ok() })
}
