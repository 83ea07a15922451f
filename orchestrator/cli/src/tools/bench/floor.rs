//! `skald bench-floor`: what the infrastructure alone can do on this machine.
//!
//! In one run, with nothing of Skald in the way: JetStream publish-with-ack to
//! a temporary file-storage stream (one publish at a time, then 64 acks in
//! flight), NATS core request/reply round trips against an in-process
//! responder (1 and 64 in flight), PostgreSQL single-row commits (each INSERT
//! its own transaction, over 1 and 16 connections) and SQLite single-row
//! commits (one connection, WAL). These bound what `skald bench` can reach: a
//! saga step is at least one commit, one publish with ack and one reply.
//! The stream and the database are temporary and removed at the end.

use crate::tools::bench::support::{self, POSTGRES_ADMIN_DEFAULT, Timing, drive};
use async_nats::jetstream;
use futures::StreamExt;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use serde::Serialize;
use skald_transport::BusOptions;
use std::process::ExitCode;
use std::time::Duration;

pub const MESSAGES_MAX: u64 = 10_000_000;
/// Body size of every message and row: about one command or event.
const PAYLOAD_BYTES: usize = 256;
/// In-flight counts measured for NATS and JetStream.
const NATS_CONCURRENCY: [u64; 2] = [1, 64];
/// Connection counts measured for PostgreSQL.
const POSTGRES_CONNECTIONS: [u64; 2] = [1, 16];

#[derive(Debug, Clone, clap::Args)]
pub struct FloorConfig {
    /// NATS server (with JetStream), credentials and TLS; every process of
    /// the run connects with these.
    #[command(flatten)]
    pub bus: BusOptions,
    /// PostgreSQL admin URL: a database `skald_floor_<random>` is created on
    /// that server and dropped afterwards; `off` skips PostgreSQL.
    #[arg(long, default_value = POSTGRES_ADMIN_DEFAULT)]
    pub database_url: String,
    /// Operations per measurement (publishes, requests, commits).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=MESSAGES_MAX))]
    pub messages: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `jetstream_publish`, `nats_request`, `postgres_commit`, `sqlite_commit`.
    pub what: String,
    #[serde(flatten)]
    pub timing: Timing,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub messages: u64,
    pub payload_bytes: usize,
    pub rows: Vec<Row>,
    /// PostgreSQL's `synchronous_commit`, as the server has it (none when skipped).
    pub postgres_synchronous_commit: Option<String>,
    /// SQLite's `journal_mode` and `synchronous` as the connection has them.
    pub sqlite_journal_mode: String,
    pub sqlite_synchronous: String,
}

impl Report {
    /// A human table.
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>5} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
            "operation", "conc", "ops", "per s", "p50 µs", "p99 µs", "max µs"
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:<40} {:>5} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>10.0}\n",
                describe(&r.what),
                r.timing.concurrency,
                r.timing.ops,
                r.timing.per_sec,
                r.timing.p50_us,
                r.timing.p99_us,
                r.timing.max_us
            ));
        }
        out.push_str(&format!("\npayload: {} bytes per message and row\n", self.payload_bytes));
        match &self.postgres_synchronous_commit {
            Some(s) => out.push_str(&format!("PostgreSQL synchronous_commit: {s}\n")),
            None => out.push_str("PostgreSQL: skipped (--database-url off)\n"),
        }
        out.push_str(&format!(
            "SQLite: journal_mode {}, synchronous {} (0 off, 1 normal, 2 full, 3 extra)\n",
            self.sqlite_journal_mode, self.sqlite_synchronous
        ));
        out
    }
}

fn describe(what: &str) -> &'static str {
    match what {
        "jetstream_publish" => "JetStream publish + ack (file stream)",
        "nats_request" => "NATS core request/reply (in-process)",
        "postgres_commit" => "PostgreSQL 1-row commit (connections)",
        "sqlite_commit" => "SQLite 1-row commit (WAL)",
        _ => "?",
    }
}

/// `skald bench-floor`: run, print, exit status.
pub fn main(config: &FloorConfig) -> anyhow::Result<ExitCode> {
    support::run_main("bench-floor", config.json, run(config), Report::to_table)
}

/// Run every measurement.
pub async fn run(config: &FloorConfig) -> Result<Report, String> {
    let n = config.messages;
    let payload = "x".repeat(PAYLOAD_BYTES);
    let mut rows = Vec::new();
    let tag = support::token();

    let client = config.bus.connect("skald-bench-floor").await.map_err(|e| e.to_string())?;
    let js = jetstream::new(client.clone());
    let stream = format!("FLOOR_{}", tag.to_uppercase());
    let subject = format!("floor{tag}.publish");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("floor{tag}.>")],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create the stream {stream}: {e}"))?;
    let published = async {
        for concurrency in NATS_CONCURRENCY {
            let load = Load { payload: &payload, n, concurrency };
            let timing = jetstream_publish(&js, &subject, load).await?;
            rows.push(Row { what: "jetstream_publish".into(), timing });
        }
        Ok::<_, String>(())
    }
    .await;
    let _ = js.delete_stream(&stream).await;
    published?;

    for concurrency in NATS_CONCURRENCY {
        let load = Load { payload: &payload, n, concurrency };
        let timing = nats_request(&config.bus, &client, &tag, load).await?;
        rows.push(Row { what: "nats_request".into(), timing });
    }

    let mut postgres_synchronous_commit = None;
    if config.database_url != "off" {
        let db = support::temp_database(Some(&config.database_url), "floor").await?;
        let measured = postgres_commits(&db.url, &payload, n).await;
        db.remove().await;
        let (setting, timings) = measured?;
        postgres_synchronous_commit = Some(setting);
        rows.extend(
            timings.into_iter().map(|timing| Row { what: "postgres_commit".into(), timing }),
        );
    }

    let db = support::temp_database(None, "floor").await?;
    let measured = sqlite_commits(&db.url, &payload, n).await;
    db.remove().await;
    let (sqlite_journal_mode, sqlite_synchronous, timing) = measured?;
    rows.push(Row { what: "sqlite_commit".into(), timing });

    Ok(Report {
        messages: n,
        payload_bytes: PAYLOAD_BYTES,
        rows,
        postgres_synchronous_commit,
        sqlite_journal_mode,
        sqlite_synchronous,
    })
}

/// One measurement's size: `n` operations on `payload`, `concurrency` in flight.
#[derive(Debug, Clone, Copy)]
struct Load<'a> {
    payload: &'a str,
    n: u64,
    concurrency: u64,
}

impl Load<'_> {
    /// Time `n` operations after a few untimed ones (connections made, caches
    /// warm). `op(offset)` makes the operation for numbers from `offset`: the
    /// warm-up's start at [`MESSAGES_MAX`], so they never reuse a timed one's.
    async fn time<F, Fut, T>(self, op: impl Fn(u64) -> F) -> Result<Timing, String>
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let warmup = (self.concurrency * 2).min(self.n).max(1);
        drive(warmup, self.concurrency, op(MESSAGES_MAX)).await?;
        drive(self.n, self.concurrency, op(0)).await
    }
}

/// Publish with a `Nats-Msg-Id` (as the relay does) and await the ack.
async fn jetstream_publish(
    js: &jetstream::Context,
    subject: &str,
    load: Load<'_>,
) -> Result<Timing, String> {
    let concurrency = load.concurrency;
    let publish = |base: u64| {
        let (js, subject, payload) = (js.clone(), subject.to_owned(), load.payload.to_owned());
        move |i: u64| {
            let (js, subject, payload) = (js.clone(), subject.clone(), payload.clone());
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("c{concurrency}-{}", base + i).as_str());
                js.publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| format!("JetStream publish: {e}"))?
                    .await
                    .map_err(|e| format!("JetStream ack: {e}"))
            }
        }
    };
    load.time(publish).await
}

/// Request/reply round trips to a responder on its own connection.
async fn nats_request(
    bus: &BusOptions,
    client: &async_nats::Client,
    tag: &str,
    load: Load<'_>,
) -> Result<Timing, String> {
    let concurrency = load.concurrency;
    let responder = bus.connect("skald-bench-floor-responder").await.map_err(|e| e.to_string())?;
    let subject = format!("floor{tag}.echo.{concurrency}");
    let mut requests =
        responder.subscribe(subject.clone()).await.map_err(|e| format!("cannot subscribe: {e}"))?;
    responder.flush().await.map_err(|e| format!("NATS flush: {e}"))?;
    let answering = responder.clone();
    let echo = tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let _ = answering.publish(reply, msg.payload).await;
            }
        }
    });
    let request = |_offset: u64| {
        let (client, subject, payload) = (client.clone(), subject.clone(), load.payload.to_owned());
        move |_: u64| {
            let (client, subject, payload) = (client.clone(), subject.clone(), payload.clone());
            async move {
                client
                    .request(subject, payload.into())
                    .await
                    .map_err(|e| format!("NATS request: {e}"))
            }
        }
    };
    let result = async {
        // A flush only writes the SUB to the socket; wait until the server
        // routes requests to it (the requester is another connection).
        let probe = request(0);
        let mut tries = 0;
        while let Err(e) = probe(0).await {
            tries += 1;
            if tries > 100 {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        load.time(request).await
    }
    .await;
    echo.abort();
    let _ = responder.drain().await;
    result
}

const FLOOR_TABLE: &str = "CREATE TABLE floor_rows (id BIGINT PRIMARY KEY, body TEXT NOT NULL, \
                           recorded_at_ms BIGINT NOT NULL)";

/// One INSERT per operation, each its own transaction (autocommit).
fn insert(db: DatabaseConnection, payload: String, base: u64) -> impl Fn(u64) -> InsertFuture {
    move |i| {
        let (db, payload) = (db.clone(), payload.clone());
        Box::pin(async move {
            let backend = db.get_database_backend();
            let sql = match backend {
                DbBackend::Postgres => {
                    "INSERT INTO floor_rows (id, body, recorded_at_ms) VALUES ($1, $2, $3)"
                }
                _ => "INSERT INTO floor_rows (id, body, recorded_at_ms) VALUES (?, ?, ?)",
            };
            let id = i64::try_from(base + i).unwrap_or(i64::MAX);
            let now = orchestrator::clock::Clock::now_db(&orchestrator::clock::SystemClock);
            db.execute(Statement::from_sql_and_values(
                backend,
                sql,
                [id.into(), payload.into(), now.into()],
            ))
            .await
            .map(|_| ())
            .map_err(|e| format!("INSERT: {e}"))
        })
    }
}

type InsertFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'static>>;

async fn pool(url: &str, connections: u64) -> Result<DatabaseConnection, String> {
    let connections = u32::try_from(connections).unwrap_or(1);
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .min_connections(connections)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    Database::connect(options).await.map_err(|e| format!("cannot connect to the database: {e}"))
}

async fn query_one(db: &DatabaseConnection, sql: &str) -> Result<String, String> {
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql))
        .await
        .map_err(|e| format!("{sql}: {e}"))?
        .ok_or_else(|| format!("{sql}: no row"))?;
    row.try_get_by_index::<String>(0)
        .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
        .or_else(|_| row.try_get_by_index::<i32>(0).map(|v| v.to_string()))
        .map_err(|e| format!("{sql}: {e}"))
}

/// PostgreSQL commits over 1 and 16 connections; `synchronous_commit` too.
async fn postgres_commits(
    url: &str,
    payload: &str,
    n: u64,
) -> Result<(String, Vec<Timing>), String> {
    let setup = pool(url, 1).await?;
    setup.execute_unprepared(FLOOR_TABLE).await.map_err(|e| e.to_string())?;
    let setting = query_one(&setup, "SHOW synchronous_commit").await?;
    let _ = setup.close().await;
    let mut timings = Vec::new();
    for (round, connections) in POSTGRES_CONNECTIONS.into_iter().enumerate() {
        let db = pool(url, connections).await?;
        let base = (round as u64 + 1) * 2 * MESSAGES_MAX;
        let load = Load { payload, n, concurrency: connections };
        let timing =
            load.time(|offset| insert(db.clone(), payload.to_owned(), base + offset)).await;
        let _ = db.close().await;
        timings.push(timing?);
    }
    Ok((setting, timings))
}

/// SQLite commits over one connection, WAL, the driver's default `synchronous`
/// (as the orchestrator's store has it).
async fn sqlite_commits(
    url: &str,
    payload: &str,
    n: u64,
) -> Result<(String, String, Timing), String> {
    let db = pool(&format!("{url}?mode=rwc"), 1).await?;
    let measured = async {
        let journal = query_one(&db, "PRAGMA journal_mode=WAL").await?;
        let synchronous = query_one(&db, "PRAGMA synchronous").await?;
        db.execute_unprepared(FLOOR_TABLE).await.map_err(|e| e.to_string())?;
        let load = Load { payload, n, concurrency: 1 };
        let timing = load.time(|offset| insert(db.clone(), payload.to_owned(), offset)).await?;
        Ok::<_, String>((journal, synchronous, timing))
    }
    .await;
    let _ = db.close().await;
    measured
}
