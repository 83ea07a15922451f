//! sea-orm entities for the ledger's tables (see `migration.rs` for the DDL).
//!
//! Times are Unix milliseconds in `BIGINT` columns, amounts are minor units in
//! `BIGINT`, events are JSON text: the same schema on SQLite and PostgreSQL.

pub mod ledger_events {
    use sea_orm::entity::prelude::*;

    /// One event: the record. `seq` orders the log; events touching one
    /// account are in the order their transactions took its lock.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ledger_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        /// The account an `account_created` event is about.
        pub account_id: Option<String>,
        /// The transfer a `transfer_*` event is about.
        pub transfer_id: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub event: String,
        pub at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod accounts {
    use sea_orm::entity::prelude::*;

    /// One row per account: its balances, a projection of the events.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "accounts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub currency: String,
        pub debits_must_not_exceed_credits: bool,
        pub credits_must_not_exceed_debits: bool,
        pub debits_pending: i64,
        pub debits_posted: i64,
        pub credits_pending: i64,
        pub credits_posted: i64,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod transfers {
    use sea_orm::entity::prelude::*;

    /// One row per transfer: a projection of its events.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "transfers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub debit_account_id: String,
        pub credit_account_id: String,
        pub amount: i64,
        pub currency: String,
        /// Created as a pending (two-phase) transfer.
        pub pending: bool,
        /// `pending`, `posted` or `voided`.
        pub state: String,
        pub created_at_ms: i64,
        pub resolved_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
