//! Cluster membership and partition leases, in the database.
//!
//! - `cluster_config` holds the partition count chosen when the cluster was
//!   created; an instance asking for another count is refused.
//! - `members`: one row per live instance, heartbeated.
//! - `leases`: one row per partition: owner, epoch, expiry. Taking a partition
//!   bumps its epoch; every append for an existing saga checks, in its own
//!   transaction, that the writer still holds the partition at its epoch
//!   ([`Store::append`] with a [`Fence`]), so a deposed owner cannot write.
//!
//! On PostgreSQL the fence reads the lease row `FOR SHARE`: a takeover's
//! `UPDATE` waits for appends in flight under the old epoch to commit, and the
//! new owner replays after its takeover, so it sees them. SQLite has one
//! writer at a time, which gives the same order.

use super::entities::{cluster_config, leases, members};
use super::{Store, StoreError};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, QueryTrait, TransactionTrait,
};

/// Longest an acquire waits for a lease row locked by an append in flight.
const ACQUIRE_LOCK_WAIT_MS: u64 = 250;

/// The proof of ownership an append carries: this instance holds `partition`
/// at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence {
    pub partition: i32,
    pub owner: String,
    pub epoch: i64,
}

impl Store {
    /// Record the partition count of a new cluster, or check it against the
    /// one recorded; create the lease rows.
    pub async fn ensure_cluster(&self, partitions: u32) -> Result<(), StoreError> {
        let row = cluster_config::ActiveModel {
            key: Set("partitions".to_owned()),
            value: Set(partitions.to_string()),
        };
        cluster_config::Entity::insert(row)
            .on_conflict(OnConflict::column(cluster_config::Column::Key).do_nothing().to_owned())
            .do_nothing()
            .exec(self.db())
            .await?;
        let stored = cluster_config::Entity::find_by_id("partitions")
            .one(self.db())
            .await?
            .map_or_else(|| partitions.to_string(), |r| r.value);
        if stored != partitions.to_string() {
            return Err(StoreError::PartitionCount { stored, asked: partitions });
        }
        let rows =
            (0..i32::try_from(partitions).unwrap_or(i32::MAX)).map(|p| leases::ActiveModel {
                partition: Set(p),
                owner: Set(String::new()),
                epoch: Set(0),
                expires_at_ms: Set(0),
            });
        leases::Entity::insert_many(rows)
            .on_conflict(OnConflict::column(leases::Column::Partition).do_nothing().to_owned())
            .do_nothing()
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Say this instance is alive.
    pub async fn heartbeat(
        &self,
        instance: &str,
        http_addr: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let row = members::ActiveModel {
            instance: Set(instance.to_owned()),
            heartbeat_at_ms: Set(now_ms),
            started_at_ms: Set(now_ms),
            http_addr: Set(http_addr.map(str::to_owned)),
        };
        members::Entity::insert(row)
            .on_conflict(
                OnConflict::column(members::Column::Instance)
                    .update_columns([members::Column::HeartbeatAtMs, members::Column::HttpAddr])
                    .to_owned(),
            )
            .exec(self.writes())
            .await?;
        Ok(())
    }

    /// Instances whose heartbeat is newer than `since_ms`, sorted.
    pub async fn live_members(&self, since_ms: i64) -> Result<Vec<members::Model>, StoreError> {
        let mut live = members::Entity::find()
            .filter(members::Column::HeartbeatAtMs.gt(since_ms))
            .all(self.db())
            .await?;
        live.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(live)
    }

    /// Leave the cluster: forget the member row.
    pub async fn leave(&self, instance: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        members::Entity::delete_by_id(instance).exec(self.writes()).await?;
        Ok(())
    }

    /// Take `partition` if its lease is free or expired (or already this
    /// instance's from an earlier run): the epoch goes up by one. Returns the
    /// new epoch, or `None` when someone else holds it — or when the lease row
    /// is locked by an append in flight under the old epoch (then the next
    /// round tries again; on PostgreSQL the wait is bounded by `lock_timeout`).
    pub async fn acquire(
        &self,
        partition: i32,
        instance: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let _turn = self.write_turn().await;
        self.fault("lease", false)?;
        let txn = self.writes().begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{ACQUIRE_LOCK_WAIT_MS}ms'"))
                .await?;
        }
        let taken = leases::Entity::update_many()
            .col_expr(leases::Column::Owner, Expr::value(instance))
            .col_expr(leases::Column::Epoch, Expr::col(leases::Column::Epoch).add(1))
            .col_expr(leases::Column::ExpiresAtMs, Expr::value(now_ms + ttl_ms))
            .filter(leases::Column::Partition.eq(partition))
            .filter(
                sea_orm::Condition::any()
                    .add(leases::Column::ExpiresAtMs.lt(now_ms))
                    .add(leases::Column::Owner.eq(""))
                    .add(leases::Column::Owner.eq(instance)),
            )
            .exec(&txn)
            .await;
        let taken = match taken {
            Ok(t) => t,
            // 55P03: lock_not_available — an old-epoch append still holds the row.
            Err(e) if e.to_string().contains("55P03") || e.to_string().contains("lock timeout") => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if taken.rows_affected != 1 {
            return Ok(None);
        }
        let row = leases::Entity::find_by_id(partition).one(&txn).await?;
        txn.commit().await?;
        Ok(row.filter(|r| r.owner == instance).map(|r| r.epoch))
    }

    /// Extend every lease this instance holds, in one statement, and return
    /// what it holds now: `(partition, epoch)`. A held partition missing from
    /// the answer, or at another epoch, was lost.
    pub async fn renew_all(
        &self,
        instance: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Vec<(i32, i64)>, StoreError> {
        let _turn = self.write_turn().await;
        let _alone = self.lease_turn_alone().await;
        self.fault("lease", false)?;
        leases::Entity::update_many()
            .col_expr(leases::Column::ExpiresAtMs, Expr::value(now_ms + ttl_ms))
            .filter(leases::Column::Owner.eq(instance))
            .exec(self.writes())
            .await?;
        Ok(leases::Entity::find()
            .filter(leases::Column::Owner.eq(instance))
            .all(self.writes())
            .await?
            .into_iter()
            .map(|l| (l.partition, l.epoch))
            .collect())
    }

    /// Give a lease up so another instance can take it at once.
    pub async fn release(&self, fence: &Fence) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let _alone = self.lease_turn_alone().await;
        leases::Entity::update_many()
            .col_expr(leases::Column::Owner, Expr::value(""))
            .col_expr(leases::Column::ExpiresAtMs, Expr::value(0_i64))
            .filter(leases::Column::Partition.eq(fence.partition))
            .filter(leases::Column::Owner.eq(fence.owner.as_str()))
            .filter(leases::Column::Epoch.eq(fence.epoch))
            .exec(self.writes())
            .await?;
        Ok(())
    }

    /// Every partition's lease.
    pub async fn leases(&self) -> Result<Vec<leases::Model>, StoreError> {
        Ok(leases::Entity::find().all(self.db()).await?)
    }

    /// The partitions some instance holds a live lease on at `now_ms`.
    pub async fn live_partitions(&self, now_ms: i64) -> Result<Vec<i32>, StoreError> {
        Ok(self
            .leases()
            .await?
            .into_iter()
            .filter(|l| !l.owner.is_empty() && l.expires_at_ms > now_ms)
            .map(|l| l.partition)
            .collect())
    }

    /// The statement that reads the lease rows of `fences`' partitions inside
    /// an append's transaction, each row tagged `part = 'fence'` (it may run
    /// in one query with others: [`super::writer`]). On PostgreSQL the rows
    /// are read `FOR SHARE`, locked until the transaction ends; with no
    /// fences there is nothing to read. On SQLite they are read by a no-op
    /// `UPDATE … RETURNING`, which also takes the database's write lock
    /// (waiting for it; a transaction that read first could not wait later);
    /// with no fences the `UPDATE` matches no row and only takes the lock.
    pub(super) fn fences_statement(
        backend: DbBackend,
        fences: &[Fence],
    ) -> Option<sea_orm::Statement> {
        let partitions: std::collections::BTreeSet<i32> =
            fences.iter().map(|f| f.partition).collect();
        let returned = || -> [sea_orm::sea_query::SimpleExpr; 4] {
            [
                super::writer::part_column("fence"),
                Expr::col(leases::Column::Partition).into(),
                Expr::col(leases::Column::Owner).into(),
                Expr::col(leases::Column::Epoch).into(),
            ]
        };
        if backend == DbBackend::Sqlite {
            let mut update = leases::Entity::update_many()
                .col_expr(leases::Column::Epoch, Expr::col(leases::Column::Epoch).into())
                .filter(if partitions.is_empty() {
                    leases::Column::Partition.lt(0)
                } else {
                    leases::Column::Partition.is_in(partitions)
                })
                .into_query();
            update.returning(sea_orm::sea_query::Query::returning().exprs(returned()));
            return Some(backend.build(&update));
        }
        if partitions.is_empty() {
            return None;
        }
        let [part, partition, owner, epoch] = returned();
        let mut select = sea_orm::sea_query::Query::select();
        select
            .exprs([part, partition, owner, epoch])
            .from(leases::Entity)
            .and_where(Expr::col(leases::Column::Partition).is_in(partitions))
            .lock_shared();
        Some(backend.build(&select))
    }

    /// Which of `fences` hold, given the lease rows [`Store::fences_statement`]
    /// read (rows of other parts are passed over).
    pub(super) fn fences_held(
        fences: &[Fence],
        rows: &[sea_orm::QueryResult],
    ) -> Result<Vec<bool>, StoreError> {
        let mut leases = Vec::new();
        for row in rows {
            if super::writer::part(row)? == "fence" {
                leases.push((
                    row.try_get::<i32>("", "partition")?,
                    row.try_get::<String>("", "owner")?,
                    row.try_get::<i64>("", "epoch")?,
                ));
            }
        }
        if fence_ignored() {
            return Ok(vec![true; fences.len()]);
        }
        Ok(fences
            .iter()
            .map(|f| {
                leases.iter().any(|(partition, owner, epoch)| {
                    *partition == f.partition && *owner == f.owner && *epoch == f.epoch
                })
            })
            .collect())
    }

    /// The check an append makes inside its transaction.
    ///
    /// On SQLite the check is a no-op `UPDATE` of the lease row: it takes the
    /// database's write lock (waiting for it; a transaction that read first
    /// could not wait later) and checks the fence in one statement.
    pub(super) async fn check_fence<C: ConnectionTrait>(
        txn: &C,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let planted = fence_ignored();
        if txn.get_database_backend() == DbBackend::Sqlite {
            let held = leases::Entity::update_many()
                .col_expr(leases::Column::Epoch, Expr::col(leases::Column::Epoch).into())
                .filter(leases::Column::Partition.eq(fence.partition))
                .filter(leases::Column::Owner.eq(fence.owner.as_str()))
                .filter(leases::Column::Epoch.eq(fence.epoch))
                .exec(txn)
                .await?;
            if held.rows_affected != 1 && !planted {
                return Err(StoreError::Fenced { partition: fence.partition, epoch: fence.epoch });
            }
            return Ok(());
        }
        let mut query = leases::Entity::find()
            .filter(leases::Column::Partition.eq(fence.partition))
            .filter(leases::Column::Owner.eq(fence.owner.as_str()))
            .filter(leases::Column::Epoch.eq(fence.epoch));
        if txn.get_database_backend() == DbBackend::Postgres {
            query = query.lock_shared();
        }
        if query.one(txn).await?.is_none() && !planted {
            return Err(StoreError::Fenced { partition: fence.partition, epoch: fence.epoch });
        }
        Ok(())
    }
}

/// Whether the fences' answer is ignored: the simulator's planted `no-fence`
/// mistake (never without the `planted` feature). The fence statements still
/// run, and on SQLite take the write lock.
fn fence_ignored() -> bool {
    #[cfg(feature = "planted")]
    if sagas::planted::is_planted(sagas::planted::Mistake::NoFence) {
        return true;
    }
    false
}
