//! The `payments` table as a sea-orm entity: one row per call the participant
//! makes to the provider, keyed by the idempotency key it sends.

use sea_orm::entity::prelude::*;

/// One effect asked of the provider.
///
/// Written as `pending` before the call (the intent), and settled after it.
/// `attempts` counts the calls made with this key; they are one effect at the
/// provider, which dedupes by key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payments")]
pub struct Model {
    /// The idempotency key: the Skald command id (`<saga>.<step>.<do|undo>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub command_id: String,
    /// `charge`, `refund` or `payout` ([`super::Kind`]).
    pub kind: String,
    pub saga_id: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    /// The reference sent to the provider (the saga id).
    pub reference: String,
    /// The provider's id of the charge, refund or payout, once it exists.
    pub provider_id: Option<String>,
    /// [`super::Status`].
    pub status: String,
    /// Why it was refused, for refused and stuck rows.
    pub error_code: Option<String>,
    /// Calls made with this key.
    pub attempts: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
