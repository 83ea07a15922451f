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
        /// `do` or `undo`: which kind of the current step is in progress.
        pub current_kind: Option<String>,
        /// Attempts of the current command within its retry budget (0: not sent).
        pub attempt: i32,
        /// When the saga's forward deadline passes, if it has one.
        pub deadline_at_ms: Option<i64>,
        /// Why the saga is parked, when it is.
        pub park_reason: Option<String>,
        /// When a waiting step it is at has waited half its wait (the stuck
        /// class `waiting` from then on).
        pub wait_half_at_ms: Option<i64>,
        /// `<event>:<key>` of the first waiting step with a key it is at:
        /// how an event sent by its key alone finds the saga.
        pub wait_key: Option<String>,
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
        /// The saga's partition: only its owner's relay publishes the row.
        pub partition: i32,
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

pub mod repairs {
    use sea_orm::entity::prelude::*;

    /// An operator's repair, by request id: a repeat of the request gets the
    /// recorded response instead of acting twice.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "repairs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub saga_id: String,
        pub action: String,
        pub requested_by: String,
        #[sea_orm(column_type = "Text")]
        pub response: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod cluster_config {
    use sea_orm::entity::prelude::*;

    /// Settings fixed when the cluster was created (the partition count).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cluster_config")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod members {
    use sea_orm::entity::prelude::*;

    /// A live orchestrator instance and its last heartbeat.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub instance: String,
        pub heartbeat_at_ms: i64,
        pub started_at_ms: i64,
        pub http_addr: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod leases {
    use sea_orm::entity::prelude::*;

    /// Who drives a partition, at which epoch, until when.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub partition: i32,
        /// Empty when nobody holds it.
        pub owner: String,
        pub epoch: i64,
        pub expires_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod saga_tags {
    use sea_orm::entity::prelude::*;

    /// One business tag of one saga (its definition's `tags:`, rendered at start).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod archived_sagas {
    use sea_orm::entity::prelude::*;

    /// A saga moved out of the hot tables by retention: where its history went.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "archived_sagas")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        pub saga_type: String,
        pub status: String,
        /// Kept so that the same start again still names this saga.
        pub idempotency_key: String,
        pub input_hash: String,
        pub ended_at_ms: i64,
        pub archived_at_ms: i64,
        /// The archive file (under the archive directory) holding its history.
        pub file: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
