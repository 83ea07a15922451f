//! The SDK's own schema in the participant's database, migrated at start-up.
//!
//! The SDK keeps its migration history in `skald_sdk_migrations`, not in
//! sea-orm's default `seaql_migrations`, so a participant can run its own
//! sea-orm migrations in the same database without either migrator finding
//! the other's entries and refusing to run.
//!
//! Replicas often start together: [`crate::migrate`] runs the migrations so
//! that a replica losing the race changes nothing.

use crate::migrate::{Schema, index_if_missing};
use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

/// Bring the SDK's tables up to date (see [`crate::migrate`]).
///
/// # Errors
/// When the database still refuses after a few tries.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    crate::migrate::migrate::<Inbox>(db).await
}

/// The SDK's own schema: the inbox.
#[derive(Debug)]
pub struct Inbox;

impl Schema for Inbox {
    const NAME: &'static str = "SDK";
    const HISTORY_TABLE: &'static str = "skald_sdk_migrations";
    /// "skald_pi" in ASCII.
    const LOCK_KEY: i64 = 0x736b_616c_645f_7069;

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateInbox)]
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
            .create_index(index_if_missing(
                "skald_inbox_saga_id",
                SkaldInbox::Table,
                [SkaldInbox::SagaId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SkaldInbox::Table).to_owned()).await
    }
}
