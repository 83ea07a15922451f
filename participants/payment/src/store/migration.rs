//! The payment participant's schema, migrated at start-up.
//!
//! The history is kept in `payment_migrations` (not sea-orm's default
//! `seaql_migrations`), so the SDK's migrator and any other service's can share
//! the database. Replicas starting together: the migrations run in one
//! transaction, under an advisory lock on PostgreSQL; on SQLite the loser of
//! a race fails and tries again, finding the work done.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use sea_orm_migration::prelude::*;
use std::time::Duration;
use tracing::warn;

/// PostgreSQL advisory lock key held while migrating ("skald_pa" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x736b_616c_645f_7061;
/// Tries before a migration error stops the participant.
const MIGRATE_ATTEMPTS_MAX: u32 = 5;
/// Pause before the second try; doubled before each further one.
const MIGRATE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Bring the `payments` table up to date.
///
/// # Errors
/// When the database still refuses after a few tries.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut pause = MIGRATE_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match migrate_once(db).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS_MAX => {
                warn!(error = %e, attempt, "payment migration failed (another replica migrating?); trying again");
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

/// The payment participant's migrations, in order.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreatePayments)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("payment_migrations").into_iden()
    }
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    CommandId,
    Kind,
    SagaId,
    Amount,
    Currency,
    Reference,
    ProviderId,
    Status,
    ErrorCode,
    Attempts,
    CreatedAtMs,
    UpdatedAtMs,
}

struct CreatePayments;

impl MigrationName for CreatePayments {
    fn name(&self) -> &str {
        "m0001_create_payments"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePayments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Payments::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Payments::CommandId).text().not_null().primary_key())
                    .col(ColumnDef::new(Payments::Kind).text().not_null())
                    .col(ColumnDef::new(Payments::SagaId).text().not_null())
                    .col(ColumnDef::new(Payments::Amount).big_integer().not_null())
                    .col(ColumnDef::new(Payments::Currency).text().not_null())
                    .col(ColumnDef::new(Payments::Reference).text().not_null())
                    .col(ColumnDef::new(Payments::ProviderId).text().null())
                    .col(ColumnDef::new(Payments::Status).text().not_null())
                    .col(ColumnDef::new(Payments::ErrorCode).text().null())
                    .col(ColumnDef::new(Payments::Attempts).integer().not_null())
                    .col(ColumnDef::new(Payments::CreatedAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Payments::UpdatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // The reconciler scans pending charges; operators look up one saga.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("payments_kind_status_updated")
                    .table(Payments::Table)
                    .col(Payments::Kind)
                    .col(Payments::Status)
                    .col(Payments::UpdatedAtMs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("payments_saga_id")
                    .table(Payments::Table)
                    .col(Payments::SagaId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Payments::Table).to_owned()).await
    }
}
