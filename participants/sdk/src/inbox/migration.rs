//! The SDK's own schema in the participant's database, migrated at start-up.
//!
//! The SDK keeps its migration history in `skald_sdk_migrations`, not in
//! sea-orm's default `seaql_migrations`, so a participant can run its own
//! sea-orm migrations in the same database without either migrator finding
//! the other's entries and refusing to run.
//!
//! Replicas often start together. The migrations run in one transaction, so a
//! replica that loses a race changes nothing: on PostgreSQL an advisory lock
//! makes the others wait; on SQLite the loser fails (`SQLITE_BUSY`, or the
//! migration row already written) and tries again, finding the work done.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use sea_orm_migration::prelude::*;
use std::time::Duration;
use tracing::warn;

/// PostgreSQL advisory lock key held while migrating ("skald_pi" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x736b_616c_645f_7069;
/// Tries before a migration error stops the participant.
const MIGRATE_ATTEMPTS_MAX: u32 = 5;
/// Pause before the second try; doubled before each further one.
const MIGRATE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Bring the SDK's tables up to date.
///
/// # Errors
/// When the database still refuses after [`MIGRATE_ATTEMPTS_MAX`] tries.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut pause = MIGRATE_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match migrate_once(db).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS_MAX => {
                warn!(error = %e, attempt, "SDK migration failed (another replica migrating?); trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn migrate_once(db: &DatabaseConnection) -> Result<(), DbErr> {
    let tx = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
            .await?;
    }
    Migrator::up(&tx, None).await?;
    tx.commit().await
}

/// The SDK's migrations, in order.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateInbox)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("skald_sdk_migrations").into_iden()
    }
}

#[derive(DeriveIden)]
enum SkaldInbox {
    Table,
    CommandId,
    SagaId,
    Step,
    Kind,
    ReplyJson,
    CreatedAtMs,
}

struct CreateInbox;

impl MigrationName for CreateInbox {
    fn name(&self) -> &str {
        "m0001_create_skald_inbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateInbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SkaldInbox::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(SkaldInbox::CommandId).text().not_null().primary_key())
                    .col(ColumnDef::new(SkaldInbox::SagaId).text().not_null())
                    .col(ColumnDef::new(SkaldInbox::Step).text().not_null())
                    .col(ColumnDef::new(SkaldInbox::Kind).text().not_null())
                    .col(ColumnDef::new(SkaldInbox::ReplyJson).text().not_null())
                    .col(ColumnDef::new(SkaldInbox::CreatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // Operators look up what a participant did for one saga.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("skald_inbox_saga_id")
                    .table(SkaldInbox::Table)
                    .col(SkaldInbox::SagaId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SkaldInbox::Table).to_owned()).await
    }
}
