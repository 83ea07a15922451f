//! `skald bench`: the `bench` saga end to end, with figures.
//!
//! Starts what it needs — a fresh database (a temporary SQLite file unless
//! `--database-url` is given), an orchestrator in this process, and the
//! `bench-participant` process over real NATS — then keeps `--concurrency`
//! sagas in flight until `--sagas` have ended, and reports counts by end state,
//! sagas per second, start-to-end latency percentiles and peak memory. This is
//! a benchmark, not a test: it asserts nothing.

use crate::serve::{Orchestrator, ServeConfig, ServeError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The shipped `bench` definition, built into the binary.
const BENCH_DEFINITION: &str = include_str!("../../sagas/definitions/bench.yaml");
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
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Partitions for the orchestrator.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// The bench participant binary; default: `bench-participant` next to `skald`, else on PATH.
    #[arg(long)]
    pub participant_bin: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(
        "cannot start the bench participant `{bin}`: {source}. Build it with `cargo build -p bench-participant` or pass --participant-bin"
    )]
    Participant { bin: String, source: std::io::Error },
    #[error("cannot start a saga: {0}")]
    Start(String),
    #[error("the bench participant exited early ({0})")]
    ParticipantExited(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
    pub peak_rss_mb: f64,
    pub database: String,
}

impl Report {
    /// The report as the JSON `--json` prints.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        json!(self)
    }

    /// A human table.
    #[must_use]
    pub fn to_table(&self) -> String {
        format!(
            "sagas        {}\nconcurrency  {}\ndatabase     {}\ncompleted    {}\ncompensated  {}\nparked       {}\nfailed       {}\nelapsed      {:.2} s\nthroughput   {:.0} sagas/s\nlatency p50  {:.2} ms\nlatency p99  {:.2} ms\nlatency max  {:.2} ms\npeak memory  {:.1} MiB (this process: orchestrator and load generator)\n",
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
        )
    }
}

fn participant_bin(config: &BenchConfig) -> PathBuf {
    config.participant_bin.clone().unwrap_or_else(|| sibling_binary("bench-participant"))
}

/// A program built next to this one (`target/<profile>/`), else found on PATH.
pub(crate) fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Run the benchmark.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{}", &run_id[..10]);
    let tmp = std::env::temp_dir().join(format!("skald-bench-{}", &run_id[..10]));
    std::fs::create_dir_all(&tmp)?;
    let database_url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.join("skald.db").display()));
    let definition = sagas::definition::load("bench.yaml", BENCH_DEFINITION)
        .map_err(|e| BenchError::Start(e.to_string()))?;
    let serve = ServeConfig {
        nats_url: config.nats_url.clone(),
        database_url: database_url.clone(),
        prefix: prefix.clone(),
        definitions: tmp.clone(),
        partitions: config.partitions,
        http_addr: "off".to_owned(),
        ..ServeConfig::defaults()
    };
    let mut orchestrator = Orchestrator::connect_with(&serve, Some(vec![definition])).await?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    orchestrator.driver = orchestrator.driver.clone().with_end_listener(ended_tx);
    let driver = orchestrator.driver.clone();
    let client = orchestrator.client.clone();

    let bin = participant_bin(config);
    let mut participant = tokio::process::Command::new(&bin);
    participant
        .args(["--prefix", &prefix, "--nats-url", &config.nats_url])
        .arg("--database-url")
        .arg(format!("sqlite://{}?mode=rwc", tmp.join("participant.db").display()))
        .args(["--concurrency", &config.concurrency.min(PARTICIPANT_IN_FLIGHT_MAX).to_string()])
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(k) = config.fail_step {
        participant.args(["--fail-step", &k.to_string()]);
    }
    let mut participant = participant
        .spawn()
        .map_err(|source| BenchError::Participant { bin: bin.display().to_string(), source })?;

    let shutdown = CancellationToken::new();
    let server = tokio::spawn(orchestrator.run(shutdown.clone()));

    let mut started_at: HashMap<String, Instant> = HashMap::new();
    // Sagas that ended before their start call returned (rare): end times.
    let mut ended_early: HashMap<String, Instant> = HashMap::new();
    let mut latencies_ms: Vec<f64> = Vec::with_capacity(config.sagas as usize);
    let began = Instant::now();
    let mut next = 0u64;
    let input = json!({});
    // Starts run concurrently, as from many clients: a serial loop of starts
    // would make the load generator, not the orchestrator, the bottleneck.
    let mut starting = FuturesUnordered::new();
    while (latencies_ms.len() as u64) < config.sagas {
        while next < config.sagas
            && ((started_at.len() + starting.len()) as u64) < config.concurrency
        {
            let (driver, input) = (driver.clone(), input.clone());
            let key = format!("{run_id}-{next}");
            starting.push(async move {
                let t = Instant::now();
                (t, driver.start("bench", &key, &input).await)
            });
            next += 1;
        }
        tokio::select! {
            // Each arm's future only polls; dropping it loses nothing (the
            // starts stay in `starting`, the channel keeps its messages).
            Some((t, started)) = starting.next(), if !starting.is_empty() => {
                let id = started.map_err(|e| BenchError::Start(e.to_string()))?.saga_id().to_owned();
                match ended_early.remove(&id) {
                    Some(end) => latencies_ms.push(end.duration_since(t).as_secs_f64() * 1_000.0),
                    None => {
                        started_at.insert(id, t);
                    }
                }
            }
            id = ended_rx.recv() => {
                match id.map(|id| (started_at.remove(&id), id)) {
                    Some((Some(t), _)) => latencies_ms.push(t.elapsed().as_secs_f64() * 1_000.0),
                    Some((None, id)) => {
                        ended_early.insert(id, Instant::now());
                    }
                    None => {}
                }
            }
            status = participant.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(BenchError::ParticipantExited(status));
            }
        }
    }
    let elapsed = began.elapsed();

    let counts =
        driver.store().count_by_status().await.map_err(|e| BenchError::Start(e.to_string()))?;
    let count = |s: &str| counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n as u64);
    shutdown.cancel();
    let _ = server.await;
    let _ = participant.kill().await;
    // The run's streams served their purpose.
    let js = async_nats::jetstream::new(client);
    let ns = sagas::protocol::Namespace::new(&prefix).map_err(BenchError::Start)?;
    for stream in [ns.commands_stream(), ns.replies_stream()] {
        let _ = js.delete_stream(stream).await;
    }
    let _ = std::fs::remove_dir_all(&tmp);

    latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((latencies_ms.len() as f64 * p).ceil() as usize).clamp(1, latencies_ms.len()) - 1;
        latencies_ms[i]
    };
    Ok(Report {
        sagas: config.sagas,
        concurrency: config.concurrency,
        completed: count("completed"),
        compensated: count("compensated"),
        parked: count("parked"),
        failed: count("failed"),
        sagas_per_sec: config.sagas as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        elapsed_s: elapsed.as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        database: crate::store::redact(&database_url),
    })
}

/// Peak resident memory of this process, from /proc (0 where unavailable).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
