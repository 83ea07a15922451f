//! `skald bench-scale`: how the cost of the orchestrator's queries grows with
//! the number of sagas stored.
//!
//! For an empty store and then each size in `--sizes`, a fresh database is
//! filled with synthetic sagas (projection rows and one `saga_started` event
//! each, inserted in batches), mostly completed with about 1% running, parked,
//! retrying or overdue so that the stuck classes match some. Then it measures
//! the console's stuck inbox query (`Store::list` with `stuck_any`), the
//! overview's stuck count (`Store::count_matching`), and `Driver::start`
//! (which only writes the database), and reads this process's memory.

use crate::tools::bench::support::{self, TempDatabase, Timing, mib, proc_status_kib};
use crate::tools::stack;
use ::sagas::machine::SagaEvent;
use ::sagas::{Definition, UnixMillis};
use orchestrator::engine::driver::Driver;
use orchestrator::engine::registry::Registry;
use orchestrator::store::entities::{saga_events, sagas as saga_rows};
use orchestrator::store::{ListFilter, ListPage, Store};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, Statement, TransactionTrait};
use serde::Serialize;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Rows per INSERT statement (and per transaction) while filling.
const FILL_BATCH: u64 = 1_000;
pub const SIZE_MAX: u64 = 100_000_000;
const PARTITIONS: u32 = 16;
/// Spread of the synthetic sagas' start times.
const HISTORY_MS: i64 = 30 * 24 * 3_600_000;

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleConfig {
    /// Store sizes (sagas) to measure, comma-separated; an empty store is always measured first.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000",
          value_parser = clap::value_parser!(u64).range(1..=SIZE_MAX))]
    pub sizes: Vec<u64>,
    /// PostgreSQL admin URL: a database `skald_scale_<random>` is created on
    /// that server for each size and dropped afterwards. Default: a temporary
    /// SQLite file per size.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Queries and starts timed per measurement.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub runs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The figures for one store size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeRow {
    pub sagas: u64,
    /// Sagas in a stuck class (what the stuck inbox lists).
    pub stuck: u64,
    pub fill_s: f64,
    pub fill_sagas_per_sec: f64,
    pub db_size_mb: f64,
    /// `Store::list` with `stuck_any`, first page of 50, newest first.
    pub stuck_list: Timing,
    /// `Store::count_matching` with `stuck_any`.
    pub stuck_count: Timing,
    /// `Driver::start` of a `bench` saga (one transaction, no NATS).
    pub start: Timing,
    /// This process's VmRSS after filling (before the timed queries).
    pub rss_after_fill_mb: f64,
    /// This process's VmRSS after the timed queries and starts.
    pub rss_after_mb: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub database: String,
    pub runs: u64,
    pub sizes: Vec<SizeRow>,
}

impl Report {
    /// A human table (milliseconds).
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "database: {} — {} runs per measurement, times in ms\n\n{:>10} {:>7} {:>8} {:>9} {:>9} {:>17} {:>17} {:>17} {:>8}\n",
            self.database,
            self.runs,
            "sagas",
            "stuck",
            "fill s",
            "fill/s",
            "db MiB",
            "stuck list p50/99",
            "stuck count p50/99",
            "start p50/99",
            "RSS MiB"
        );
        let pair = |t: &Timing| format!("{:.2} / {:.2}", t.p50_us / 1e3, t.p99_us / 1e3);
        for r in &self.sizes {
            out.push_str(&format!(
                "{:>10} {:>7} {:>8.1} {:>9.0} {:>9.1} {:>17} {:>17} {:>17} {:>8.1}\n",
                r.sagas,
                r.stuck,
                r.fill_s,
                r.fill_sagas_per_sec,
                r.db_size_mb,
                pair(&r.stuck_list),
                pair(&r.stuck_count),
                pair(&r.start),
                r.rss_after_fill_mb
            ));
        }
        out
    }
}

/// `skald bench-scale`: run, print, exit status.
pub fn main(config: &ScaleConfig) -> anyhow::Result<ExitCode> {
    support::run_main("bench-scale", config.json, run(config), Report::to_table)
}

/// Measure an empty store, then every size.
pub async fn run(config: &ScaleConfig) -> Result<Report, String> {
    let definition = stack::definition(stack::BENCH)?;
    let mut sizes = vec![0];
    sizes.extend(config.sizes.iter().copied().filter(|n| *n > 0));
    let mut rows = Vec::new();
    let mut database = String::new();
    for n in sizes {
        let db = support::temp_database(config.database_url.as_deref(), "scale").await?;
        database = db.kind().to_owned();
        eprintln!("bench-scale: {} sagas on {}…", n, db.kind());
        let measured = measure(&db, &definition, n, config.runs).await;
        db.remove().await;
        rows.push(measured?);
    }
    Ok(Report { database, runs: config.runs, sizes: rows })
}

async fn measure(
    db: &TempDatabase,
    definition: &Definition,
    n: u64,
    runs: u64,
) -> Result<SizeRow, String> {
    let store = Store::connect(&db.url).await.map_err(|e| e.to_string())?;
    let registry =
        Registry::with_store(&store, vec![definition.clone()]).await.map_err(|e| e.to_string())?;
    let began = Instant::now();
    fill(&store, definition, n).await?;
    if db.is_postgres() {
        // As autovacuum would after a bulk load: the planner needs statistics.
        store.db().execute_unprepared("ANALYZE").await.map_err(|e| e.to_string())?;
    }
    let fill_s = began.elapsed().as_secs_f64();
    let rss_after_fill_mb = proc_status_kib(None, "VmRSS").map_or(0.0, mib);
    let db_size_mb = db_size_mb(&store, db).await;

    let stuck_query = StuckQuery {
        store: store.clone(),
        filter: Arc::new(ListFilter { stuck_any: true, ..ListFilter::default() }),
        owned: Arc::new((0..i32::try_from(PARTITIONS).unwrap_or(16)).collect()),
    };
    let stuck = stuck_query.clone().count().await?;

    let list = {
        let q = stuck_query.clone();
        move |_: u64| q.clone().list()
    };
    let count = move |_: u64| stuck_query.clone().count();
    let driver = Driver::new(
        store.clone(),
        Arc::new(registry),
        ::sagas::protocol::Namespace::new("benchscale").map_err(|e| e.to_string())?,
        PARTITIONS,
    );
    let start = move |i: u64| {
        let driver = driver.clone();
        async move {
            driver
                .start("bench", &format!("scale-start-{i}"), &json!({"note": "bench-scale"}))
                .await
                .map_err(|e| format!("start: {e}"))
        }
    };
    // A few untimed runs first (statement caches, connections).
    let warm = 5.min(runs);
    support::drive(warm, 1, list.clone()).await?;
    let stuck_list = support::drive(runs, 1, list).await?;
    support::drive(warm, 1, count.clone()).await?;
    let stuck_count = support::drive(runs, 1, count).await?;
    let warm_start = start.clone();
    support::drive(warm, 1, move |i| warm_start(i + runs)).await?;
    let start = support::drive(runs, 1, start).await?;
    let rss_after_mb = proc_status_kib(None, "VmRSS").map_or(0.0, mib);
    let _ = store.db().clone().close().await;
    Ok(SizeRow {
        sagas: n,
        stuck,
        fill_s,
        fill_sagas_per_sec: if n == 0 { 0.0 } else { n as f64 / fill_s.max(1e-9) },
        db_size_mb,
        stuck_list,
        stuck_count,
        start,
        rss_after_fill_mb,
        rss_after_mb,
    })
}

/// The queries the console asks of the stuck sagas, over every partition.
#[derive(Clone)]
struct StuckQuery {
    store: Store,
    filter: Arc<ListFilter>,
    owned: Arc<Vec<i32>>,
}

impl StuckQuery {
    /// The stuck inbox: the first page, newest first.
    async fn list(self) -> Result<ListPage, String> {
        let now = orchestrator::clock::Clock::now_db(&orchestrator::clock::SystemClock);
        let page = orchestrator::api::sagas::PAGE_SIZE_DEFAULT;
        self.store.list(&self.filter, None, page, now, &self.owned).await.map_err(|e| e.to_string())
    }

    /// The overview's stuck count.
    async fn count(self) -> Result<u64, String> {
        let now = orchestrator::clock::Clock::now_db(&orchestrator::clock::SystemClock);
        self.store.count_matching(&self.filter, now, &self.owned).await.map_err(|e| e.to_string())
    }
}

/// The projection columns of synthetic saga `i` of `n`: mostly completed,
/// about 1% in one of the stuck classes or running normally.
struct Shape {
    status: &'static str,
    current_step: Option<&'static str>,
    current_kind: Option<&'static str>,
    attempt: i32,
    next_deadline_ms: Option<i64>,
    last_error: Option<&'static str>,
    park_reason: Option<&'static str>,
    deadline_at_ms: Option<i64>,
}

fn shape(i: u64, created_ms: i64, now_ms: i64) -> Shape {
    let ended = |status| Shape {
        status,
        current_step: None,
        current_kind: None,
        attempt: 0,
        next_deadline_ms: None,
        last_error: None,
        park_reason: None,
        deadline_at_ms: Some(created_ms + 60_000),
    };
    let active = |status, step, kind, attempt, next: i64, error| Shape {
        status,
        current_step: Some(step),
        current_kind: Some(kind),
        attempt,
        next_deadline_ms: Some(next),
        last_error: error,
        park_reason: None,
        deadline_at_ms: Some(now_ms + 3_600_000),
    };
    match (i % 300, i % 50, i % 1_000) {
        // Running normally: waiting on a reply within its timeout.
        (0, _, _) => active("running", "two", "do", 1, now_ms + 60_000, None),
        // Parked: its compensation's retries were spent.
        (1, _, _) => Shape {
            status: "parked",
            current_step: Some("one"),
            current_kind: Some("undo"),
            attempt: 5,
            next_deadline_ms: None,
            last_error: Some("bench_unavailable: the participant is unavailable"),
            park_reason: Some("compensation_stuck"),
            deadline_at_ms: Some(created_ms + 60_000),
        },
        // Retrying: the last attempt answered `retry`.
        (2, _, _) => active(
            "running",
            "three",
            "do",
            2,
            now_ms + 60_000,
            Some("bench_unavailable: the participant is unavailable"),
        ),
        // Overdue: nothing drove it past its next deadline.
        (3, _, _) => active("compensating", "two", "undo", 1, now_ms - 600_000, None),
        (_, 25, _) => ended("compensated"),
        (_, _, 7) => ended("failed"),
        _ => ended("completed"),
    }
}

/// Insert `n` synthetic sagas in batches of [`FILL_BATCH`], one transaction each.
async fn fill(store: &Store, definition: &Definition, n: u64) -> Result<(), String> {
    let now = orchestrator::clock::Clock::now_db(&orchestrator::clock::SystemClock);
    let step_ms = HISTORY_MS / i64::try_from(n.max(1)).unwrap_or(1);
    let mut i = 0;
    while i < n {
        let end = (i + FILL_BATCH).min(n);
        let mut rows = Vec::with_capacity(usize::try_from(end - i).unwrap_or(0));
        let mut events = Vec::with_capacity(rows.capacity());
        for k in i..end {
            let saga_id = uuid::Uuid::now_v7().to_string();
            let created = now - HISTORY_MS + i64::try_from(k).unwrap_or(0) * step_ms;
            let s = shape(k, created, now);
            let started = SagaEvent::SagaStarted {
                saga_id: saga_id.clone(),
                saga_type: definition.name.clone(),
                definition_hash: definition.hash.clone(),
                input: json!({"note": format!("scale-{k}")}),
                deadline_at: Some(UnixMillis(u64::try_from(created + 60_000).unwrap_or(0))),
                at: UnixMillis(u64::try_from(created).unwrap_or(0)),
            };
            events.push(saga_events::ActiveModel {
                saga_id: Set(saga_id.clone()),
                seq: Set(1),
                event: Set(started.encode().map_err(|e| e.to_string())?),
                recorded_at_ms: Set(created),
            });
            rows.push(saga_rows::ActiveModel {
                saga_id: Set(saga_id),
                saga_type: Set(definition.name.clone()),
                definition_hash: Set(definition.hash.clone()),
                status: Set(s.status.to_owned()),
                current_step: Set(s.current_step.map(str::to_owned)),
                partition: Set(i32::try_from(k % u64::from(PARTITIONS)).unwrap_or(0)),
                idempotency_key: Set(format!("scale-{k}")),
                input_hash: Set(format!("{k:064x}")),
                seq: Set(1),
                next_deadline_ms: Set(s.next_deadline_ms),
                last_error: Set(s.last_error.map(str::to_owned)),
                created_at_ms: Set(created),
                updated_at_ms: Set(created + 1_000),
                current_kind: Set(s.current_kind.map(str::to_owned)),
                attempt: Set(s.attempt),
                deadline_at_ms: Set(s.deadline_at_ms),
                park_reason: Set(s.park_reason.map(str::to_owned)),
                wait_half_at_ms: Set(None),
                wait_key: Set(None),
            });
        }
        let txn = store.db().begin().await.map_err(|e| e.to_string())?;
        saga_rows::Entity::insert_many(rows).exec(&txn).await.map_err(|e| e.to_string())?;
        saga_events::Entity::insert_many(events).exec(&txn).await.map_err(|e| e.to_string())?;
        txn.commit().await.map_err(|e| e.to_string())?;
        i = end;
        if i % 100_000 == 0 {
            eprintln!("  {i} of {n} stored");
        }
    }
    Ok(())
}

/// The database's size on disk, MiB.
async fn db_size_mb(store: &Store, db: &TempDatabase) -> f64 {
    if db.is_postgres() {
        let sql = "SELECT pg_database_size(current_database())";
        let size = store
            .db()
            .query_one(Statement::from_string(store.backend(), sql))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get_by_index::<i64>(0).ok());
        return size.map_or(0.0, |b| b as f64 / 1_048_576.0);
    }
    let bytes: u64 = std::fs::read_dir(&db.dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("skald.db"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    bytes as f64 / 1_048_576.0
}
