//! The programs the suites run as child processes, so that they can kill
//! them: `skald serve` (`skald-e2e`) and the bench participant
//! (`participant-e2e`), with what every suite gives them; a wait until a
//! child is up that starts it again when it gave up at start-up; and the
//! effects the bench participant recorded.

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use skald_tests::process::ChildGuard;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// How long one start of a child may take to be up.
const UP_WITHIN: Duration = Duration::from_secs(60);
/// How many times a child that exits before it is up is started.
const STARTS_MAX: usize = 3;

/// `skald serve` on NATS at `nats_url` under `prefix`, over `database_url`
/// with `partitions` partitions and the definitions in `definitions`. The
/// caller adds the instance, lease, HTTP and log settings.
pub fn skald_serve(
    nats_url: &str,
    prefix: &str,
    database_url: &str,
    partitions: u32,
    definitions: &Path,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skald-e2e"));
    cmd.args(["serve", "--partitions", &partitions.to_string(), "--prefix", prefix])
        .args(["--database-url", database_url])
        .arg("--definitions")
        .arg(definitions)
        .env("NATS_URL", nats_url);
    cmd
}

/// The bench participant on NATS at `nats_url` under `prefix`, recording its
/// effects in `database_url` (table `bench_effects`), running `concurrency`
/// commands at a time. The caller adds its delay and log settings.
pub fn bench_participant(
    nats_url: &str,
    prefix: &str,
    database_url: &str,
    concurrency: u32,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_participant-e2e"));
    cmd.args(["--prefix", prefix, "--database-url", database_url])
        .args(["--concurrency", &concurrency.to_string()])
        .env("NATS_URL", nats_url);
    cmd
}

/// Whether the bench participant with its effects in `database_url` is up:
/// its table exists.
pub async fn bench_is_up(database_url: &str) -> bool {
    table_exists(database_url, "bench_effects").await
}

/// The effects the bench participant recorded in `database_url` (SQLite or
/// PostgreSQL): how many times each command took effect, by command id.
pub async fn bench_effects(database_url: &str) -> Vec<(String, i64)> {
    let db = Database::connect(database_url).await.unwrap();
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT command_id, COUNT(*) FROM bench_effects GROUP BY command_id ORDER BY command_id",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.try_get_by_index::<String>(0).unwrap(), r.try_get_by_index::<i64>(1).unwrap()))
        .collect()
}

/// Every command the bench participant recorded in `database_url` took
/// effect exactly once, and there are `expected` of them.
pub async fn assert_bench_effects_once(database_url: &str, expected: usize) {
    let effects = bench_effects(database_url).await;
    assert_eq!(effects.len(), expected, "{effects:?}");
    assert!(effects.iter().all(|(_, n)| *n == 1), "an effect happened twice: {effects:?}");
}

/// Whether `table` exists in the PostgreSQL database at `url` (false while
/// it cannot be reached).
pub async fn table_exists(url: &str, table: &str) -> bool {
    let Ok(db) = Database::connect(url).await else { return false };
    let found = db
        .query_one(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 AS one FROM information_schema.tables WHERE table_name = $1",
            [table.into()],
        ))
        .await
        .is_ok_and(|r| r.is_some());
    let _ = db.close().await;
    found
}

/// A child `spawn` starts, once `up` says it is up (asked every `poll`);
/// started again when it exits before (a program gives up when its database
/// is too busy to answer at start-up). `up` is given the wall-clock time
/// this start began. `None` when no start was up in time.
pub async fn spawn_until_up(
    mut spawn: impl FnMut() -> ChildGuard,
    mut up: impl AsyncFnMut(SystemTime) -> bool,
    poll: Duration,
) -> Option<ChildGuard> {
    for _ in 0..STARTS_MAX {
        let since = SystemTime::now();
        let began = Instant::now();
        let mut child = spawn();
        while began.elapsed() < UP_WITHIN {
            if up(since).await {
                return Some(child);
            }
            if matches!(child.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(poll).await;
        }
    }
    None
}
