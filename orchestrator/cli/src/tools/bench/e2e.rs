//! `skald bench`: the `bench` saga end to end, with figures.
//!
//! Starts what it needs — a fresh database (a temporary SQLite file unless
//! `--database-url` is given), an orchestrator in this process, and the
//! `bench-participant` process over real NATS — then keeps `--concurrency`
//! sagas in flight until `--sagas` have ended, and reports counts by end state,
//! sagas per second, start-to-end latency percentiles and peak memory. This is
//! a benchmark, not a test: it asserts nothing.

use crate::tools::bench::support::{self, Processes, SagaRun};
use crate::tools::stack::{self, InProcess};
use orchestrator::serve::{Orchestrator, ServeConfig};
use serde_json::json;
use skald_transport::BusOptions;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

pub const SAGAS_MAX: u64 = 10_000_000;
pub const CONCURRENCY_MAX: u64 = 100_000;

/// Most commands one participant replica handles at once (the SDK's limit;
/// the orchestrator does not depend on the SDK, so it is repeated here).
const PARTICIPANT_IN_FLIGHT_MAX: u64 = 256;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// How many sagas to run.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=SAGAS_MAX))]
    pub sagas: u64,
    /// How many sagas are in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=CONCURRENCY_MAX))]
    pub concurrency: u64,
    /// Make step K (1-3) fail, so every saga compensates the steps before it.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub fail_step: Option<u8>,
    /// Database URL; default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// NATS server (with JetStream), credentials and TLS; every process of
    /// the run connects with these.
    #[command(flatten)]
    pub bus: BusOptions,
    /// Partitions for the orchestrator.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// The bench participant binary; default: `bench-participant` next to `skald`, else on PATH.
    #[arg(long)]
    pub participant_bin: Option<PathBuf>,
    /// Give the `bench` saga this many business tags (each `{{saga.id}}`),
    /// to measure what tags cost a start.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=8))]
    pub tags: u8,
    /// Have a caller wait for each saga's end (as `?wait=` does) while it
    /// runs, to measure what waiting callers cost the engine.
    #[arg(long)]
    pub waiters: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The `bench` definition, with `tags` business tags.
fn bench_definition(tags: u8) -> Result<sagas::Definition, String> {
    let (name, yaml) = stack::BENCH;
    if tags == 0 {
        return stack::definition((name, yaml));
    }
    let block: String = (0..tags).map(|i| format!("  t{i}: \"{{{{saga.id}}}}\"\n")).collect();
    let tagged = yaml.replacen("\nsteps:", &format!("\ntags:\n{block}steps:"), 1);
    stack::definition((name, &tagged))
}

/// What a run measured.
pub type Report = SagaRun;

/// Run the benchmark.
pub async fn run(config: &BenchConfig) -> Result<Report, String> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{}", &run_id[..10]);
    let tmp = std::env::temp_dir().join(format!("skald-bench-{}", &run_id[..10]));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.join("skald.db").display()));
    let definition =
        bench_definition(config.tags).map_err(|e| format!("cannot start a saga: {e}"))?;
    let serve = ServeConfig {
        bus: config.bus.clone(),
        database_url: database_url.clone(),
        prefix: prefix.clone(),
        definitions: tmp.clone(),
        partitions: config.partitions,
        http_addr: "off".to_owned(),
        ..ServeConfig::defaults()
    };
    let orchestrator = Orchestrator::connect_with(&serve, Some(vec![definition]))
        .await
        .map_err(|e| e.to_string())?;
    let client = orchestrator.client.clone();

    let bin = stack::given_or_sibling(config.participant_bin.as_ref(), "bench-participant");
    let stats_out = tmp.join("participant-stats.json");
    let mut participant = stack::command(&bin);
    participant
        .args(["--prefix", &prefix])
        .arg("--stats-out")
        .arg(&stats_out)
        .arg("--database-url")
        .arg(stack::sqlite_url(&tmp, "participant.db"))
        .args(["--concurrency", &config.concurrency.min(PARTICIPANT_IN_FLIGHT_MAX).to_string()])
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    config.bus.pass_to(participant.as_std_mut());
    if let Some(k) = config.fail_step {
        participant.args(["--fail-step", &k.to_string()]);
    }
    let mut participant = participant.spawn().map_err(|e| {
        format!(
            "cannot start the bench participant `{}`: {e}. Build it with `cargo build -p bench-participant` or pass --participant-bin",
            bin.display()
        )
    })?;

    stack::listening(&client, &prefix, "bench", || {
        participant.try_wait().ok().flatten().map(|status| status.to_string())
    })
    .await?;
    let mut running = InProcess::start(orchestrator);
    let driver = running.driver.clone();

    // What the run costs: CPU by process, NATS messages, statements.
    let on_postgres = database_url.starts_with("postgres");
    let mut parts = vec![
        ("skald".to_owned(), Processes::Pids(vec![std::process::id()])),
        ("participant".to_owned(), Processes::Pids(participant.id().into_iter().collect())),
        ("nats-server".to_owned(), Processes::Named("nats-server")),
    ];
    if on_postgres {
        parts.push(("postgres".to_owned(), Processes::Named("postgres")));
    }
    let nats = client.statistics();
    let nats_at = (nats.out_messages.load(Relaxed), nats.in_messages.load(Relaxed));
    let xids_at = if on_postgres { xid(driver.store()).await } else { None };
    let statements_at = driver.store().statements();
    let commits_at = driver.store().commits();
    let cpu = support::CpuMeter::start(parts);

    // With --waiters: one caller per saga in flight, waiting for its end.
    let waiting = tokio_util::task::TaskTracker::new();
    let stop_waiting = tokio_util::sync::CancellationToken::new();
    let began = Instant::now();
    let input = json!({});
    let latencies_ms = support::keep_in_flight(
        (config.sagas, config.concurrency),
        |i| {
            let (driver, input) = (driver.clone(), input.clone());
            let key = format!("{run_id}-{i}");
            async move { support::start_saga(&driver, "bench", &key, &input).await }
        },
        |id| {
            if config.waiters {
                let (driver, id, stop) = (driver.clone(), id.to_owned(), stop_waiting.clone());
                let most = std::time::Duration::from_millis(sagas::protocol::START_WAIT_MS_MAX);
                waiting.spawn(async move { driver.outcome(&id, most, &stop).await.is_ok() });
            }
        },
        &mut running.ended,
        async {
            let status = participant.wait().await;
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            format!("the bench participant exited early ({status})")
        },
    )
    .await?;
    let elapsed = began.elapsed();
    let mut costs = support::Costs {
        cpu_ms_per_saga: cpu.per_saga_ms(config.sagas),
        ..support::Costs::default()
    };
    let per_saga = |n: u64| n as f64 / config.sagas as f64;
    let nats_sent = nats.out_messages.load(Relaxed).saturating_sub(nats_at.0);
    let mut nats_received = nats.in_messages.load(Relaxed).saturating_sub(nats_at.1);
    costs.nats_sent_per_saga.insert("skald".into(), per_saga(nats_sent));
    costs
        .statements_per_saga
        .insert("skald".into(), per_saga(driver.store().statements() - statements_at));
    costs
        .transactions_per_saga
        .insert("skald".into(), per_saga(driver.store().commits() - commits_at));
    if let (Some(at), Some(now)) = (xids_at, xid(driver.store()).await) {
        // Less the two reads' own.
        costs.orchestrator_transactions_per_saga = Some(per_saga(now.saturating_sub(at + 1)));
    }
    stop_waiting.cancel();
    waiting.close();
    waiting.wait().await;

    let counts =
        driver.store().count_by_status().await.map_err(|e| format!("cannot start a saga: {e}"))?;
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n as u64);
    running.stop().await;
    // Stopped gently, so that it writes what it cost.
    if let Some(pid) = participant.id() {
        stack::terminate(pid).await;
    }
    if tokio::time::timeout(std::time::Duration::from_secs(10), participant.wait()).await.is_err() {
        let _ = participant.kill().await;
    }
    match std::fs::read_to_string(&stats_out)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(stats) => {
            let n = |k: &str| stats[k].as_u64().unwrap_or(0);
            costs.nats_sent_per_saga.insert("participant".into(), per_saga(n("nats_out_messages")));
            nats_received += n("nats_in_messages");
            costs.statements_per_saga.insert("participant".into(), per_saga(n("statements")));
            costs.transactions_per_saga.insert("participant".into(), per_saga(n("commits")));
        }
        None => tracing::warn!("the bench participant left no figures of what it cost"),
    }
    costs.cpu_ms_per_saga_total = costs.cpu_ms_per_saga.values().sum();
    costs.nats_sent_per_saga_total = costs.nats_sent_per_saga.values().sum();
    costs.nats_received_per_saga_total = per_saga(nats_received);
    // The run's streams served their purpose.
    support::delete_streams(&client, &prefix).await;
    let _ = std::fs::remove_dir_all(&tmp);

    let database = orchestrator::store::redact(&database_url);
    let mut report =
        SagaRun::new(config.sagas, config.concurrency, latencies_ms, elapsed, count, database);
    report.costs = Some(costs);
    Ok(report)
}

/// PostgreSQL's next transaction id (each transaction that writes takes
/// one, this read too): the difference over a run counts its write
/// transactions, on the whole server.
async fn xid(store: &orchestrator::store::Store) -> Option<u64> {
    use sea_orm::ConnectionTrait;
    let row = store
        .db()
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT txid_current()::bigint AS x",
        ))
        .await
        .ok()??;
    row.try_get::<i64>("", "x").ok().and_then(|x| u64::try_from(x).ok())
}

/// `skald bench`: run, print the report (table or JSON), exit status.
pub fn main(config: &BenchConfig) -> anyhow::Result<ExitCode> {
    support::run_main("bench", config.json, run(config), |report| report.table("", ""))
}
