//! The ledger's schema, migrated at start-up.
//!
//! Declared as a [`Schema`], so it is migrated as every participant schema
//! is (see `skald_participant::migrate`): history in `ledger_migrations`,
//! apart from sea-orm's default table and the SDK's `skald_sdk_migrations`;
//! one transaction, under an advisory lock on PostgreSQL, retried on SQLite.

use sea_orm_migration::prelude::*;
use skald_participant::migrate::{Schema, index_if_missing};

/// The ledger's schema.
#[derive(Debug)]
pub struct LedgerSchema;

impl Schema for LedgerSchema {
    const NAME: &'static str = "ledger";
    const HISTORY_TABLE: &'static str = "ledger_migrations";
    /// "ledger" in ASCII.
    const LOCK_KEY: i64 = 0x6c65_6467_6572;

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateLedger)]
    }
}

#[derive(DeriveIden)]
enum LedgerEvents {
    Table,
    Seq,
    AccountId,
    TransferId,
    Event,
    AtMs,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Currency,
    DebitsMustNotExceedCredits,
    CreditsMustNotExceedDebits,
    DebitsPending,
    DebitsPosted,
    CreditsPending,
    CreditsPosted,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum Transfers {
    Table,
    Id,
    DebitAccountId,
    CreditAccountId,
    Amount,
    Currency,
    Pending,
    State,
    CreatedAtMs,
    ResolvedAtMs,
}

struct CreateLedger;

impl MigrationName for CreateLedger {
    fn name(&self) -> &str {
        "m0001_create_ledger"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLedger {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LedgerEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(LedgerEvents::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LedgerEvents::AccountId).text().null())
                    .col(ColumnDef::new(LedgerEvents::TransferId).text().null())
                    .col(ColumnDef::new(LedgerEvents::Event).text().not_null())
                    .col(ColumnDef::new(LedgerEvents::AtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // An operator reads one transfer's or one account's history.
        for (name, column) in [
            ("ledger_events_transfer_id", LedgerEvents::TransferId),
            ("ledger_events_account_id", LedgerEvents::AccountId),
        ] {
            manager.create_index(index_if_missing(name, LedgerEvents::Table, [column])).await?;
        }

        let balance = |column: Accounts| {
            ColumnDef::new(column).big_integer().not_null().default(0).to_owned()
        };
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Accounts::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Accounts::Currency).text().not_null())
                    .col(ColumnDef::new(Accounts::DebitsMustNotExceedCredits).boolean().not_null())
                    .col(ColumnDef::new(Accounts::CreditsMustNotExceedDebits).boolean().not_null())
                    .col(balance(Accounts::DebitsPending))
                    .col(balance(Accounts::DebitsPosted))
                    .col(balance(Accounts::CreditsPending))
                    .col(balance(Accounts::CreditsPosted))
                    .col(ColumnDef::new(Accounts::CreatedAtMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Transfers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Transfers::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Transfers::DebitAccountId).text().not_null())
                    .col(ColumnDef::new(Transfers::CreditAccountId).text().not_null())
                    .col(ColumnDef::new(Transfers::Amount).big_integer().not_null())
                    .col(ColumnDef::new(Transfers::Currency).text().not_null())
                    .col(ColumnDef::new(Transfers::Pending).boolean().not_null())
                    .col(ColumnDef::new(Transfers::State).text().not_null())
                    .col(ColumnDef::new(Transfers::CreatedAtMs).big_integer().not_null())
                    .col(ColumnDef::new(Transfers::ResolvedAtMs).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("transfers_debit_account_id")
                            .from(Transfers::Table, Transfers::DebitAccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("transfers_credit_account_id")
                            .from(Transfers::Table, Transfers::CreditAccountId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // `ledger verify` and operators look for old pending holds.
        manager
            .create_index(index_if_missing(
                "transfers_state_created_at_ms",
                Transfers::Table,
                [Transfers::State, Transfers::CreatedAtMs],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Transfers::Table.into_iden(),
            Accounts::Table.into_iden(),
            LedgerEvents::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
