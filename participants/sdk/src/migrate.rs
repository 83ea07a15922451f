//! Running a participant's sea-orm migrations safely when replicas start together.
//!
//! Every schema in a participant's database (the SDK's inbox, the ledger's
//! tables, the payment participant's) is declared the same way, as a
//! [`Schema`]: a name for log messages, a migration history table of its own,
//! a PostgreSQL advisory lock key, and its migrations in order. [`migrate`]
//! brings it up to date.
//!
//! The migrations run in one transaction, so a replica that loses a race
//! changes nothing: on PostgreSQL an advisory lock makes the others wait; on
//! SQLite the loser fails (`SQLITE_BUSY`, or the migration row already
//! written) and tries again, finding the work done.

use sea_orm::sea_query::{IndexCreateStatement, IntoIndexColumn};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use sea_orm_migration::prelude::{Alias, DynIden, Index, IntoIden, MigrationTrait, MigratorTrait};
use std::marker::PhantomData;
use std::time::Duration;
use tracing::warn;

/// Tries before a migration error is returned.
pub const MIGRATE_ATTEMPTS_MAX: u32 = 5;
/// Pause before the second try; doubled before each further one.
const MIGRATE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One schema of a participant's database and how it is migrated.
pub trait Schema: 'static {
    /// Names the schema in log messages (`ledger`, `payment`).
    const NAME: &'static str;
    /// Where the schema's migration history is kept: a table of its own, not
    /// sea-orm's default `seaql_migrations`, so that several migrators share
    /// one database without finding each other's entries and refusing to run.
    const HISTORY_TABLE: &'static str;
    /// The PostgreSQL advisory lock key held while migrating: one per schema.
    const LOCK_KEY: i64;

    /// The schema's migrations, oldest first.
    fn migrations() -> Vec<Box<dyn MigrationTrait>>;
}

/// A [`Schema`] as sea-orm's migrator sees it.
#[derive(Debug)]
pub struct Migrator<S>(PhantomData<fn() -> S>);

impl<S: Schema> MigratorTrait for Migrator<S> {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        S::migrations()
    }

    fn migration_table_name() -> DynIden {
        Alias::new(S::HISTORY_TABLE).into_iden()
    }
}

/// Bring `S`'s tables up to date, under its advisory lock on PostgreSQL.
///
/// # Errors
/// When the database still refuses after [`MIGRATE_ATTEMPTS_MAX`] tries.
pub async fn migrate<S: Schema>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut pause = MIGRATE_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match migrate_once::<S>(db).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS_MAX => {
                warn!(error = %e, attempt, "{} migration failed (another replica migrating?); trying again", S::NAME);
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn migrate_once<S: Schema>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({})", S::LOCK_KEY)).await?;
    }
    Migrator::<S>::up(&tx, None).await?;
    tx.commit().await
}

/// `CREATE INDEX IF NOT EXISTS name ON table (columns)`, for a migration.
pub fn index_if_missing<C: IntoIndexColumn>(
    name: &str,
    table: impl IntoIden + 'static,
    columns: impl IntoIterator<Item = C>,
) -> IndexCreateStatement {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(table);
    for column in columns {
        index.col(column);
    }
    index
}
