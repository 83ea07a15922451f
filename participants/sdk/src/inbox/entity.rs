//! The `skald_inbox` table as a sea-orm entity: one row per command id the
//! participant has answered for good, holding the reply it gave.

use sea_orm::entity::prelude::*;

/// One answered command. `reply_json` is a [`sagas::protocol::Reply`]; its
/// `attempt` is the attempt that produced it (0 for the `do` row written with a
/// tombstone, before that `do` arrived). A duplicate is answered with the stored
/// outcome and its own attempt.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "skald_inbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub command_id: String,
    pub saga_id: String,
    pub step: String,
    /// `do` or `undo`.
    pub kind: String,
    pub reply_json: String,
    pub created_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
