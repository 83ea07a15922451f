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
        vec![
            Box::new(Initial),
            Box::new(Operations),
            Box::new(Cluster),
            Box::new(ConsoleSessions),
            Box::new(SagaTags),
            Box::new(Archive),
            Box::new(Waits),
            Box::new(OneStatusIndex),
            Box::new(LeanSagaIndexes),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("skald_migrations").into_iden()
    }
}

/// Create the index `name` on `table` unless it exists.
async fn index<T, C>(m: &SchemaManager<'_>, name: &str, table: T, columns: C) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIterator,
    C::Item: IntoIndexColumn,
{
    m.create_index(index_statement(name, table, columns)).await
}

/// [`index`], refusing two rows with the same values.
async fn unique_index<T, C>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: C,
) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIterator,
    C::Item: IntoIndexColumn,
{
    m.create_index(index_statement(name, table, columns).unique().to_owned()).await
}

fn index_statement<T, C>(name: &str, table: T, columns: C) -> IndexCreateStatement
where
    T: IntoIden + 'static,
    C: IntoIterator,
    C::Item: IntoIndexColumn,
{
    let mut statement = Index::create();
    statement.name(name).table(table).if_not_exists();
    columns.into_iter().fold(statement, |mut s, c| {
        s.col(c);
        s
    })
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

#[derive(DeriveIden, Clone, Copy)]
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
    CurrentKind,
    Attempt,
    DeadlineAtMs,
    ParkReason,
    WaitHalfAtMs,
    WaitKey,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Partition,
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
        unique_index(m, "sagas_type_key", Sagas::Table, [Sagas::SagaType, Sagas::IdempotencyKey])
            .await?;
        index(m, "sagas_next_deadline", Sagas::Table, [Sagas::NextDeadlineMs]).await?;
        index(m, "sagas_status", Sagas::Table, [Sagas::Status, Sagas::UpdatedAtMs]).await?;
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

/// Projection columns the operator's queries filter on (stuck classes), and the
/// record of repairs for their idempotency.
#[derive(Debug)]
struct Operations;

impl MigrationName for Operations {
    fn name(&self) -> &str {
        "m0002_operations"
    }
}

#[derive(DeriveIden)]
enum Repairs {
    Table,
    RequestId,
    SagaId,
    Action,
    RequestedBy,
    Response,
    CreatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Operations {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        let columns = [
            ColumnDef::new(Sagas::CurrentKind).string_len(8).null().to_owned(),
            ColumnDef::new(Sagas::Attempt).integer().not_null().default(0).to_owned(),
            ColumnDef::new(Sagas::DeadlineAtMs).big_integer().null().to_owned(),
            ColumnDef::new(Sagas::ParkReason).string_len(32).null().to_owned(),
        ];
        for mut column in columns {
            m.alter_table(Table::alter().table(Sagas::Table).add_column(&mut column).to_owned())
                .await?;
        }
        index(m, "sagas_type_status", Sagas::Table, [Sagas::SagaType, Sagas::Status]).await?;
        m.create_table(
            Table::create()
                .table(Repairs::Table)
                .if_not_exists()
                .col(ColumnDef::new(Repairs::RequestId).string_len(128).not_null().primary_key())
                .col(ColumnDef::new(Repairs::SagaId).string_len(128).not_null())
                .col(ColumnDef::new(Repairs::Action).string_len(16).not_null())
                .col(ColumnDef::new(Repairs::RequestedBy).string_len(128).not_null())
                .col(ColumnDef::new(Repairs::Response).text().not_null())
                .col(ColumnDef::new(Repairs::CreatedAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// Membership, partition leases, the cluster's fixed settings, and the
/// partition of each outbox row (its owner publishes it).
#[derive(Debug)]
struct Cluster;

impl MigrationName for Cluster {
    fn name(&self) -> &str {
        "m0003_cluster"
    }
}

#[derive(DeriveIden)]
enum ClusterConfig {
    Table,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Instance,
    HeartbeatAtMs,
    StartedAtMs,
    HttpAddr,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Partition,
    Owner,
    Epoch,
    ExpiresAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Cluster {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ClusterConfig::Table)
                .if_not_exists()
                .col(ColumnDef::new(ClusterConfig::Key).string_len(64).not_null().primary_key())
                .col(ColumnDef::new(ClusterConfig::Value).string_len(256).not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Members::Table)
                .if_not_exists()
                .col(ColumnDef::new(Members::Instance).string_len(128).not_null().primary_key())
                .col(ColumnDef::new(Members::HeartbeatAtMs).big_integer().not_null())
                .col(ColumnDef::new(Members::StartedAtMs).big_integer().not_null())
                .col(ColumnDef::new(Members::HttpAddr).string_len(256).null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Leases::Table)
                .if_not_exists()
                .col(ColumnDef::new(Leases::Partition).integer().not_null().primary_key())
                .col(ColumnDef::new(Leases::Owner).string_len(128).not_null())
                .col(ColumnDef::new(Leases::Epoch).big_integer().not_null())
                .col(ColumnDef::new(Leases::ExpiresAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Outbox::Table)
                .add_column(ColumnDef::new(Outbox::Partition).integer().not_null().default(0))
                .to_owned(),
        )
        .await?;
        // Rows written before this migration belong to their saga's partition.
        m.get_connection()
            .execute_unprepared(
                "UPDATE outbox SET partition = \
                 (SELECT sagas.partition FROM sagas WHERE sagas.saga_id = outbox.saga_id) \
                 WHERE EXISTS (SELECT 1 FROM sagas WHERE sagas.saga_id = outbox.saga_id)",
            )
            .await?;
        index(m, "outbox_partition_id", Outbox::Table, [Outbox::Partition, Outbox::Id]).await?;
        index(
            m,
            "sagas_partition_deadline",
            Sagas::Table,
            [Sagas::Partition, Sagas::NextDeadlineMs],
        )
        .await?;
        Ok(())
    }
}

/// Console sessions (`store::sessions`): hashes only.
#[derive(Debug)]
struct ConsoleSessions;

impl MigrationName for ConsoleSessions {
    fn name(&self) -> &str {
        "m0004_console_sessions"
    }
}

#[derive(DeriveIden)]
enum ConsoleSessionsTable {
    #[sea_orm(iden = "console_sessions")]
    Table,
    IdSha256,
    TokenSha256,
    ExpiresAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for ConsoleSessions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ConsoleSessionsTable::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ConsoleSessionsTable::IdSha256)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(ConsoleSessionsTable::TokenSha256).string_len(64).not_null())
                .col(ColumnDef::new(ConsoleSessionsTable::ExpiresAtMs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        index(
            m,
            "console_sessions_expires",
            ConsoleSessionsTable::Table,
            [ConsoleSessionsTable::ExpiresAtMs],
        )
        .await
    }
}

/// Business tags (a definition's `tags:`), one row per saga and tag,
/// searchable by name and value.
#[derive(Debug)]
struct SagaTags;

impl MigrationName for SagaTags {
    fn name(&self) -> &str {
        "m0005_saga_tags"
    }
}

#[derive(DeriveIden)]
enum SagaTagsTable {
    #[sea_orm(iden = "saga_tags")]
    Table,
    SagaId,
    Name,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for SagaTags {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SagaTagsTable::Table)
                .if_not_exists()
                .col(ColumnDef::new(SagaTagsTable::SagaId).string().not_null())
                .col(ColumnDef::new(SagaTagsTable::Name).string_len(32).not_null())
                .col(ColumnDef::new(SagaTagsTable::Value).string_len(128).not_null())
                .primary_key(Index::create().col(SagaTagsTable::SagaId).col(SagaTagsTable::Name))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "saga_tags_by_value",
            SagaTagsTable::Table,
            [SagaTagsTable::Name, SagaTagsTable::Value, SagaTagsTable::SagaId],
        )
        .await
    }
}

/// Waiting steps: when the one a saga is at has waited half its wait (the
/// stuck class `waiting`), and the event and key it waits for (how an event
/// sent by its key finds the saga).
#[derive(Debug)]
struct Waits;

impl MigrationName for Waits {
    fn name(&self) -> &str {
        "m0007_waits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Waits {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(ColumnDef::new(Sagas::WaitHalfAtMs).big_integer().null())
                .to_owned(),
        )
        .await?;
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(ColumnDef::new(Sagas::WaitKey).string_len(256).null())
                .to_owned(),
        )
        .await?;
        index(m, "sagas_by_wait_half", Sagas::Table, [Sagas::WaitHalfAtMs]).await?;
        index(m, "sagas_by_wait_key", Sagas::Table, [Sagas::WaitKey]).await
    }
}

/// Retention: the sagas moved out of the hot tables, and an index to find
/// the ended ones by age.
#[derive(Debug)]
struct Archive;

impl MigrationName for Archive {
    fn name(&self) -> &str {
        "m0006_archive"
    }
}

#[derive(DeriveIden)]
enum ArchivedSagas {
    #[sea_orm(iden = "archived_sagas")]
    Table,
    SagaId,
    SagaType,
    Status,
    IdempotencyKey,
    InputHash,
    EndedAtMs,
    ArchivedAtMs,
    File,
}

#[async_trait::async_trait]
impl MigrationTrait for Archive {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ArchivedSagas::Table)
                .if_not_exists()
                .col(ColumnDef::new(ArchivedSagas::SagaId).string().not_null().primary_key())
                .col(ColumnDef::new(ArchivedSagas::SagaType).string().not_null())
                .col(ColumnDef::new(ArchivedSagas::Status).string().not_null())
                .col(ColumnDef::new(ArchivedSagas::IdempotencyKey).string().not_null())
                .col(ColumnDef::new(ArchivedSagas::InputHash).string().not_null())
                .col(ColumnDef::new(ArchivedSagas::EndedAtMs).big_integer().not_null())
                .col(ColumnDef::new(ArchivedSagas::ArchivedAtMs).big_integer().not_null())
                .col(ColumnDef::new(ArchivedSagas::File).string().not_null())
                .to_owned(),
        )
        .await?;
        // A start with the key of an archived saga finds it here.
        index(
            m,
            "archived_sagas_by_key",
            ArchivedSagas::Table,
            [ArchivedSagas::SagaType, ArchivedSagas::IdempotencyKey],
        )
        .await?;
        index(m, "sagas_ended_by_age", Sagas::Table, [Sagas::Status, Sagas::UpdatedAtMs]).await
    }
}

/// `sagas_ended_by_age` (m0006) indexes the same columns as `sagas_status`
/// (m0001), in the same order: one of them is enough for the queries by
/// status and age, and every projection update (its `updated_at_ms` changes
/// each time) had to write both.
#[derive(Debug)]
struct OneStatusIndex;

impl MigrationName for OneStatusIndex {
    fn name(&self) -> &str {
        "m0008_one_status_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OneStatusIndex {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop().name("sagas_ended_by_age").table(Sagas::Table).if_exists().to_owned(),
        )
        .await
    }
}

/// Fewer index pages written by each projection update. Every update of a
/// saga's row rewrites its entry in each index on a column it sets:
/// - `sagas_partition_deadline` (m0003) put each partition's deadlines in a
///   run of their own, so a batch of updates to sagas of many partitions
///   wrote a page of it per partition (a third of the pages a SQLite commit
///   of the writer wrote). The queries by partition and deadline walk
///   `sagas_next_deadline` in deadline order instead: the deadlines due now
///   are few whichever partitions they belong to (they pass over the due
///   sagas of partitions no instance holds, until one takes them over). A
///   takeover's list of a partition's open sagas reads `sagas_status`.
/// - `sagas_next_deadline`, `sagas_by_wait_half` and `sagas_by_wait_key` now
///   hold only the rows with a value (every query on them compares the
///   column, so never looks for `NULL`): an ended saga leaves the deadline
///   index, and a saga that waits for nothing is in neither wait index.
///
/// On PostgreSQL the migration holds a lock on `sagas` until the three
/// indexes are built again, as long as that takes on a large table; other
/// instances starting meanwhile wait for it.
#[derive(Debug)]
struct LeanSagaIndexes;

impl MigrationName for LeanSagaIndexes {
    fn name(&self) -> &str {
        "m0009_lean_saga_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LeanSagaIndexes {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "sagas_partition_deadline",
            "sagas_next_deadline",
            "sagas_by_wait_half",
            "sagas_by_wait_key",
        ] {
            m.drop_index(Index::drop().name(name).table(Sagas::Table).if_exists().to_owned())
                .await?;
        }
        for (name, column) in [
            ("sagas_next_deadline", Sagas::NextDeadlineMs),
            ("sagas_by_wait_half", Sagas::WaitHalfAtMs),
            ("sagas_by_wait_key", Sagas::WaitKey),
        ] {
            let mut statement = index_statement(name, Sagas::Table, [column]);
            statement.and_where(Expr::col(column).is_not_null());
            m.create_index(statement).await?;
        }
        Ok(())
    }
}
