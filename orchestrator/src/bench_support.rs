//! Pieces the benchmark commands share (`bench-floor`, `bench-scale`,
//! `bench-recovery`, `bench-topup`): a temporary database (a SQLite file, or a
//! PostgreSQL database created on an admin URL and dropped afterwards), an
//! operation loop that keeps a fixed number of operations in flight and times
//! each one, percentiles, and memory read from /proc.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
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
    let _logging = crate::trace::init_logging("warn");
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

/// A short random token for names (lowercase hex).
#[must_use]
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A database that exists for one benchmark run: call [`TempDatabase::remove`]
/// when done (the directory of a SQLite file is also removed on drop).
#[derive(Debug)]
pub struct TempDatabase {
    /// The URL to connect to.
    pub url: String,
    /// The temporary directory (SQLite file, and anything else the run keeps).
    pub dir: PathBuf,
    /// The admin URL and name of a PostgreSQL database to drop.
    postgres: Option<(String, String)>,
}

impl TempDatabase {
    /// A fresh database: `skald_<label>_<random>` on the PostgreSQL server of
    /// `admin_url`, or a SQLite file in a new temporary directory.
    pub async fn create(admin_url: Option<&str>, label: &str) -> Result<Self, String> {
        let tag = token();
        let dir = std::env::temp_dir().join(format!("skald-{label}-{tag}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let Some(admin) = admin_url else {
            let url = format!("sqlite://{}", dir.join("skald.db").display());
            return Ok(Self { url, dir, postgres: None });
        };
        if !admin.starts_with("postgres://") && !admin.starts_with("postgresql://") {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "--database-url must be a PostgreSQL admin URL (postgres://USER@HOST/DB); \
                 `{}` is not",
                crate::store::redact(admin)
            ));
        }
        let name = format!("skald_{label}_{tag}");
        let conn = admin_connection(admin).await.map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!(
                "cannot connect to PostgreSQL at {}: {e}. Is it running? \
                 (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)",
                crate::store::redact(admin)
            )
        })?;
        let created = conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await;
        let _ = conn.close().await;
        if let Err(e) = created {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("cannot create database {name}: {e}"));
        }
        let url = with_database(admin, &name);
        Ok(Self { url, dir, postgres: Some((admin.to_owned(), name)) })
    }

    /// Whether this is a PostgreSQL database.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A name for reports: `sqlite` or `postgres`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        if self.is_postgres() { "postgres" } else { "sqlite" }
    }

    /// Drop the PostgreSQL database (closing other sessions) and delete the
    /// directory. Best effort: a failure is printed, not returned.
    pub async fn remove(mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            match admin_connection(&admin).await {
                Ok(conn) => {
                    let dropped = conn
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    if let Err(e) = dropped {
                        eprintln!("warning: cannot drop database {name}: {e}");
                    }
                    let _ = conn.close().await;
                }
                Err(e) => eprintln!("warning: cannot drop database {name}: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((_, name)) = &self.postgres {
            eprintln!("warning: database {name} was left behind (drop it with `dropdb {name}`)");
        }
    }
}

/// One quiet connection to the admin database (no slow-statement warnings
/// for CREATE and DROP DATABASE).
async fn admin_connection(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).connect_timeout(Duration::from_secs(5)).sqlx_logging(false);
    Database::connect(options).await
}

/// `url` with its database (path) replaced by `name`, keeping any query.
#[must_use]
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let after_at =
        base[authority_start..].rfind('@').map_or(authority_start, |i| authority_start + i + 1);
    let host_end = base[after_at..].find('/').map_or(base.len(), |i| after_at + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
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
/// each one. The first error stops the run.
pub async fn drive<F, Fut>(ops: u64, concurrency: u64, op: F) -> Result<Timing, String>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
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

/// Send SIGTERM to a process (through `kill`, as this crate has no libc).
pub async fn terminate(pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
}

/// Delete the JetStream streams of `prefix` (a run's commands and replies).
pub async fn delete_streams(client: &async_nats::Client, prefix: &str) {
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(ns) = sagas::protocol::Namespace::new(prefix) {
        for stream in [ns.commands_stream(), ns.replies_stream()] {
            let _ = js.delete_stream(stream).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_admin_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@h", "x"), "postgres://u:p@h/x");
        assert_eq!(
            with_database("postgres://u:p/w@h/db?sslmode=disable", "x"),
            "postgres://u:p/w@h/x?sslmode=disable"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 1.0) - 100.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).abs() < f64::EPSILON);
    }
}
