//! The payment participant's schema, migrated at start-up.
//!
//! Declared as a [`Schema`], so it is migrated as every participant schema
//! is (see `skald_participant::migrate`): history in `payment_migrations`,
//! one transaction, under an advisory lock on PostgreSQL, retried on SQLite.

use sea_orm_migration::prelude::*;
use skald_participant::migrate::{Schema, index_if_missing};

/// The payment participant's schema.
#[derive(Debug)]
pub struct PaymentSchema;

impl Schema for PaymentSchema {
    const NAME: &'static str = "payment";
    const HISTORY_TABLE: &'static str = "payment_migrations";
    /// "skald_pa" in ASCII.
    const LOCK_KEY: i64 = 0x736b_616c_645f_7061;

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreatePayments)]
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
            .create_index(index_if_missing(
                "payments_kind_status_updated",
                Payments::Table,
                [Payments::Kind, Payments::Status, Payments::UpdatedAtMs],
            ))
            .await?;
        manager
            .create_index(index_if_missing("payments_saga_id", Payments::Table, [Payments::SagaId]))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Payments::Table).to_owned()).await
    }
}
