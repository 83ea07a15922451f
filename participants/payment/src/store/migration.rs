//! The payment participant's schema, migrated at start-up.
//!
//! The history is kept in `payment_migrations` (not sea-orm's default
//! `seaql_migrations`), so the SDK's migrator and any other service's can share
//! the database. Replicas starting together: the migrations run in one
//! transaction, under an advisory lock on PostgreSQL; on SQLite the loser of
//! a race fails and tries again, finding the work done.

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

/// PostgreSQL advisory lock key held while migrating ("skald_pa" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x736b_616c_645f_7061;
/// Bring the `payments` table up to date (see `skald_participant::migrate`).
///
/// # Errors
/// When the database still refuses after a few tries.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    skald_participant::migrate::run_migrations::<Migrator>(db, MIGRATION_LOCK_KEY, "payment").await
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
