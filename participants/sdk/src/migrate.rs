//! Running a participant's sea-orm migrations safely when replicas start together.
//!
//! The migrations run in one transaction, so a replica that loses a race
//! changes nothing: on PostgreSQL an advisory lock makes the others wait; on
//! SQLite the loser fails (`SQLITE_BUSY`, or the migration row already
//! written) and tries again, finding the work done. The SDK uses it for its
//! inbox; services built on the SDK use it for their own tables.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;
use tracing::warn;

/// Tries before a migration error is returned.
pub const MIGRATE_ATTEMPTS_MAX: u32 = 5;
/// Pause before the second try; doubled before each further one.
const MIGRATE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Bring `M`'s tables up to date, under the PostgreSQL advisory lock `lock_key`
/// (one key per migrator); `what` names the schema in log messages.
///
/// # Errors
/// When the database still refuses after [`MIGRATE_ATTEMPTS_MAX`] tries.
pub async fn run_migrations<M: MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
    what: &str,
) -> Result<(), DbErr> {
    let mut pause = MIGRATE_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match migrate_once::<M>(db, lock_key).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS_MAX => {
                warn!(error = %e, attempt, "{what} migration failed (another replica migrating?); trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn migrate_once<M: MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({lock_key})")).await?;
    }
    M::up(&tx, None).await?;
    tx.commit().await
}
