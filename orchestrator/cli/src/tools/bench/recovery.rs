//! `skald bench-recovery`: how long an orchestrator takes to finish the sagas
//! in flight after `kill -9`, and what they cost in memory.
//!
//! Runs `skald serve` as a child process (this same binary) on a fresh
//! database, starts `--in-flight` `bench` sagas through NATS start requests
//! while no participant answers (so every one waits on its first step, its
//! command published), kills the orchestrator with SIGKILL, starts the
//! `bench-participant` and a new `skald serve` on the same database, and
//! measures from that restart: the first partition lease taken, all of them,
//! and every saga terminal. Memory is read from /proc of both processes.
//!
//! The `bench` definition is served with long step timeouts (10 minutes) and
//! deadline (2 hours): with thousands of commands queued at one participant the
//! shipped 2-second timeouts would expire, and the run would measure retries
//! and compensations instead of recovery.

use crate::tools::bench::support::{self, TempDatabase, Timing, mib, proc_status_kib};
use crate::tools::stack::{self, Services};
use sagas::protocol::{Namespace, StartRequest, StartResponse};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use serde::Serialize;
use serde_json::json;
use skald_transport::BusOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const IN_FLIGHT_MAX: u64 = 1_000_000;
/// The `bench` saga with timeouts that a long queue at the participant cannot
/// reach: the shipped saga's three steps, each with a 10-minute timeout.
fn recovery_definition() -> String {
    let mut yaml = String::from(
        "# The shipped `bench` saga with long timeouts, for `skald bench-recovery`.\n\
         name: bench\n\
         version: 1\n\
         description: Three compensable steps on the `bench` participant (long timeouts, for recovery runs).\n\
         deadline: 2h\n\
         input_schema:\n  type: object\n\
         steps:\n",
    );
    for (k, name) in (1..).zip(["one", "two", "three"]) {
        yaml.push_str(&format!(
            "  - name: {name}\n    participant: bench\n    action: step{k}\n    compensation: undo{k}\n    \
             timeout: 10m\n    retry: {{ attempts: 3, initial_backoff: 50ms, max_backoff: 500ms }}\n    \
             compensation_retry: {{ attempts: 5, initial_backoff: 50ms, max_backoff: 1s }}\n    \
             input: {{ saga: \"{{{{saga.id}}}}\" }}\n"
        ));
    }
    yaml
}
const POLL: Duration = Duration::from_millis(100);
const FIRST: &str = "recovery-first";
const RESTARTED: &str = "recovery-restarted";

#[derive(Debug, Clone, clap::Args)]
pub struct RecoveryConfig {
    /// Sagas in flight when the orchestrator is killed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=IN_FLIGHT_MAX))]
    pub in_flight: u64,
    /// PostgreSQL admin URL: a database `skald_recovery_<random>` is created
    /// on that server and dropped afterwards. Default: a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// NATS server (with JetStream), credentials and TLS; every process of
    /// the run connects with these.
    #[command(flatten)]
    pub bus: BusOptions,
    /// Partitions of the orchestrator.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Lease TTL passed to `skald serve` (on SQLite the restarted instance
    /// waits up to about this long for the killed one's heartbeat and leases).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(500..=60_000))]
    pub lease_ttl_ms: u64,
    /// Start requests in flight while filling.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub start_concurrency: u64,
    /// Commands the bench participant handles at once (1-256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub participant_concurrency: u64,
    /// Give up waiting for the sagas to end after this many seconds.
    #[arg(long, default_value_t = 1_800, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_s: u64,
    /// The bench participant binary; default: `bench-participant` next to `skald`, else on PATH.
    #[arg(long)]
    pub participant_bin: Option<PathBuf>,
    /// Restart under the killed instance's `--instance` name, as a supervisor
    /// restarting the same service does: it takes its own leases back at once
    /// (bumping their epochs) instead of waiting for them to expire.
    #[arg(long)]
    pub same_instance: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured. Times are seconds from the restart (the spawn of the
/// new `skald serve`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub in_flight: u64,
    pub database: String,
    pub partitions: u32,
    pub lease_ttl_ms: u64,
    /// The restarted instance took the killed one's `--instance` name.
    pub same_instance: bool,
    /// Start requests answered while filling (through NATS, by the first instance).
    pub starts: Timing,
    /// From the first start request until every saga was stored and its first command published.
    pub fill_s: f64,
    pub first_lease_s: Option<f64>,
    pub all_leases_s: Option<f64>,
    /// Until every saga was terminal (none if `--timeout-s` passed first).
    pub recovered_s: Option<f64>,
    /// Sagas ended per second after the first lease.
    pub recovery_sagas_per_sec: f64,
    pub completed: u64,
    pub compensated: u64,
    pub failed: u64,
    pub parked: u64,
    /// Sagas not terminal when the run stopped waiting.
    pub not_ended: u64,
    /// The first instance once it held its leases, before any saga.
    pub rss_idle_mb: f64,
    /// The first instance with every saga in flight, just before `kill -9`.
    pub rss_in_flight_mb: f64,
    /// The restarted instance: its RSS when it first held every lease, and its peak while recovering.
    pub restarted_rss_all_leases_mb: f64,
    pub restarted_rss_peak_mb: f64,
    /// (first instance in flight − idle) / N.
    pub kib_per_saga: f64,
    /// (restarted peak − first instance idle) / N.
    pub restarted_kib_per_saga: f64,
}

impl Report {
    /// A human table.
    #[must_use]
    pub fn to_table(&self) -> String {
        let secs = |s: Option<f64>| s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"));
        format!(
            "in flight            {} bench sagas, all waiting on step one\n\
             database             {}\n\
             partitions           {} (lease TTL {} ms)\n\
             restarted as         {}\n\
             fill                 {:.1} s ({:.0} starts/s over NATS, p50 {:.1} ms, p99 {:.1} ms)\n\
             after kill -9 and restart:\n\
             \x20 first lease        {}\n\
             \x20 all leases         {}\n\
             \x20 all terminal       {}\n\
             \x20 throughput         {:.0} sagas/s after the first lease\n\
             \x20 ended as           {} completed, {} compensated, {} failed, {} parked, {} not ended\n\
             memory (VmRSS):\n\
             \x20 idle               {:.1} MiB (first instance, leases held, no saga)\n\
             \x20 with N in flight   {:.1} MiB (first instance, before kill -9) = {:.2} KiB per saga\n\
             \x20 restarted          {:.1} MiB when it held every lease, {:.1} MiB peak = {:.2} KiB per saga\n",
            self.in_flight,
            self.database,
            self.partitions,
            self.lease_ttl_ms,
            if self.same_instance { "the same instance" } else { "another instance" },
            self.fill_s,
            self.starts.per_sec,
            self.starts.p50_us / 1e3,
            self.starts.p99_us / 1e3,
            secs(self.first_lease_s),
            secs(self.all_leases_s),
            secs(self.recovered_s),
            self.recovery_sagas_per_sec,
            self.completed,
            self.compensated,
            self.failed,
            self.parked,
            self.not_ended,
            self.rss_idle_mb,
            self.rss_in_flight_mb,
            self.kib_per_saga,
            self.restarted_rss_all_leases_mb,
            self.restarted_rss_peak_mb,
            self.restarted_kib_per_saga,
        )
    }
}

/// `skald bench-recovery`: run, print, exit status.
pub fn main(config: &RecoveryConfig) -> anyhow::Result<ExitCode> {
    support::run_main("bench-recovery", config.json, run(config), Report::to_table)
}

/// Run the benchmark on a temporary database, then remove it.
pub async fn run(config: &RecoveryConfig) -> Result<Report, String> {
    let db = support::temp_database(config.database_url.as_deref(), "recovery").await?;
    let prefix = format!("recovery{}", support::token());
    let client = config.bus.connect("skald-bench-recovery").await.map_err(|e| e.to_string())?;
    let result = recover(config, &db, &client, &prefix).await;
    support::delete_streams(&client, &prefix).await;
    let kept = result.is_err().then(|| db.dir.clone());
    if let Some(dir) = &kept {
        for log in ["skald-first.log", "skald-restarted.log", "participant.log"] {
            let tail = log_tail(&dir.join(log), 15);
            if !tail.is_empty() {
                eprintln!("--- last lines of {log}:\n{tail}");
            }
        }
    }
    db.remove().await;
    result
}

/// How long the children get to exit after SIGTERM at the end of a run.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Start `bin` with `args` among `children`, its stderr in the file `log`: its pid.
fn spawn_logged(
    children: &mut Services,
    bin: &Path,
    args: &[String],
    log: &Path,
    bus: &BusOptions,
) -> Result<u32, String> {
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut cmd = stack::command(bin);
    cmd.args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(log_file);
    bus.pass_to(cmd.as_std_mut());
    children.start(&mut cmd).map_err(|e| {
        format!(
            "cannot start `{}`: {e}. Build it with `cargo build --release -p skald-cli \
             -p bench-participant` (or pass --participant-bin)",
            bin.display()
        )
    })
}

/// Reads the orchestrator's tables over its own connection (plain SQL, so it
/// never runs migrations against the instance it watches).
#[derive(Debug)]
struct Probe {
    db: DatabaseConnection,
}

impl Probe {
    async fn connect(url: &str) -> Result<Self, String> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(2)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false);
        let db = Database::connect(options).await.map_err(|e| format!("probe: {e}"))?;
        Ok(Self { db })
    }

    async fn rows(&self, sql: &str) -> Result<Vec<sea_orm::QueryResult>, String> {
        self.db
            .query_all(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .map_err(|e| format!("{sql}: {e}"))
    }

    /// Sagas per status.
    async fn statuses(&self) -> Result<Vec<(String, u64)>, String> {
        let rows = self.rows("SELECT status, COUNT(*) AS n FROM sagas GROUP BY status").await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("", "status").map_err(|e| e.to_string())?;
                let n: i64 = r.try_get("", "n").map_err(|e| e.to_string())?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Sagas not in a terminal status.
    async fn open(&self) -> Result<u64, String> {
        Ok(self
            .statuses()
            .await?
            .into_iter()
            .filter(|(s, _)| !matches!(s.as_str(), "completed" | "compensated" | "failed"))
            .map(|(_, n)| n)
            .sum())
    }

    /// Partitions whose lease `owner` holds now.
    async fn leases_held(&self, owner: &str) -> Result<u64, String> {
        let now = orchestrator::clock::Clock::now_db(&orchestrator::clock::SystemClock);
        let rows = self.rows("SELECT owner, expires_at_ms FROM leases").await?;
        let mut held = 0;
        for r in rows {
            let o: String = r.try_get("", "owner").map_err(|e| e.to_string())?;
            let expires: i64 = r.try_get("", "expires_at_ms").map_err(|e| e.to_string())?;
            if o == owner && expires > now {
                held += 1;
            }
        }
        Ok(held)
    }

    async fn outbox_rows(&self) -> Result<u64, String> {
        let rows = self.rows("SELECT COUNT(*) AS n FROM outbox").await?;
        let n: i64 = rows
            .first()
            .map(|r| r.try_get("", "n"))
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

fn serve_args(
    config: &RecoveryConfig,
    url: &str,
    prefix: &str,
    defs: &Path,
    instance: &str,
) -> Vec<String> {
    [
        "serve",
        "--database-url",
        url,
        "--prefix",
        prefix,
        "--definitions",
        &defs.display().to_string(),
        "--partitions",
        &config.partitions.to_string(),
        "--http-addr",
        "off",
        "--instance",
        instance,
        "--lease-ttl-ms",
        &config.lease_ttl_ms.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn rss(pid: u32) -> u64 {
    proc_status_kib(Some(pid), "VmRSS").unwrap_or(0)
}

async fn recover(
    config: &RecoveryConfig,
    db: &TempDatabase,
    client: &async_nats::Client,
    prefix: &str,
) -> Result<Report, String> {
    let n = config.in_flight;
    let defs = db.dir.join("definitions");
    std::fs::create_dir_all(&defs).map_err(|e| e.to_string())?;
    std::fs::write(defs.join("bench.yaml"), recovery_definition()).map_err(|e| e.to_string())?;
    let skald = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let participant_bin =
        stack::given_or_sibling(config.participant_bin.as_ref(), "bench-participant");
    let mut children = Services::default();
    let serve = |children: &mut Services, instance: &str, log: &str| {
        let args = serve_args(config, &db.url, prefix, &defs, instance);
        spawn_logged(children, &skald, &args, &db.dir.join(log), &config.bus)
    };

    // The first instance, until it holds every partition.
    let first = serve(&mut children, FIRST, "skald-first.log")?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    let probe = loop {
        if let Some(status) = children.exited(first) {
            return Err(format!("`skald serve` exited at start ({status})"));
        }
        if Instant::now() > ready_by {
            return Err("`skald serve` did not take its partitions within 60 s".into());
        }
        tokio::time::sleep(POLL).await;
        let Ok(probe) = Probe::connect(&db.url).await else { continue };
        if probe.leases_held(FIRST).await.unwrap_or(0) == u64::from(config.partitions) {
            break probe;
        }
    };
    let rss_idle = rss(first);

    // N sagas through NATS start requests; nothing answers their commands yet.
    eprintln!("bench-recovery: starting {n} sagas on {}…", db.kind());
    let ns = Namespace::new(prefix)?;
    let subject = ns.start_subject("bench");
    let began = Instant::now();
    let start = {
        let client = client.clone();
        move |i: u64| {
            let (client, subject) = (client.clone(), subject.clone());
            async move { start_one(&client, subject, i).await }
        }
    };
    let starts = support::drive(n, config.start_concurrency, start).await?;
    loop {
        if let Some(status) = children.exited(first) {
            return Err(format!("`skald serve` exited while filling ({status})"));
        }
        if probe.open().await? >= n && probe.outbox_rows().await? == 0 {
            break;
        }
        if began.elapsed() > Duration::from_secs(config.timeout_s) {
            return Err("the sagas were not all stored and published in time".into());
        }
        tokio::time::sleep(POLL).await;
    }
    let fill_s = began.elapsed().as_secs_f64();
    let rss_in_flight = rss(first);

    // kill -9, then the participant and a new instance on the same database.
    children.kill(first).await;
    eprintln!("bench-recovery: killed the orchestrator with {n} sagas in flight; restarting");
    let participant_args: Vec<String> = [
        "--prefix",
        prefix,
        "--database-url",
        &stack::sqlite_url(&db.dir, "participant.db"),
        "--concurrency",
        &config.participant_concurrency.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let participant = spawn_logged(
        &mut children,
        &participant_bin,
        &participant_args,
        &db.dir.join("participant.log"),
        &config.bus,
    )?;
    let restart = Instant::now();
    let restarted_as = if config.same_instance { FIRST } else { RESTARTED };
    let restarted = serve(&mut children, restarted_as, "skald-restarted.log")?;
    let (mut first_lease, mut all_leases, mut recovered) = (None, None, None);
    let (mut rss_all_leases, mut rss_peak) = (0, 0);
    let mut last_report = Instant::now();
    let mut open = n;
    while restart.elapsed() < Duration::from_secs(config.timeout_s) {
        for (pid, what) in
            [(restarted, "the restarted `skald serve`"), (participant, "the bench participant")]
        {
            if let Some(status) = children.exited(pid) {
                return Err(format!("{what} exited ({status})"));
            }
        }
        let now_s = restart.elapsed().as_secs_f64();
        rss_peak = rss_peak.max(rss(restarted));
        if all_leases.is_none() {
            let held = probe.leases_held(restarted_as).await?;
            if held > 0 && first_lease.is_none() {
                first_lease = Some(now_s);
            }
            if held == u64::from(config.partitions) {
                all_leases = Some(now_s);
                rss_all_leases = rss(restarted);
            }
        }
        open = probe.open().await?;
        if open == 0 {
            recovered = Some(restart.elapsed().as_secs_f64());
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {now_s:.0} s after restart: {} of {n} ended", n.saturating_sub(open));
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    rss_peak = rss_peak.max(proc_status_kib(Some(restarted), "VmHWM").unwrap_or(0));
    let statuses = probe.statuses().await?;
    let count = |s: &str| statuses.iter().find(|(k, _)| k == s).map_or(0, |(_, v)| *v);
    let _ = probe.db.close().await;
    children.stop_within(STOP_GRACE).await;

    let per_saga = |kib: u64| kib.saturating_sub(rss_idle) as f64 / n as f64;
    let ended_after_lease = match (recovered, first_lease) {
        (Some(r), Some(f)) if r > f => n as f64 / (r - f),
        _ => 0.0,
    };
    Ok(Report {
        in_flight: n,
        database: db.kind().to_owned(),
        partitions: config.partitions,
        lease_ttl_ms: config.lease_ttl_ms,
        same_instance: config.same_instance,
        starts,
        fill_s,
        first_lease_s: first_lease,
        all_leases_s: all_leases,
        recovered_s: recovered,
        recovery_sagas_per_sec: ended_after_lease,
        completed: count("completed"),
        compensated: count("compensated"),
        failed: count("failed"),
        parked: count("parked"),
        not_ended: open,
        rss_idle_mb: mib(rss_idle),
        rss_in_flight_mb: mib(rss_in_flight),
        restarted_rss_all_leases_mb: mib(rss_all_leases),
        restarted_rss_peak_mb: mib(rss_peak),
        kib_per_saga: per_saga(rss_in_flight),
        restarted_kib_per_saga: per_saga(rss_peak),
    })
}

/// One start request, retried (same idempotency key) when unanswered.
async fn start_one(client: &async_nats::Client, subject: String, i: u64) -> Result<(), String> {
    let body = serde_json::to_vec(&StartRequest {
        idempotency_key: format!("recovery-{i}"),
        input: json!({}),
        wait_ms: None,
    })
    .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for _ in 0..5 {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(subject.clone(), body.clone().into()),
        )
        .await;
        match answer {
            Ok(Ok(msg)) => {
                return match serde_json::from_slice(&msg.payload) {
                    Ok(StartResponse::Started { .. } | StartResponse::Existing { .. }) => Ok(()),
                    Ok(StartResponse::Refused { code, message, .. }) => {
                        Err(format!("start refused: {code}: {message}"))
                    }
                    Err(e) => Err(format!("unreadable start response: {e}")),
                };
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 10 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("start request {i} failed: {last}"))
}

/// The last `lines` lines of a log file.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_recovery_definition_is_the_bench_saga_with_long_timeouts() {
        let long = ::sagas::definition::load("bench.yaml", &recovery_definition()).unwrap();
        let shipped = stack::definition(stack::BENCH).unwrap();
        let steps = |d: &::sagas::Definition| -> Vec<_> {
            d.steps
                .iter()
                .map(|s| {
                    (s.name.clone(), s.action.clone(), s.compensation.clone(), s.retry.attempts)
                })
                .collect()
        };
        assert_eq!((&long.name, long.version), (&shipped.name, shipped.version));
        assert_eq!(steps(&long), steps(&shipped));
        assert!(
            long.steps.iter().all(|s| s.participant == "bench" && s.timeout.to_string() == "10m")
        );
        assert_eq!(long.deadline.map(|d| d.to_string()).as_deref(), Some("2h"));
    }
}
