//! The orchestrator's schema, as sea-orm migrations run at start-up.
//!
//! On PostgreSQL the run is wrapped in an advisory lock (see `Store::connect`),
//! so instances starting together do not race each other's DDL.

use sea_orm_migration::prelude::*;

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Initial)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("skald_migrations").into_iden()
    }
}

#[derive(Debug)]
struct Initial;

impl MigrationName for Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

#[derive(DeriveIden)]
enum SagaEvents {
    Table,
    SagaId,
    Seq,
    Event,
    RecordedAtMs,
}

#[derive(DeriveIden)]
enum Sagas {
    Table,
    SagaId,
    SagaType,
    DefinitionHash,
    Status,
    CurrentStep,
    Partition,
    IdempotencyKey,
    InputHash,
    Seq,
    NextDeadlineMs,
    LastError,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    SagaId,
    Subject,
    MsgId,
    Body,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum Definitions {
    Table,
    Hash,
    Name,
    Version,
    Body,
    CreatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SagaEvents::Table)
                .if_not_exists()
                .col(ColumnDef::new(SagaEvents::SagaId).string_len(128).not_null())
                .col(ColumnDef::new(SagaEvents::Seq).big_integer().not_null())
                .col(ColumnDef::new(SagaEvents::Event).text().not_null())
                .col(ColumnDef::new(SagaEvents::RecordedAtMs).big_integer().not_null())
                .primary_key(Index::create().col(SagaEvents::SagaId).col(SagaEvents::Seq))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Sagas::Table)
                .if_not_exists()
                .col(ColumnDef::new(Sagas::SagaId).string_len(128).not_null().primary_key())
                .col(ColumnDef::new(Sagas::SagaType).string_len(64).not_null())
                .col(ColumnDef::new(Sagas::DefinitionHash).string_len(64).not_null())
                .col(ColumnDef::new(Sagas::Status).string_len(16).not_null())
                .col(ColumnDef::new(Sagas::CurrentStep).string_len(64).null())
                .col(ColumnDef::new(Sagas::Partition).integer().not_null())
                .col(ColumnDef::new(Sagas::IdempotencyKey).string_len(256).not_null())
                .col(ColumnDef::new(Sagas::InputHash).string_len(64).not_null())
                .col(ColumnDef::new(Sagas::Seq).big_integer().not_null())
                .col(ColumnDef::new(Sagas::NextDeadlineMs).big_integer().null())
                .col(ColumnDef::new(Sagas::LastError).text().null())
                .col(ColumnDef::new(Sagas::CreatedAtMs).big_integer().not_null())
                .col(ColumnDef::new(Sagas::UpdatedAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sagas_type_key")
                .table(Sagas::Table)
                .col(Sagas::SagaType)
                .col(Sagas::IdempotencyKey)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sagas_next_deadline")
                .table(Sagas::Table)
                .col(Sagas::NextDeadlineMs)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sagas_status")
                .table(Sagas::Table)
                .col(Sagas::Status)
                .col(Sagas::UpdatedAtMs)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Outbox::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(Outbox::SagaId).string_len(128).not_null())
                .col(ColumnDef::new(Outbox::Subject).string_len(256).not_null())
                .col(ColumnDef::new(Outbox::MsgId).string_len(256).not_null())
                .col(ColumnDef::new(Outbox::Body).text().not_null())
                .col(ColumnDef::new(Outbox::CreatedAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Definitions::Table)
                .if_not_exists()
                .col(ColumnDef::new(Definitions::Hash).string_len(64).not_null().primary_key())
                .col(ColumnDef::new(Definitions::Name).string_len(64).not_null())
                .col(ColumnDef::new(Definitions::Version).integer().not_null())
                .col(ColumnDef::new(Definitions::Body).text().not_null())
                .col(ColumnDef::new(Definitions::CreatedAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
