//! Retention's side of the store: the ended sagas old enough to leave the
//! hot tables, read whole (row, history, tags); their removal in one
//! transaction that leaves a marker saying where each went; and that marker.

use super::entities::{archived_sagas, repairs, saga_events, saga_tags, sagas};
use super::{Store, StoreError};
use sea_orm::sea_query::{Expr, Query, UnionType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use std::collections::HashMap;

/// Most bytes of history [`Store::whole`] reads at once (more than one saga's
/// only when the first alone is larger).
pub const WHOLE_BYTES_MAX: i64 = 32 * 1024 * 1024;

/// The statuses a saga may be archived in: it has ended for good.
pub const ARCHIVABLE: [&str; 3] = ["completed", "compensated", "failed"];

/// The saga an idempotency key names, and the hash of the input it was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    pub saga_id: String,
    pub input_hash: String,
}

/// One saga, whole (as archived and exported).
#[derive(Debug, Clone)]
pub struct EndedSaga {
    pub row: sagas::Model,
    /// Oldest first.
    pub events: Vec<saga_events::Model>,
    pub tags: Vec<(String, String)>,
}

impl Store {
    /// At most `limit` sagas of `partitions` that ended before `cutoff_ms`,
    /// oldest first, each with its history and tags.
    pub async fn ended_before(
        &self,
        cutoff_ms: i64,
        partitions: &[i32],
        limit: u64,
    ) -> Result<Vec<EndedSaga>, StoreError> {
        let rows = sagas::Entity::find()
            .filter(sagas::Column::Status.is_in(ARCHIVABLE))
            .filter(sagas::Column::UpdatedAtMs.lt(cutoff_ms))
            .filter(sagas::Column::Partition.is_in(partitions.iter().copied()))
            .order_by_asc(sagas::Column::UpdatedAtMs)
            .limit(limit)
            .all(self.db())
            .await?;
        self.whole(rows).await
    }

    /// These sagas whole: each row with its history and tags; only the first
    /// of them whose histories fit in [`WHOLE_BYTES_MAX`] (always the first),
    /// so a batch of long histories cannot take all memory.
    pub async fn whole(&self, rows: Vec<sagas::Model>) -> Result<Vec<EndedSaga>, StoreError> {
        self.whole_within(rows, WHOLE_BYTES_MAX).await
    }

    /// [`Self::whole`] within `max_bytes` of history.
    pub async fn whole_within(
        &self,
        mut rows: Vec<sagas::Model>,
        max_bytes: i64,
    ) -> Result<Vec<EndedSaga>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.saga_id.as_str()).collect();
        let sizes: HashMap<String, i64> = saga_events::Entity::find()
            .select_only()
            .column(saga_events::Column::SagaId)
            .column_as(Expr::cust("SUM(LENGTH(\"event\"))"), "bytes")
            .filter(saga_events::Column::SagaId.is_in(ids.iter().copied()))
            .group_by(saga_events::Column::SagaId)
            .into_tuple::<(String, i64)>()
            .all(self.db())
            .await?
            .into_iter()
            .collect();
        let mut total = 0_i64;
        let fits = rows
            .iter()
            .take_while(|r| {
                total = total.saturating_add(sizes.get(&r.saga_id).copied().unwrap_or(0));
                total <= max_bytes
            })
            .count()
            .max(1);
        rows.truncate(fits);
        let ids: Vec<&str> = rows.iter().map(|r| r.saga_id.as_str()).collect();
        let mut events: HashMap<String, Vec<saga_events::Model>> = HashMap::new();
        for e in saga_events::Entity::find()
            .filter(saga_events::Column::SagaId.is_in(ids.iter().copied()))
            .order_by_asc(saga_events::Column::Seq)
            .all(self.db())
            .await?
        {
            events.entry(e.saga_id.clone()).or_default().push(e);
        }
        let mut tags = self.tags_of(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| EndedSaga {
                events: events.remove(&row.saga_id).unwrap_or_default(),
                tags: tags.remove(&row.saga_id).unwrap_or_default().into_iter().collect(),
                row,
            })
            .collect())
    }

    /// Remove archived sagas from the hot tables (events, tags, recorded
    /// repairs, the row), leaving for each a marker naming its `file`, in
    /// one transaction. A saga no longer ended (it cannot be, but the guard
    /// costs nothing) is left as it is.
    pub async fn purge(
        &self,
        archived: &[(&EndedSaga, String)],
        archived_at_ms: i64,
    ) -> Result<u64, StoreError> {
        if archived.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = archived.iter().map(|(s, _)| s.row.saga_id.as_str()).collect();
        let txn = self.db().begin().await?;
        let removed = sagas::Entity::delete_many()
            .filter(sagas::Column::SagaId.is_in(ids.iter().copied()))
            .filter(sagas::Column::Status.is_in(ARCHIVABLE))
            .exec(&txn)
            .await?
            .rows_affected;
        saga_events::Entity::delete_many()
            .filter(saga_events::Column::SagaId.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        saga_tags::Entity::delete_many()
            .filter(saga_tags::Column::SagaId.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        repairs::Entity::delete_many()
            .filter(repairs::Column::SagaId.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        let markers = archived.iter().map(|(s, file)| archived_sagas::ActiveModel {
            saga_id: Set(s.row.saga_id.clone()),
            saga_type: Set(s.row.saga_type.clone()),
            status: Set(s.row.status.clone()),
            idempotency_key: Set(s.row.idempotency_key.clone()),
            input_hash: Set(s.row.input_hash.clone()),
            ended_at_ms: Set(s.row.updated_at_ms),
            archived_at_ms: Set(archived_at_ms),
            file: Set(file.clone()),
        });
        archived_sagas::Entity::insert_many(markers)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(archived_sagas::Column::SagaId)
                    .do_nothing()
                    .to_owned(),
            )
            .do_nothing()
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(removed)
    }

    /// The saga a start of `saga_type` with `key` made, live or archived, if
    /// any: one query where asking each table apart took two.
    pub async fn started_by_key(
        &self,
        saga_type: &str,
        key: &str,
    ) -> Result<Option<KeyHolder>, StoreError> {
        let live = Query::select()
            .columns([sagas::Column::SagaId, sagas::Column::InputHash])
            .from(sagas::Entity)
            .and_where(sagas::Column::SagaType.eq(saga_type))
            .and_where(sagas::Column::IdempotencyKey.eq(key))
            .to_owned();
        let mut either = Query::select()
            .columns([archived_sagas::Column::SagaId, archived_sagas::Column::InputHash])
            .from(archived_sagas::Entity)
            .and_where(archived_sagas::Column::SagaType.eq(saga_type))
            .and_where(archived_sagas::Column::IdempotencyKey.eq(key))
            .to_owned();
        either.union(UnionType::All, live);
        let statement = self.db().get_database_backend().build(&either);
        let Some(row) = self.db().query_one(statement).await? else { return Ok(None) };
        Ok(Some(KeyHolder {
            saga_id: row.try_get("", "saga_id")?,
            input_hash: row.try_get("", "input_hash")?,
        }))
    }

    /// Where an archived saga went, if it was archived.
    pub async fn archived(
        &self,
        saga_id: &str,
    ) -> Result<Option<archived_sagas::Model>, StoreError> {
        Ok(archived_sagas::Entity::find_by_id(saga_id.to_owned()).one(self.db()).await?)
    }
}
