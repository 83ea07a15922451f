//! The store: saga histories, their projection, the outbox and definitions.
//!
//! The database is the record. An append writes a saga's new events, its
//! projection row and the commands to publish in ONE transaction; the primary
//! key `(saga_id, seq)` and the projection's `seq` guard make a concurrent
//! writer's append fail with [`StoreError::Conflict`], after which the caller
//! reloads and decides again. Appends go through one writer task per store
//! that commits many sagas' appends in one transaction (group commit,
//! [`writer`]). SQLite is the default (WAL, one file);
//! PostgreSQL is chosen by a `postgres://` URL.

pub mod archive;
mod batch;
pub mod entities;
#[cfg(feature = "faults")]
pub mod faults;
mod handoff;
mod leases;
mod migration;
mod queries;
mod sessions;
mod writer;

pub use handoff::{HANDOFF_ROWS_MAX, Handoff};
pub use leases::Fence;

pub use queries::{ListFilter, ListPage, OVERDUE_GRACE_MS, PAGE_SIZE_MAX, StuckClass};

use crate::clock::SharedClock;
use ::sagas::machine::SagaEvent;
use entities::{definitions, outbox, saga_events, sagas};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::sync::Arc;
use std::time::Duration;

/// The advisory lock key taken around migrations on PostgreSQL ("skald" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0073_6b61_6c64;
/// How long PostgreSQL lets a session sit idle inside a transaction.
const IDLE_IN_TRANSACTION_MS: u64 = 5_000;
/// Most rows the relay takes per round.
pub const OUTBOX_BATCH_MAX: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {url}: {source}. {hint}")]
    Connect { url: String, source: DbErr, hint: &'static str },
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
    /// Someone else appended to this saga first: reload and decide again.
    #[error("saga {saga_id} was changed concurrently (expected seq {expected_seq})")]
    Conflict { saga_id: String, expected_seq: i64 },
    /// This instance no longer holds the partition at the epoch it wrote under.
    #[error("partition {partition} is no longer held at epoch {epoch}: the write was rejected")]
    Fenced { partition: i32, epoch: i64 },
    #[error(
        "this cluster was created with {stored} partitions; --partitions {asked} differs (the count cannot change)"
    )]
    PartitionCount { stored: String, asked: u32 },
    /// A repair with this request id was already recorded.
    #[error("repair request {request_id} was already recorded")]
    DuplicateRequest { request_id: String },
    /// A saga with this type and idempotency key already exists.
    #[error("a saga of type {saga_type} with this idempotency key already exists")]
    DuplicateKey { saga_type: String },
    #[error("stored event {seq} of saga {saga_id} cannot be read: {message}")]
    Corrupt { saga_id: String, seq: i64, message: String },
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

/// The projection columns written with an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    pub saga_type: String,
    pub definition_hash: String,
    pub status: String,
    pub current_step: Option<String>,
    pub partition: i32,
    pub idempotency_key: String,
    pub input_hash: String,
    pub next_deadline_ms: Option<i64>,
    pub last_error: Option<String>,
    pub current_kind: Option<String>,
    pub attempt: i32,
    pub deadline_at_ms: Option<i64>,
    pub park_reason: Option<String>,
    /// When a waiting step it is at has waited half its wait.
    pub wait_half_at_ms: Option<i64>,
    /// `<event>:<key>` of the first waiting step with a key it is at.
    pub wait_key: Option<String>,
    /// Business tags (name, value) to store: a new saga's, written with its
    /// row, or a move to another version's, written in place of the old.
    /// `None` (every other append) leaves the stored ones as they are.
    pub tags: Option<Vec<(String, String)>>,
}

/// A command for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub subject: String,
    pub msg_id: String,
    pub body: String,
}

/// A command queued outside an append (a takeover's re-send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub saga_id: String,
    pub partition: i32,
    pub command: OutboxRow,
}

/// New events for one saga, written atomically.
#[derive(Debug, Clone)]
pub struct Append<'a> {
    pub saga_id: &'a str,
    /// The seq of the last event the caller saw (0 for a new saga).
    pub expected_seq: i64,
    pub events: &'a [SagaEvent],
    pub projection: &'a Projection,
    pub outbox: &'a [OutboxRow],
    pub now_ms: i64,
    /// The operator's repair that caused these events, recorded with them so
    /// that a repeat of the same request is answered, not applied twice.
    pub repair: Option<&'a RepairRecord>,
    /// Proof that the writer owns the saga's partition, checked in the same
    /// transaction (`None`: a start, an operator's repair, or no cluster).
    pub fence: Option<&'a Fence>,
}

/// A repair as recorded in the `repairs` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairRecord {
    pub request_id: String,
    pub action: String,
    pub requested_by: String,
    /// The JSON answer given the first time.
    pub response: String,
}

/// A saga as loaded: its projection row and its full history.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub row: sagas::Model,
    pub events: Vec<SagaEvent>,
}

/// SQLite has one writer at a time. A connection that finds the write lock
/// taken waits in SQLite's busy handler, which sleeps and tries again (1 ms,
/// then 2, 5, 10, … up to 100 ms between tries): under load the store's
/// writer slept there behind the relay's deletes for milliseconds per batch.
/// This process's writes on its own connections therefore take turns here
/// (first come, first served), and one waiting goes on the moment the write
/// before it is done. Other processes on the same file still meet the busy
/// handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteTurn(Arc<tokio::sync::Mutex<()>>);

impl WriteTurn {
    /// Wait for the turn, if there is one to wait for (SQLite); it passes on
    /// when the guard is dropped.
    pub(crate) async fn take(turn: Option<&Self>) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Some(Arc::clone(&turn?.0).lock_owned().await)
    }
}

/// PostgreSQL: the writer's batches read this instance's lease rows `FOR
/// SHARE` and hold them until they commit. With two writers one batch's lock
/// can begin before the other's ends, so an update of those rows (renewal,
/// release) could wait for a gap that never comes. The batches share this
/// lock and those updates take it alone; it is fair (first come, first
/// served), so an update waits for the batches in flight only.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseTurn(Arc<tokio::sync::RwLock<()>>);

impl LeaseTurn {
    /// A batch's share, if there is a turn (PostgreSQL).
    pub(crate) async fn share(
        turn: Option<&Self>,
    ) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        Some(Arc::clone(&turn?.0).read_owned().await)
    }

    /// The turn alone, for an update of this instance's lease rows.
    pub(crate) async fn alone(
        turn: Option<&Self>,
    ) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        Some(Arc::clone(&turn?.0).write_owned().await)
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// The connection of this process's writes that take their turn
    /// ([`Store::write_turn`]): on a SQLite file a pool of its own with two
    /// connections, one of which the writer keeps from batch to batch (see
    /// `store::batch`), so that its page cache stays warm (SQLite drops a
    /// connection's whole cache when another connection has committed since
    /// its last transaction, and with the writer's batches spread over a
    /// pool every batch began cold); the other serves the rest of the
    /// process's writes in turn (the relay's deletes, re-sends after a
    /// takeover, leases and heartbeats, batches with appends written one by
    /// one, and appends written again alone); on PostgreSQL a pool of its
    /// own with a few connections that cache many prepared statements (a batch's
    /// statements differ in text with its size: spread over `db`'s pool
    /// with the default cache they were parsed again most of the time);
    /// in memory the same pool as `db`.
    writes: DatabaseConnection,
    /// The task that commits appends, many sagas per transaction.
    writer: writer::Writer,
    /// The commands the writer committed, for the relay.
    handoff: Arc<Handoff>,
    /// On SQLite: whose turn it is to write, among this process's connections.
    turn: Option<WriteTurn>,
    /// On PostgreSQL: the writer's batches and this instance's lease updates.
    lease_turn: Option<LeaseTurn>,
    /// The engine's clock: every part that holds the store reads time here.
    clock: SharedClock,
    /// Statements run on this store's connections (an atomic add each).
    statements: Arc<std::sync::atomic::AtomicU64>,
    /// Transactions the writer committed (an atomic add each).
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Injected faults (the simulator's), if any.
    #[cfg(feature = "faults")]
    faults: Option<Arc<dyn faults::StoreFaults>>,
}

impl Store {
    /// The same store, reading time from `clock` (tests: paused tokio time).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The same store, failing operations when `faults` says so.
    #[cfg(feature = "faults")]
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn faults::StoreFaults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// An injected fault for `op` at this stage, if one is due (never
    /// without the `faults` feature).
    #[allow(clippy::unused_self, clippy::unnecessary_wraps)]
    fn fault(&self, op: &'static str, after_commit: bool) -> Result<(), StoreError> {
        #[cfg(feature = "faults")]
        if let Some(f) = &self.faults {
            let stage =
                if after_commit { faults::Stage::AfterCommit } else { faults::Stage::Before };
            if f.fail(op, stage) {
                return Err(faults::injected(op, stage));
            }
        }
        let _ = (op, after_commit);
        Ok(())
    }

    /// The engine's clock.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Open the database at `url` and run migrations.
    ///
    /// `sqlite://path` (created if missing, WAL) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let is_sqlite = url.starts_with("sqlite:");
        let mut url_full = url.to_owned();
        if is_sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            url_full.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        if !is_sqlite && !url.contains("options=") {
            // A session left idle inside a transaction (a frozen or partitioned
            // process) would hold its row locks, lease rows included, forever:
            // the server ends such sessions, so a takeover cannot be blocked.
            url_full.push_str(if url.contains('?') { "&" } else { "?" });
            url_full.push_str(&format!(
                "options=-c%20idle_in_transaction_session_timeout%3D{IDLE_IN_TRANSACTION_MS}"
            ));
        }
        // See `Store::writes`: the connections of the writes made in this
        // process's turn, in a pool of their own; none in memory, where
        // another pool would open another database.
        let own_writes = if !is_sqlite {
            Some(4)
        } else if url.contains(":memory:") || url.contains("mode=memory") {
            None
        } else {
            // One kept by the writer from batch to batch, one for the rest.
            Some(2)
        };
        let mut options = ConnectOptions::new(url_full);
        options
            .max_connections(if is_sqlite { 4 } else { 16 })
            .min_connections(1)
            .connect_timeout(Duration::from_secs(3))
            .acquire_timeout(Duration::from_secs(5))
            // A SQLite connection is a file handle in this process: pinging it
            // before each use would only add a round trip to every query.
            .test_before_acquire(!is_sqlite)
            .sqlx_logging(false);
        let hint = if is_sqlite {
            "Check that the directory exists and is writable."
        } else {
            "Is PostgreSQL running and the URL right? Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`."
        };
        let failed = |source| StoreError::Connect { url: redact(url), source, hint };
        let db = Database::connect(options.clone()).await.map_err(failed)?;
        let Some(writes_max) = own_writes else { return Self::open(db).await };
        if is_sqlite {
            // The file is in WAL mode before the write connection opens (it
            // stays so: the mode is the file's).
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        }
        let writes = Database::connect(
            options
                .max_connections(writes_max)
                // Not checked before each use (on PostgreSQL a round trip,
                // which the writer's batches waited for: 0.2 ms of 3 ms at
                // concurrency 64): a connection the server dropped (a
                // restart) fails its next use instead, and is closed as it
                // comes back; a failed batch is written again append by
                // append, and an append that failed is tried again by its
                // caller (a reply redelivered, a start retried).
                .test_before_acquire(false)
                .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(1_000))
                .to_owned(),
        )
        .await
        .map_err(failed)?;
        Self::open_with(db, writes, is_sqlite).await
    }

    /// Use an open connection (a pool built elsewhere: the simulator's, whose
    /// connections fail statements when its seed says so): count its
    /// statements, start the writer and migrate.
    ///
    /// # Errors
    /// An unsupported database or a failed migration.
    pub async fn open(db: DatabaseConnection) -> Result<Self, StoreError> {
        let writes = db.clone();
        Self::open_with(db, writes, false).await
    }

    /// [`Store::open`], with `writes` for the writes that take their turn;
    /// `hold_writes` when those are a SQLite file's connections of their
    /// own, one of which the writer keeps (see `store::batch`).
    async fn open_with(
        mut db: DatabaseConnection,
        mut writes: DatabaseConnection,
        hold_writes: bool,
    ) -> Result<Self, StoreError> {
        let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for conn in [&mut db, &mut writes] {
            let counted = Arc::clone(&statements);
            conn.set_metric_callback(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handoff = Arc::new(Handoff::default());
        let turn = (db.get_database_backend() == DbBackend::Sqlite).then(WriteTurn::default);
        let lease_turn =
            (db.get_database_backend() == DbBackend::Postgres).then(LeaseTurn::default);
        let writer = writer::Writer::spawn(
            writes.clone(),
            hold_writes.then(|| Arc::clone(&statements)),
            Arc::clone(&commits),
            Arc::clone(&handoff),
            turn.clone(),
            lease_turn.clone(),
        );
        let store = Self {
            db,
            writes,
            writer,
            handoff,
            turn,
            lease_turn,
            clock: crate::clock::system(),
            statements,
            commits,
            #[cfg(feature = "faults")]
            faults: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// How many statements this store has run so far (what a benchmark
    /// divides by the sagas it ran). Transaction control (`BEGIN`,
    /// `COMMIT`) is not counted.
    #[must_use]
    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many transactions this store's writer has committed so far: its
    /// batches of appends, and appends written alone after a batch failed
    /// (what a benchmark divides by the sagas it ran; the store's other
    /// writes, such as leases and the relay's deletes, are not counted).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait for this process's turn to write (SQLite; on PostgreSQL at once):
    /// see [`WriteTurn`]. Held until the returned guard is dropped.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        WriteTurn::take(self.turn.as_ref()).await
    }

    /// The turn alone for an update of this instance's lease rows
    /// (PostgreSQL; see [`LeaseTurn`]).
    pub(crate) async fn lease_turn_alone(&self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        LeaseTurn::alone(self.lease_turn.as_ref()).await
    }

    /// The connection for writes made in this process's turn (see `writes`).
    pub(crate) fn writes(&self) -> &DatabaseConnection {
        &self.writes
    }

    /// The underlying connection (for queries elsewhere in the orchestrator).
    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The commands committed through this store, for the relay to publish.
    #[must_use]
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    #[must_use]
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend() {
            DbBackend::Sqlite => {
                self.db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
                migration::Migrator::up(&self.db, None).await.map_err(StoreError::Migrate)
            }
            DbBackend::Postgres => {
                // One connection holds the session lock for the whole run.
                let conn = self.db.begin().await?;
                conn.execute(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock($1)",
                    [MIGRATION_LOCK_KEY.into()],
                ))
                .await?;
                migration::Migrator::up(&conn, None).await.map_err(StoreError::Migrate)?;
                conn.commit().await?;
                Ok(())
            }
            DbBackend::MySql => Err(StoreError::Migrate(DbErr::Custom(
                "MySQL is not supported; use SQLite or PostgreSQL".into(),
            ))),
        }
    }

    /// Append events, update the projection and enqueue commands, atomically.
    ///
    /// The append goes through the store's writer task, which commits the
    /// appends of many sagas together ([`writer`]); the result is this
    /// append's own, as if it had been written alone.
    pub async fn append(&self, a: Append<'_>) -> Result<(), StoreError> {
        if a.events.is_empty() {
            return Ok(());
        }
        self.fault("append", false)?;
        let events = a
            .events
            .iter()
            .map(|e| e.encode().map_err(|err| DbErr::Custom(err.to_string())))
            .collect::<Result<Vec<_>, DbErr>>()?;
        self.writer
            .append(writer::OwnedAppend {
                saga_id: a.saga_id.to_owned(),
                expected_seq: a.expected_seq,
                events,
                projection: a.projection.clone(),
                outbox: a.outbox.to_vec(),
                now_ms: a.now_ms,
                repair: a.repair.cloned(),
                fence: a.fence.cloned(),
            })
            .await?;
        self.fault("append", true)
    }

    /// Load a saga's projection row and history, oldest event first.
    pub async fn load(&self, saga_id: &str) -> Result<Option<Loaded>, StoreError> {
        self.fault("load", false)?;
        let Some(row) = sagas::Entity::find_by_id(saga_id).one(&self.db).await? else {
            return Ok(None);
        };
        let stored = saga_events::Entity::find()
            .filter(saga_events::Column::SagaId.eq(saga_id))
            .order_by_asc(saga_events::Column::Seq)
            .all(&self.db)
            .await?;
        let mut events = Vec::with_capacity(stored.len());
        for (i, e) in stored.iter().enumerate() {
            // Assert what must hold: seq runs 1..n without gaps.
            if e.seq != i as i64 + 1 {
                return Err(StoreError::Corrupt {
                    saga_id: saga_id.to_owned(),
                    seq: e.seq,
                    message: format!("expected seq {}", i + 1),
                });
            }
            let event = SagaEvent::decode(&e.event).map_err(|err| StoreError::Corrupt {
                saga_id: saga_id.to_owned(),
                seq: e.seq,
                message: err.to_string(),
            })?;
            events.push(event);
        }
        Ok(Some(Loaded { row, events }))
    }

    /// The saga started with this type and idempotency key, if any.
    pub async fn find_by_key(
        &self,
        saga_type: &str,
        idempotency_key: &str,
    ) -> Result<Option<sagas::Model>, StoreError> {
        Ok(sagas::Entity::find()
            .filter(sagas::Column::SagaType.eq(saga_type))
            .filter(sagas::Column::IdempotencyKey.eq(idempotency_key))
            .one(&self.db)
            .await?)
    }

    /// Ids of sagas whose next deadline has passed, earliest first.
    ///
    /// Only sagas of `partitions` when given (the ones this instance owns).
    pub async fn due(
        &self,
        now_ms: i64,
        limit: u64,
        partitions: Option<&[i32]>,
    ) -> Result<Vec<String>, StoreError> {
        self.fault("due", false)?;
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::SagaId)
            .filter(sagas::Column::NextDeadlineMs.lte(now_ms))
            .apply_if(partitions, |q, ps| {
                q.filter(sagas::Column::Partition.is_in(ps.iter().copied()))
            })
            .order_by_asc(sagas::Column::NextDeadlineMs)
            .limit(limit)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// The earliest pending deadline, if any.
    pub async fn earliest_deadline(
        &self,
        partitions: Option<&[i32]>,
    ) -> Result<Option<i64>, StoreError> {
        // The first in deadline order rather than `MIN(…)`: with a partition
        // filter SQLite would compute the minimum over every row it matches;
        // in order it walks `sagas_next_deadline` and stops at the first.
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::NextDeadlineMs)
            .filter(sagas::Column::NextDeadlineMs.is_not_null())
            .apply_if(partitions, |q, ps| {
                q.filter(sagas::Column::Partition.is_in(ps.iter().copied()))
            })
            .order_by_asc(sagas::Column::NextDeadlineMs)
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// The oldest commands waiting to be published.
    ///
    /// Only rows of `partitions` when given (the ones this instance owns), and
    /// only rows created before `created_before_ms` when given.
    pub async fn outbox_batch(
        &self,
        limit: u64,
        partitions: Option<&[i32]>,
        created_before_ms: Option<i64>,
    ) -> Result<Vec<outbox::Model>, StoreError> {
        self.outbox_after(0, limit, partitions, created_before_ms).await
    }

    /// As [`Store::outbox_batch`], only rows with an id above `after_id`
    /// (a scan that walks the table a batch at a time).
    pub async fn outbox_after(
        &self,
        after_id: i64,
        limit: u64,
        partitions: Option<&[i32]>,
        created_before_ms: Option<i64>,
    ) -> Result<Vec<outbox::Model>, StoreError> {
        self.fault("outbox", false)?;
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Id.gt(after_id))
            .apply_if(partitions, |q, ps| {
                q.filter(outbox::Column::Partition.is_in(ps.iter().copied()))
            })
            .apply_if(created_before_ms, |q, ms| q.filter(outbox::Column::CreatedAtMs.lt(ms)))
            .order_by_asc(outbox::Column::Id)
            .limit(limit.min(OUTBOX_BATCH_MAX))
            .all(&self.db)
            .await?)
    }

    /// Queue commands to publish again, outside any append (a takeover's
    /// re-send of what sagas still wait on), in one insert; the rows go to
    /// the relay through the hand-off.
    pub async fn enqueue(&self, queued: &[Queued], now_ms: i64) -> Result<(), StoreError> {
        for chunk in queued.chunks(writer::INSERT_ROWS_MAX) {
            let rows = chunk
                .iter()
                .map(|q| outbox::ActiveModel {
                    saga_id: Set(q.saga_id.clone()),
                    subject: Set(q.command.subject.clone()),
                    msg_id: Set(q.command.msg_id.clone()),
                    body: Set(q.command.body.clone()),
                    created_at_ms: Set(now_ms),
                    partition: Set(q.partition),
                    ..Default::default()
                })
                .collect();
            let stored = {
                let _turn = self.write_turn().await;
                writer::insert_commands(self.writes(), rows).await?
            };
            self.handoff.push(stored);
        }
        Ok(())
    }

    /// Ids of the sagas of `partition` that have not ended (a takeover's work list).
    pub async fn open_in_partition(
        &self,
        partition: i32,
        limit: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::SagaId)
            .filter(sagas::Column::Partition.eq(partition))
            .filter(sagas::Column::Status.is_in(["running", "compensating"]))
            .order_by_asc(sagas::Column::SagaId)
            .limit(limit)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// Forget commands JetStream has acknowledged.
    pub async fn outbox_delete(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        outbox::Entity::delete_many()
            .filter(outbox::Column::Id.is_in(ids.iter().copied()))
            .exec(self.writes())
            .await?;
        Ok(())
    }

    /// Record a definition version (idempotent by hash).
    pub async fn save_definition(
        &self,
        hash: &str,
        name: &str,
        version: u32,
        body: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let row = definitions::ActiveModel {
            hash: Set(hash.to_owned()),
            name: Set(name.to_owned()),
            version: Set(i32::try_from(version).unwrap_or(i32::MAX)),
            body: Set(body.to_owned()),
            created_at_ms: Set(now_ms),
        };
        definitions::Entity::insert(row)
            .on_conflict(OnConflict::column(definitions::Column::Hash).do_nothing().to_owned())
            .do_nothing()
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Every stored definition version.
    pub async fn definitions(&self) -> Result<Vec<definitions::Model>, StoreError> {
        Ok(definitions::Entity::find().all(&self.db).await?)
    }

    /// Count of sagas per status (for tests, benchmarks and the operator).
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sagas::Entity::find()
            .select_only()
            .column(sagas::Column::Status)
            .column_as(sagas::Column::SagaId.count(), "n")
            .group_by(sagas::Column::Status)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?)
    }

    /// How many commands wait in the outbox, and when the oldest was written
    /// (Unix ms; none when the outbox is empty). For the metrics sampler.
    pub async fn outbox_stats(&self) -> Result<(u64, Option<i64>), StoreError> {
        let row = outbox::Entity::find()
            .select_only()
            .column_as(outbox::Column::Id.count(), "n")
            .column_as(outbox::Column::CreatedAtMs.min(), "oldest")
            .into_tuple::<(i64, Option<i64>)>()
            .one(&self.db)
            .await?;
        Ok(row.map_or((0, None), |(n, oldest)| (u64::try_from(n).unwrap_or(0), oldest)))
    }
}

/// The URL without its password, for messages.
#[must_use]
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
