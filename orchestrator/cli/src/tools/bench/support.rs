//! Pieces the benchmark commands share: their `main` ([`run_main`]), a
//! temporary database from the test kit (a SQLite file, or a PostgreSQL
//! database created on an admin URL and dropped afterwards), an operation loop
//! that keeps a fixed number of operations in flight and times each one
//! ([`drive`]), percentiles, the figures of a run of whole sagas
//! ([`SagaRun`], for `skald bench` and `bench-topup`), and memory read from
//! /proc.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The PostgreSQL admin URL the benchmark commands default to.
pub const POSTGRES_ADMIN_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A benchmark command's `main`: run `bench` on a new runtime, print its
/// report as one JSON object (`json`) or as `table` renders it, and say how
/// it ended (`skald <name>: <error>` and a failure status when it failed).
pub fn run_main<R, Fut>(
    name: &str,
    json: bool,
    bench: Fut,
    table: impl FnOnce(&R) -> String,
) -> anyhow::Result<std::process::ExitCode>
where
    R: Serialize,
    Fut: Future<Output = Result<R, String>>,
{
    let _logging = orchestrator::trace::init_logging("warn");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match runtime.block_on(bench) {
        Ok(report) if json => println!("{}", serde_json::json!(report)),
        Ok(report) => print!("{}", table(&report)),
        Err(e) => {
            eprintln!("skald {name}: {e}");
            return Ok(std::process::ExitCode::FAILURE);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub use skald_testkit::{TempDatabase, token};

/// A fresh database for one run: `skald_<label>_<random>` on the PostgreSQL
/// server of `admin_url`, or a SQLite file in a new temporary directory.
pub async fn temp_database(admin_url: Option<&str>, label: &str) -> Result<TempDatabase, String> {
    TempDatabase::create(admin_url, label).await.map_err(|e| e.to_string())
}

/// Latencies of a run of operations, and how long the run took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub ops: u64,
    pub concurrency: u64,
    pub elapsed_s: f64,
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Timing {
    /// From per-operation latencies (µs) and the wall time of the run.
    #[must_use]
    pub fn from_latencies(mut latencies_us: Vec<f64>, concurrency: u64, elapsed: Duration) -> Self {
        latencies_us.sort_by(f64::total_cmp);
        let ops = latencies_us.len() as u64;
        Self {
            ops,
            concurrency,
            elapsed_s: elapsed.as_secs_f64(),
            per_sec: ops as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_us: percentile(&latencies_us, 0.50),
            p99_us: percentile(&latencies_us, 0.99),
            max_us: percentile(&latencies_us, 1.0),
        }
    }
}

/// What a run of whole sagas measured (`skald bench`, `bench-topup`): how
/// they ended, how fast, and this process's peak memory.
#[derive(Debug, Clone, Serialize)]
pub struct SagaRun {
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
    /// What the run cost, per saga (`skald bench`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub costs: Option<Costs>,
}

/// What a run cost per saga: CPU by process, NATS messages, database
/// statements and transactions. The figures that explain a throughput.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Costs {
    /// CPU milliseconds (user + system) per saga, by process: `skald` (this
    /// process: orchestrator and load generator), `participant`,
    /// `nats-server` and, on PostgreSQL, `postgres` (every process of that
    /// name on this machine, so other work there counts too).
    pub cpu_ms_per_saga: BTreeMap<String, f64>,
    pub cpu_ms_per_saga_total: f64,
    /// NATS messages the processes' clients published per saga (each one
    /// message into nats-server: commands, replies, acknowledgements, pull
    /// requests), by process, and their sum.
    pub nats_sent_per_saga: BTreeMap<String, f64>,
    pub nats_sent_per_saga_total: f64,
    /// NATS messages the clients received per saga, in all.
    pub nats_received_per_saga_total: f64,
    /// Database statements per saga, by process (transaction control, such
    /// as `BEGIN` and `COMMIT`, not counted).
    pub statements_per_saga: BTreeMap<String, f64>,
    /// Transactions committed per saga, by process: `skald`, its writer's
    /// (the appends' batches; not its background writes such as leases and
    /// the relay's deletes), and `participant`, its SDK's (a group commit
    /// once).
    pub transactions_per_saga: BTreeMap<String, f64>,
    /// Write transactions per saga on PostgreSQL (transaction ids taken,
    /// `txid_current()` before and after: the whole server's, so run on a
    /// quiet one); none on SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator_transactions_per_saga: Option<f64>,
}

impl Costs {
    fn table(&self) -> String {
        let by = |m: &BTreeMap<String, f64>| {
            m.iter().map(|(k, v)| format!("{k} {v:.3}")).collect::<Vec<_>>().join(", ")
        };
        let mut t = format!(
            "cpu per saga {:.3} ms ({})\nnats per saga {:.1} sent ({}), {:.1} received\nstatements   {} per saga\ncommits      {} per saga\n",
            self.cpu_ms_per_saga_total,
            by(&self.cpu_ms_per_saga),
            self.nats_sent_per_saga_total,
            by(&self.nats_sent_per_saga),
            self.nats_received_per_saga_total,
            by(&self.statements_per_saga),
            by(&self.transactions_per_saga),
        );
        if let Some(x) = self.orchestrator_transactions_per_saga {
            t.push_str(&format!(
                "transactions {x:.3} per saga (all write transactions on PostgreSQL)\n"
            ));
        }
        t
    }
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (in clock ticks of 1/100 s, as Linux reports them).
#[must_use]
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields 14 (utime) and 15 (stime) of the line; the first after `)` is field 3.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The processes whose name (`/proc/<pid>/comm`) is `name`.
#[must_use]
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Which processes a [`CpuMeter`] part counts.
#[derive(Debug, Clone)]
pub enum Processes {
    /// These.
    Pids(Vec<u32>),
    /// Every process of this name, looked for again at the end, so that
    /// one started during the run (a database backend) counts too.
    Named(&'static str),
}

impl Processes {
    fn pids(&self) -> Vec<u32> {
        match self {
            Self::Pids(pids) => pids.clone(),
            Self::Named(name) => pids_named(name),
        }
    }
}

/// CPU used by groups of processes over a run.
#[derive(Debug)]
pub struct CpuMeter {
    parts: Vec<(String, Processes, BTreeMap<u32, f64>)>,
}

impl CpuMeter {
    /// Start measuring each (label, processes).
    #[must_use]
    pub fn start(parts: Vec<(String, Processes)>) -> Self {
        Self {
            parts: parts
                .into_iter()
                .map(|(label, which)| {
                    let at = which
                        .pids()
                        .into_iter()
                        .filter_map(|p| Some((p, cpu_seconds(p)?)))
                        .collect();
                    (label, which, at)
                })
                .collect(),
        }
    }

    /// CPU milliseconds per saga each group used since the start (a process
    /// that exited meanwhile counts nothing).
    #[must_use]
    pub fn per_saga_ms(&self, sagas: u64) -> BTreeMap<String, f64> {
        let n = sagas.max(1) as f64;
        self.parts
            .iter()
            .map(|(label, which, at)| {
                let used: f64 = which
                    .pids()
                    .into_iter()
                    .filter_map(|p| {
                        Some((cpu_seconds(p)? - at.get(&p).copied().unwrap_or(0.0)).max(0.0))
                    })
                    .sum();
                (label.clone(), used * 1_000.0 / n)
            })
            .collect()
    }
}

impl SagaRun {
    /// From each saga's start-to-end latency (ms), the run's wall time, the
    /// number of sagas that ended in each status (`count`) and the database.
    #[must_use]
    pub fn new(
        sagas: u64,
        concurrency: u64,
        mut latencies_ms: Vec<f64>,
        elapsed: Duration,
        count: impl Fn(&str) -> u64,
        database: String,
    ) -> Self {
        latencies_ms.sort_by(f64::total_cmp);
        Self {
            sagas,
            concurrency,
            completed: count("completed"),
            compensated: count("compensated"),
            parked: count("parked"),
            failed: count("failed"),
            sagas_per_sec: sagas as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: percentile(&latencies_ms, 0.50),
            p99_ms: percentile(&latencies_ms, 0.99),
            max_ms: percentile(&latencies_ms, 1.0),
            elapsed_s: elapsed.as_secs_f64(),
            peak_rss_mb: proc_status_kib(None, "VmHWM").map_or(0.0, mib),
            database,
            costs: None,
        }
    }

    /// A human table; `sagas_note` follows the number of sagas and
    /// `database_note` the database (each with its leading space, or empty).
    #[must_use]
    pub fn table(&self, sagas_note: &str, database_note: &str) -> String {
        let costs = self.costs.as_ref().map(Costs::table).unwrap_or_default();
        let table = format!(
            "sagas        {}{sagas_note}\nconcurrency  {}\ndatabase     {}{database_note}\ncompleted    {}\ncompensated  {}\nparked       {}\nfailed       {}\nelapsed      {:.2} s\nthroughput   {:.0} sagas/s\nlatency p50  {:.2} ms\nlatency p99  {:.2} ms\nlatency max  {:.2} ms\npeak memory  {:.1} MiB (this process: orchestrator and load generator)\n",
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
        );
        table + &costs
    }
}

/// The `p` quantile (0..=1) of sorted values, nearest rank; 0 when empty.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Run `op(0..ops)` with `concurrency` operations in flight (each worker runs
/// one operation at a time and takes the next number when it is done), timing
/// each one; what an operation returns is dropped. The first error stops the run.
pub async fn drive<F, Fut, T>(ops: u64, concurrency: u64, op: F) -> Result<Timing, String>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let began = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, ops.max(1)) {
        let (next, op) = (Arc::clone(&next), Arc::clone(&op));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, String>(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
        });
    }
    let mut all = Vec::with_capacity(usize::try_from(ops).unwrap_or(0));
    while let Some(done) = workers.join_next().await {
        all.extend(done.map_err(|e| format!("a benchmark task failed: {e}"))??);
    }
    Ok(Timing::from_latencies(all, concurrency, began.elapsed()))
}

/// Longest wait for the next saga to end before a run is given up.
pub const STALL_MAX: Duration = Duration::from_secs(120);

/// Start a saga of `saga_type` under idempotency key `key`: its id.
///
/// # Errors
/// The start's refusal, as text.
pub async fn start_saga(
    driver: &orchestrator::engine::driver::Driver,
    saga_type: &str,
    key: &str,
    input: &serde_json::Value,
) -> Result<String, String> {
    let started = driver.start(saga_type, key, input).await;
    started.map(|s| s.saga_id().to_owned()).map_err(|e| e.to_string())
}

/// Keep `concurrency` sagas in flight until `sagas` have ended. The starts
/// run concurrently, as from many clients: a serial loop of starts would
/// make the load generator, not the orchestrator, the bottleneck (each start
/// waits for its commit). `start(i)` starts saga `i` and returns its id,
/// `started(id)` runs as each start returns, `ended` receives the id of each
/// saga that ends, and `gone` returns (saying why) when something the run
/// needs has stopped. Returns each saga's latency in milliseconds, from its
/// start call to its end.
///
/// # Errors
/// A failed start, `gone`, or no saga ended for [`STALL_MAX`].
pub async fn keep_in_flight<S, SF>(
    (sagas, concurrency): (u64, u64),
    start: S,
    mut started: impl FnMut(&str),
    ended: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    gone: impl Future<Output = String>,
) -> Result<Vec<f64>, String>
where
    S: Fn(u64) -> SF,
    SF: Future<Output = Result<String, String>>,
{
    use futures::StreamExt;
    let mut started_at: HashMap<String, Instant> = HashMap::new();
    // Sagas that ended before their start call returned (rare): end times.
    let mut ended_early: HashMap<String, Instant> = HashMap::new();
    let mut latencies_ms = Vec::with_capacity(usize::try_from(sagas).unwrap_or(0));
    let mut starting = futures::stream::FuturesUnordered::new();
    let mut next = 0u64;
    let stall = tokio::time::sleep(STALL_MAX);
    tokio::pin!(stall, gone);
    while (latencies_ms.len() as u64) < sagas {
        while next < sagas && ((started_at.len() + starting.len()) as u64) < concurrency {
            let begun = start(next);
            starting.push(async move {
                let t = Instant::now();
                (t, begun.await)
            });
            next += 1;
        }
        tokio::select! {
            // Each arm's future only polls; dropping it loses nothing (the
            // starts stay in `starting`, the channel keeps its messages).
            Some((t, id)) = starting.next(), if !starting.is_empty() => {
                let id = id.map_err(|e| format!("cannot start a saga: {e}"))?;
                started(&id);
                match ended_early.remove(&id) {
                    Some(end) => latencies_ms.push(end.duration_since(t).as_secs_f64() * 1_000.0),
                    None => {
                        started_at.insert(id, t);
                    }
                }
            }
            id = ended.recv() => {
                let Some(id) = id else { return Err("the orchestrator stopped".into()) };
                stall.as_mut().reset(tokio::time::Instant::now() + STALL_MAX);
                match started_at.remove(&id) {
                    Some(t) => latencies_ms.push(t.elapsed().as_secs_f64() * 1_000.0),
                    None => {
                        ended_early.insert(id, Instant::now());
                    }
                }
            }
            why = &mut gone => return Err(why),
            () = &mut stall => {
                return Err(format!(
                    "no saga ended for {} s ({} of {sagas} ended)",
                    STALL_MAX.as_secs(),
                    latencies_ms.len(),
                ));
            }
        }
    }
    Ok(latencies_ms)
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`), for this
/// process when `pid` is `None`; `None` where unavailable.
#[must_use]
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/status".to_owned(), |p| format!("/proc/{p}/status"));
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// KiB as MiB.
#[must_use]
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Delete the JetStream streams of `prefix` (a run's commands and replies).
pub async fn delete_streams(client: &async_nats::Client, prefix: &str) {
    if let Ok(ns) = sagas::protocol::Namespace::new(prefix) {
        skald_testkit::delete_streams(client, &ns).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 1.0) - 100.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).abs() < f64::EPSILON);
    }
}
