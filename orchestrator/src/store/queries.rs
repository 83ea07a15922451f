//! Read queries for operators: listing sagas by filter with a stable cursor,
//! the stuck classes as SQL, counts for the overview, the raw history and the
//! recorded repairs.
//!
//! Stuck classes are computed from projection columns and `now`, so a list of
//! stuck sagas is one indexed query however many sagas are stored; the saga
//! page computes the same classes from the same row.

use super::entities::{repairs, saga_events, saga_tags, sagas};
use super::{Store, StoreError};
use sea_orm::sea_query::{Condition, Expr, LikeExpr, Query};
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How long past its next deadline an active saga may wait before it counts
/// as overdue: timers normally act within milliseconds, so this means nobody
/// is driving it (no owner, an overloaded or stopped orchestrator).
pub const OVERDUE_GRACE_MS: i64 = 5_000;
/// Most sagas one page lists.
pub const PAGE_SIZE_MAX: u64 = 200;
/// Every stuck saga has one of these statuses.
const STUCK_STATUSES: [&str; 3] = ["running", "compensating", "parked"];

/// Why a saga needs an operator's eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StuckClass {
    /// Waiting on a participant (or a retry) longer than its timeout allows.
    Overdue,
    /// The current command is being retried: attempt k of n, with the last error.
    Retrying,
    /// Stopped until an operator acts (compensation stuck or failed, forward stuck).
    Parked,
    /// Still running after the saga's deadline.
    PastDeadline,
    /// Its partition has no live owner, so nothing drives it.
    NoOwner,
    /// A waiting step has waited past half its wait for its event.
    Waiting,
}

impl StuckClass {
    pub const ALL: [Self; 6] = [
        Self::Overdue,
        Self::Retrying,
        Self::Parked,
        Self::PastDeadline,
        Self::NoOwner,
        Self::Waiting,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overdue => "overdue",
            Self::Retrying => "retrying",
            Self::Parked => "parked",
            Self::PastDeadline => "past_deadline",
            Self::NoOwner => "no_owner",
            Self::Waiting => "waiting",
        }
    }

    /// Parse a class name as used in query strings.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a projection row is in this class at `now`, given which
    /// partitions have a live owner.
    #[must_use]
    pub fn matches(self, row: &sagas::Model, now_ms: i64, owned: &[i32]) -> bool {
        let active = row.status == "running" || row.status == "compensating";
        match self {
            Self::Overdue => {
                active && row.next_deadline_ms.is_some_and(|d| d < now_ms - OVERDUE_GRACE_MS)
            }
            Self::Retrying => active && row.last_error.is_some(),
            Self::Parked => row.status == "parked",
            Self::PastDeadline => active && row.deadline_at_ms.is_some_and(|d| d < now_ms),
            Self::NoOwner => active && !owned.contains(&row.partition),
            Self::Waiting => {
                row.status == "running" && row.wait_half_at_ms.is_some_and(|h| h < now_ms)
            }
        }
    }

    /// The same test as SQL.
    fn condition(self, now_ms: i64, owned: &[i32]) -> Condition {
        let active = sagas::Column::Status.is_in(["running", "compensating"]);
        match self {
            Self::Overdue => Condition::all()
                .add(active)
                .add(sagas::Column::NextDeadlineMs.lt(now_ms - OVERDUE_GRACE_MS)),
            Self::Retrying => {
                Condition::all().add(active).add(sagas::Column::LastError.is_not_null())
            }
            Self::Parked => Condition::all().add(sagas::Column::Status.eq("parked")),
            Self::PastDeadline => {
                Condition::all().add(active).add(sagas::Column::DeadlineAtMs.lt(now_ms))
            }
            Self::NoOwner => Condition::all()
                .add(active)
                .add(sagas::Column::Partition.is_not_in(owned.iter().copied())),
            Self::Waiting => Condition::all()
                .add(sagas::Column::Status.eq("running"))
                .add(sagas::Column::WaitHalfAtMs.lt(now_ms)),
        }
    }
}

/// Which sagas to list. Every field narrows the list; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListFilter {
    /// Saga type (definition name).
    pub saga_type: Option<String>,
    /// Any of these statuses.
    #[serde(default)]
    pub status: Vec<String>,
    /// The step the saga is at.
    pub step: Option<String>,
    /// Started at least this many milliseconds ago.
    pub older_than_ms: Option<i64>,
    /// Started at most this many milliseconds ago.
    pub newer_than_ms: Option<i64>,
    /// In this stuck class.
    pub stuck: Option<StuckClass>,
    /// In any stuck class.
    #[serde(default)]
    pub stuck_any: bool,
    /// Text the idempotency key contains.
    pub key_contains: Option<String>,
    /// Ended (completed, compensated or failed) at most this many milliseconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_within_ms: Option<i64>,
    /// Business tags the saga has (every one of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// One page of a list, newest saga first.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub rows: Vec<sagas::Model>,
    /// The cursor for the next page, if there may be one.
    pub next_cursor: Option<String>,
}

impl ListFilter {
    /// The filter as SQL. `by_status` states the status every stuck saga has
    /// on its own (SQLite: so that its status index narrows the search).
    fn condition(&self, now_ms: i64, owned: &[i32], by_status: bool) -> Condition {
        let mut c = Condition::all();
        if let Some(t) = &self.saga_type {
            c = c.add(sagas::Column::SagaType.eq(t.as_str()));
        }
        if !self.status.is_empty() {
            c = c.add(sagas::Column::Status.is_in(self.status.iter().map(String::as_str)));
        }
        if let Some(step) = &self.step {
            c = c.add(sagas::Column::CurrentStep.eq(step.as_str()));
        }
        if let Some(age) = self.older_than_ms {
            c = c.add(sagas::Column::CreatedAtMs.lte(now_ms.saturating_sub(age)));
        }
        if let Some(age) = self.newer_than_ms {
            c = c.add(sagas::Column::CreatedAtMs.gte(now_ms.saturating_sub(age)));
        }
        if let Some(age) = self.ended_within_ms {
            c = c.add(sagas::Column::Status.is_in(super::archive::ARCHIVABLE));
            c = c.add(sagas::Column::UpdatedAtMs.gte(now_ms.saturating_sub(age)));
        }
        if let Some(class) = self.stuck {
            c = c.add(class.condition(now_ms, owned));
        }
        if self.stuck_any {
            let mut any = Condition::any();
            for class in StuckClass::ALL {
                any = any.add(class.condition(now_ms, owned));
            }
            // Implied by every class. Stated on its own, SQLite's status
            // index narrows the search to unfinished sagas (without it SQLite
            // walks the whole table to test the `OR` row by row); PostgreSQL
            // plans better without it.
            if by_status {
                c = c.add(sagas::Column::Status.is_in(STUCK_STATUSES));
            }
            c = c.add(any);
        }
        for (name, value) in &self.tags {
            c = c.add(
                sagas::Column::SagaId.in_subquery(
                    Query::select()
                        .column(saga_tags::Column::SagaId)
                        .from(saga_tags::Entity)
                        .and_where(saga_tags::Column::Name.eq(name.as_str()))
                        .and_where(saga_tags::Column::Value.eq(value.as_str()))
                        .to_owned(),
                ),
            );
        }
        if let Some(text) = &self.key_contains {
            let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            c = c.add(
                Expr::col(sagas::Column::IdempotencyKey)
                    .like(LikeExpr::new(format!("%{escaped}%")).escape('\\')),
            );
        }
        c
    }
}

impl Store {
    /// The running sagas (at most two: one is the answer, two say it is
    /// ambiguous) whose waiting step waits for `event` with `key`.
    pub async fn waiting_for(&self, event: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sagas::Entity::find()
            .select_only()
            .column(sagas::Column::SagaId)
            .filter(sagas::Column::WaitKey.eq(format!("{event}:{key}")))
            .filter(sagas::Column::Status.eq("running"))
            .limit(2)
            .into_tuple::<String>()
            .all(self.db())
            .await?;
        Ok(rows)
    }

    /// A page of sagas matching `filter`, newest first. The cursor is the last
    /// saga id of the previous page: saga ids are time-ordered (UUID v7), so a
    /// saga started while someone pages never shifts the pages after it.
    pub async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: u64,
        now_ms: i64,
        owned: &[i32],
    ) -> Result<ListPage, StoreError> {
        let limit = limit.clamp(1, PAGE_SIZE_MAX);
        let mut query = sagas::Entity::find().filter(filter.condition(
            now_ms,
            owned,
            self.backend() == DbBackend::Sqlite,
        ));
        if let Some(after) = cursor {
            query = query.filter(sagas::Column::SagaId.lt(after));
        }
        let mut rows =
            query.order_by_desc(sagas::Column::SagaId).limit(limit + 1).all(self.db()).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = if more { rows.last().map(|r| r.saga_id.clone()) } else { None };
        Ok(ListPage { rows, next_cursor })
    }

    /// How many sagas match `filter`, counting at most `cap`.
    pub async fn count_matching(
        &self,
        filter: &ListFilter,
        now_ms: i64,
        owned: &[i32],
    ) -> Result<u64, StoreError> {
        let n = sagas::Entity::find()
            .select_only()
            .column_as(sagas::Column::SagaId.count(), "n")
            .filter(filter.condition(now_ms, owned, self.backend() == DbBackend::Sqlite))
            .into_tuple::<i64>()
            .one(self.db())
            .await?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Ids of the sagas matching `filter`, newest first, at most `limit`.
    pub async fn ids_matching(
        &self,
        filter: &ListFilter,
        limit: u64,
        now_ms: i64,
        owned: &[i32],
    ) -> Result<Vec<String>, StoreError> {
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::SagaId)
            .filter(filter.condition(now_ms, owned, self.backend() == DbBackend::Sqlite))
            .order_by_desc(sagas::Column::SagaId)
            .limit(limit)
            .into_tuple::<String>()
            .all(self.db())
            .await?)
    }

    /// The tags of these sagas, by saga id.
    pub async fn tags_of(
        &self,
        saga_ids: &[&str],
    ) -> Result<HashMap<String, BTreeMap<String, String>>, StoreError> {
        let mut tags: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        if saga_ids.is_empty() {
            return Ok(tags);
        }
        for row in saga_tags::Entity::find()
            .filter(saga_tags::Column::SagaId.is_in(saga_ids.iter().copied()))
            .all(self.db())
            .await?
        {
            tags.entry(row.saga_id).or_default().insert(row.name, row.value);
        }
        Ok(tags)
    }

    /// Count of sagas per (type, status).
    pub async fn count_by_type_status(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::SagaType)
            .column(sagas::Column::Status)
            .column_as(sagas::Column::SagaId.count(), "n")
            .group_by(sagas::Column::SagaType)
            .group_by(sagas::Column::Status)
            .into_tuple::<(String, String, i64)>()
            .all(self.db())
            .await?)
    }

    /// One saga's projection row.
    pub async fn row(&self, saga_id: &str) -> Result<Option<sagas::Model>, StoreError> {
        Ok(sagas::Entity::find_by_id(saga_id).one(self.db()).await?)
    }

    /// A saga's stored events with when each was recorded, oldest first.
    pub async fn history(&self, saga_id: &str) -> Result<Vec<saga_events::Model>, StoreError> {
        Ok(saga_events::Entity::find()
            .filter(saga_events::Column::SagaId.eq(saga_id))
            .order_by_asc(saga_events::Column::Seq)
            .all(self.db())
            .await?)
    }

    /// The repair recorded under this request id, if any.
    pub async fn repair(&self, request_id: &str) -> Result<Option<repairs::Model>, StoreError> {
        Ok(repairs::Entity::find_by_id(request_id).one(self.db()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status guard added to "any stuck class" never hides a stuck saga.
    #[test]
    fn every_stuck_saga_has_a_stuck_status() {
        let statuses = [
            "not_started",
            "running",
            "compensating",
            "parked",
            "completed",
            "compensated",
            "failed",
        ];
        for status in statuses {
            // A row that is in every class its status allows.
            let row = sagas::Model {
                saga_id: "s".into(),
                saga_type: "t".into(),
                definition_hash: "h".into(),
                status: status.into(),
                current_step: Some("one".into()),
                partition: 7,
                idempotency_key: "k".into(),
                input_hash: "i".into(),
                seq: 3,
                next_deadline_ms: Some(0),
                last_error: Some("boom".into()),
                created_at_ms: 0,
                updated_at_ms: 0,
                current_kind: Some("do".into()),
                attempt: 2,
                deadline_at_ms: Some(0),
                park_reason: None,
                wait_half_at_ms: Some(0),
                wait_key: None,
            };
            for class in StuckClass::ALL {
                if class.matches(&row, 1_000_000, &[]) {
                    assert!(STUCK_STATUSES.contains(&status), "{class:?} matches status {status}");
                }
            }
        }
    }
}
