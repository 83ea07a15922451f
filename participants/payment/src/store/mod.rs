//! The payment participant's record of its calls to the provider: table
//! `payments`, one row per idempotency key.
//!
//! The intent row is written and committed *before* the call, on its own
//! (a handler through the SDK's `commit_now` with [`intent_statement`], the
//! reconciler with [`record_intent`]): if the process dies during the call, the row says a
//! call with this key may have reached the provider, and the re-run makes the
//! same call with the same key and gets the same answer. The result is written
//! after the call ([`settle`]), in the SDK's transaction when the answer is
//! `ok`, so it commits with the inbox row that stores the reply.
//!
//! Statuses: `pending` → `succeeded` | `refused` | `nothing_to_refund`; a
//! charge left `pending` whose `do` was refused for good is settled by the
//! reconciler as `refunded`, `not_charged` or `stuck` (see
//! [`crate::reconcile`]).

pub mod entity;
pub mod migration;

pub use entity::{Column, Entity, Model};

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};
use skald_participant::inbox;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most rows a scan returns.
pub const SCAN_ROWS_MAX: u64 = 1_000;

/// What a row is a call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Charge,
    Refund,
    Payout,
}

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Refund => "refund",
            Self::Payout => "payout",
        }
    }
}

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The intent: a call with this key may have reached the provider.
    Pending,
    /// The provider made the charge, refund or payout (`provider_id`).
    Succeeded,
    /// The provider refused it for good (`error_code`).
    Refused,
    /// A refund of a charge the provider does not have.
    NothingToRefund,
    /// A charge whose `do` was refused after an uncertain call, given back by
    /// the reconciler.
    Refunded,
    /// A charge whose `do` was refused after an uncertain call, which the
    /// provider never made.
    NotCharged,
    /// A charge the reconciler could not give back: an operator must look.
    Stuck,
}

impl Status {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::NothingToRefund => "nothing_to_refund",
            Self::Refunded => "refunded",
            Self::NotCharged => "not_charged",
            Self::Stuck => "stuck",
        }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the payments database failed: {0}")]
    Db(#[from] DbErr),
    /// The key was recorded before for another call: a command id reused with
    /// another payload, which the protocol never does.
    #[error(
        "idempotency key {key} was first recorded with {field} `{recorded}`, now `{asked}`: \
         one key is one call"
    )]
    Mismatch { key: String, field: &'static str, recorded: String, asked: String },
    /// A row that must exist does not (settled before its intent?).
    #[error("no payment is recorded under idempotency key {key}")]
    Missing { key: String },
}

impl From<StoreError> for skald_participant::HandlerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Mismatch { .. } => Self::failed("payload_changed", e.to_string()),
            StoreError::Db(_) | StoreError::Missing { .. } => {
                Self::retry("database_error", e.to_string())
            }
        }
    }
}

/// The call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent<'a> {
    pub key: &'a str,
    pub kind: Kind,
    pub saga_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub reference: &'a str,
}

/// Record that a call with `intent.key` is about to be made: a new `pending`
/// row, or one more attempt on the existing row. Run it outside any other
/// transaction, so that it is committed before the call.
///
/// # Errors
/// [`StoreError::Mismatch`] when the key was recorded for another call.
pub async fn record_intent<C: ConnectionTrait>(
    db: &C,
    intent: Intent<'_>,
) -> Result<Model, StoreError> {
    db.execute(intent_statement(db.get_database_backend(), intent)).await?;
    recorded(db, intent).await
}

/// The write of [`record_intent`], for a caller that commits it its own way
/// (a handler, through the SDK's `commit_now`); [`recorded`] reads it back.
#[must_use]
pub fn intent_statement(backend: DbBackend, intent: Intent<'_>) -> Statement {
    let now = now_ms();
    let row = entity::ActiveModel {
        command_id: Set(intent.key.to_owned()),
        kind: Set(intent.kind.as_str().to_owned()),
        saga_id: Set(intent.saga_id.to_owned()),
        amount: Set(intent.amount),
        currency: Set(intent.currency.to_owned()),
        reference: Set(intent.reference.to_owned()),
        provider_id: Set(None),
        status: Set(Status::Pending.as_str().to_owned()),
        error_code: Set(None),
        attempts: Set(1),
        created_at_ms: Set(now),
        updated_at_ms: Set(now),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::CommandId)
                .value(Column::Attempts, Expr::col((Entity, Column::Attempts)).add(1))
                .value(Column::UpdatedAtMs, now)
                .to_owned(),
        )
        .build(backend)
}

/// The row of a recorded intent, checked against `intent`.
///
/// # Errors
/// [`StoreError::Missing`] when nothing is recorded under the key,
/// [`StoreError::Mismatch`] when the key was recorded for another call.
pub async fn recorded<C: ConnectionTrait>(db: &C, intent: Intent<'_>) -> Result<Model, StoreError> {
    let recorded = find(db, intent.key)
        .await?
        .ok_or_else(|| StoreError::Missing { key: intent.key.to_owned() })?;
    let mismatch = |field: &'static str, recorded: String, asked: String| StoreError::Mismatch {
        key: intent.key.to_owned(),
        field,
        recorded,
        asked,
    };
    if recorded.kind != intent.kind.as_str() {
        return Err(mismatch("kind", recorded.kind, intent.kind.as_str().to_owned()));
    }
    if recorded.amount != intent.amount {
        return Err(mismatch("amount", recorded.amount.to_string(), intent.amount.to_string()));
    }
    if recorded.currency != intent.currency {
        return Err(mismatch("currency", recorded.currency, intent.currency.to_owned()));
    }
    if recorded.reference != intent.reference {
        return Err(mismatch("reference", recorded.reference, intent.reference.to_owned()));
    }
    Ok(recorded)
}

/// Record the outcome of the call made under `key`. Exactly one row must
/// change: its intent was recorded first.
///
/// # Errors
/// [`StoreError::Missing`] when no intent was recorded under `key`.
pub async fn settle<C: ConnectionTrait>(
    conn: &C,
    key: &str,
    status: Status,
    provider_id: Option<&str>,
    error_code: Option<&str>,
) -> Result<(), StoreError> {
    let statement =
        settle_statement(conn.get_database_backend(), key, status, provider_id, error_code);
    match conn.execute(statement).await?.rows_affected() {
        1 => Ok(()),
        0 => Err(StoreError::Missing { key: key.to_owned() }),
        // The primary key makes this impossible; say so loudly if it is not.
        n => Err(StoreError::Db(DbErr::Custom(format!(
            "settling idempotency key {key} changed {n} rows; the primary key is broken"
        )))),
    }
}

/// The write of [`settle`], for a caller that commits it its own way and
/// knows the intent is recorded.
#[must_use]
pub fn settle_statement(
    backend: DbBackend,
    key: &str,
    status: Status,
    provider_id: Option<&str>,
    error_code: Option<&str>,
) -> Statement {
    Entity::update_many()
        .col_expr(Column::Status, Expr::value(status.as_str()))
        .col_expr(Column::ProviderId, Expr::value(provider_id.map(str::to_owned)))
        .col_expr(Column::ErrorCode, Expr::value(error_code.map(str::to_owned)))
        .col_expr(Column::UpdatedAtMs, Expr::value(now_ms()))
        .filter(Column::CommandId.eq(key))
        .build(backend)
}

/// The row recorded under `key`.
///
/// # Errors
/// A database error.
pub async fn find<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(key.to_owned()).one(conn).await
}

/// Charges still `pending`, whose last call was before `before_ms`, and whose
/// `do` the SDK has answered for good (a row in its `skald_inbox` table): the
/// ones [`crate::reconcile`] settles. Oldest first, at most `limit` (capped at
/// [`SCAN_ROWS_MAX`]; ties by key). A charge the saga may still retry has no inbox row, so
/// it is not returned and cannot crowd out the ones that are due.
///
/// # Errors
/// A database error.
pub async fn pending_answered_charges<C: ConnectionTrait>(
    conn: &C,
    before_ms: i64,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let answered =
        Query::select().column(inbox::entity::Column::CommandId).from(inbox::Entity).to_owned();
    Entity::find()
        .filter(Column::Kind.eq(Kind::Charge.as_str()))
        .filter(Column::Status.eq(Status::Pending.as_str()))
        .filter(Column::UpdatedAtMs.lt(before_ms))
        .filter(Column::CommandId.in_subquery(answered))
        .order_by_asc(Column::UpdatedAtMs)
        .order_by_asc(Column::CommandId)
        .limit(limit.min(SCAN_ROWS_MAX))
        .all(conn)
        .await
}

/// The row of the call the provider answered with `provider_id`, if any.
///
/// # Errors
/// A database error.
pub async fn by_provider_id<C: ConnectionTrait>(
    conn: &C,
    provider_id: &str,
) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(Column::ProviderId.eq(provider_id)).one(conn).await
}

/// Every row of one saga, oldest first (for operators and tests).
///
/// # Errors
/// A database error.
pub async fn of_saga<C: ConnectionTrait>(conn: &C, saga_id: &str) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::SagaId.eq(saga_id))
        .order_by_asc(Column::CreatedAtMs)
        .limit(SCAN_ROWS_MAX)
        .all(conn)
        .await
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Database;
    use skald_participant::migrate::migrate;

    fn charge<'a>(key: &'a str, amount: i64) -> Intent<'a> {
        Intent { key, kind: Kind::Charge, saga_id: "s1", amount, currency: "EUR", reference: "s1" }
    }

    #[tokio::test]
    async fn intents_count_attempts_and_refuse_another_call_under_one_key() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        migrate::<migration::PaymentSchema>(&db).await.unwrap();
        migrate::<migration::PaymentSchema>(&db).await.unwrap(); // idempotent

        let first = record_intent(&db, charge("s1.charge.do", 500)).await.unwrap();
        assert_eq!((first.attempts, first.status.as_str()), (1, "pending"));
        let again = record_intent(&db, charge("s1.charge.do", 500)).await.unwrap();
        assert_eq!(again.attempts, 2);
        assert_eq!(again.created_at_ms, first.created_at_ms);

        let err = record_intent(&db, charge("s1.charge.do", 501)).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { field: "amount", .. }), "{err}");

        settle(&db, "s1.charge.do", Status::Succeeded, Some("ch_1"), None).await.unwrap();
        let row = find(&db, "s1.charge.do").await.unwrap().unwrap();
        assert_eq!((row.status.as_str(), row.provider_id.as_deref()), ("succeeded", Some("ch_1")));
        assert!(matches!(
            settle(&db, "nope", Status::Refused, None, None).await,
            Err(StoreError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn pending_charges_are_due_once_quiet_and_answered() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        migrate::<migration::PaymentSchema>(&db).await.unwrap();
        inbox::migration::migrate(&db).await.unwrap();
        for key in ["a.charge.do", "b.charge.do", "c.charge.do"] {
            record_intent(&db, charge(key, 1)).await.unwrap();
        }
        let payout = Intent { kind: Kind::Payout, ..charge("d.payout.do", 1) };
        record_intent(&db, payout).await.unwrap();
        settle(&db, "b.charge.do", Status::Succeeded, Some("ch_2"), None).await.unwrap();
        // The SDK answered a, b and d for good; c may still be retried.
        for key in ["a.charge.do", "b.charge.do", "d.payout.do"] {
            inbox::Entity::insert(inbox::entity::ActiveModel {
                command_id: Set(key.into()),
                saga_id: Set("s1".into()),
                step: Set("charge".into()),
                kind: Set("do".into()),
                reply_json: Set("{}".into()),
                created_at_ms: Set(0),
            })
            .exec_without_returning(&db)
            .await
            .unwrap();
        }

        assert!(pending_answered_charges(&db, 0, 10).await.unwrap().is_empty(), "not quiet yet");
        let due = pending_answered_charges(&db, i64::MAX, 10).await.unwrap();
        let keys: Vec<_> = due.iter().map(|r| r.command_id.as_str()).collect();
        assert_eq!(keys, ["a.charge.do"]);
    }
}
