//! sea-orm entities for the orchestrator's tables (see `migration.rs` for the DDL).
//!
//! Times are Unix milliseconds in `BIGINT` columns; JSON is stored as text so the
//! same schema works on SQLite and PostgreSQL.

pub mod saga_events {
    use sea_orm::entity::prelude::*;

    /// One event of one saga's history: the record.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        #[sea_orm(column_type = "Text")]
        pub event: String,
        pub recorded_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sagas {
    use sea_orm::entity::prelude::*;

    /// One row per saga: a projection of its history for queries and recovery.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sagas")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        pub saga_type: String,
        pub definition_hash: String,
        pub status: String,
        pub current_step: Option<String>,
        pub partition: i32,
        pub idempotency_key: String,
        pub input_hash: String,
        /// Seq of the last event: the version for optimistic concurrency.
        pub seq: i64,
        pub next_deadline_ms: Option<i64>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        pub created_at_ms: i64,
        pub updated_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    /// A command waiting to be published to JetStream.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub saga_id: String,
        pub subject: String,
        pub msg_id: String,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod definitions {
    use sea_orm::entity::prelude::*;

    /// Every definition version ever used, by content hash.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "definitions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        pub name: String,
        pub version: i32,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
