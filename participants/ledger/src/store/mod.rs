//! The ledger's database: connection, schema, and transactions.
//!
//! SQLite (the default, one file in WAL mode) or PostgreSQL (a `postgres://`
//! URL). Three tables: `ledger_events` (the record), and the projections
//! `accounts` and `transfers`, always written in the same transaction as the
//! events they follow from. How a transaction keeps one account consistent:
//!
//! - **PostgreSQL** runs writers concurrently; each operation locks the rows
//!   it reads (`SELECT ... FOR UPDATE`, accounts in id order) so two holds on
//!   one account run one after the other.
//! - **SQLite** has one writer. Every write operation takes the write lock
//!   with its first statement ([`take_write_lock`]), so it never reads a
//!   snapshot another writer then changes, and within one process the
//!   [`Store`] runs its write transactions one at a time (a gate of one
//!   permit), as the SDK does.

pub mod entities;
pub mod migration;

use migration::LedgerSchema;
use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, IsolationLevel, Statement, TransactionTrait,
};
use skald_participant::service::{self, redact};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections in the pool. One on SQLite: every write passes one gate
/// anyway, and SQLite drops a connection's page cache whenever another
/// connection has committed since its last use, so writes spread over
/// several connections each began cold (`skald bench-topup`: about +30%
/// with one). Reads outside the SDK's transaction wait for it to commit.
const SQLITE_CONNECTIONS_MAX: u32 = 1;
const POSTGRES_CONNECTIONS_MAX: u32 = 16;
/// How long to wait for the database to answer a connect, and for a pooled
/// connection when all are busy.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {url}\n  hint: {hint}")]
    Connect {
        url: String,
        #[source]
        source: DbErr,
        hint: &'static str,
    },
    #[error("cannot create or upgrade the ledger's tables")]
    Migrate(#[source] DbErr),
    #[error("this database is not supported; use SQLite (`sqlite://FILE?mode=rwc`) or PostgreSQL")]
    Unsupported,
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

/// The ledger's database.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// On SQLite: one write transaction at a time from this process.
    gate: Option<Arc<Semaphore>>,
}

impl Store {
    /// Open the database at `url` and bring its tables up to date.
    ///
    /// `sqlite://FILE` (created if missing unless the URL says another
    /// `mode=`; WAL) or `postgres://USER:PASSWORD@HOST/DB`.
    ///
    /// # Errors
    /// An unreachable database (the message names the URL without its
    /// password and says how to fix it), or a failed migration.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let is_sqlite = url.starts_with("sqlite:");
        let mut url_full = url.to_owned();
        if is_sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            // Create the file if it is missing, as the orchestrator does.
            url_full.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let mut options = ConnectOptions::new(url_full);
        options
            .max_connections(if is_sqlite {
                SQLITE_CONNECTIONS_MAX
            } else {
                POSTGRES_CONNECTIONS_MAX
            })
            .connect_timeout(CONNECT_TIMEOUT)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .sqlx_logging(false);
        let hint = if is_sqlite {
            "for SQLite use `sqlite://FILE?mode=rwc` in a writable directory (mode=rwc creates it)"
        } else {
            "start PostgreSQL (`docker compose up -d postgres`) and check --database-url / \
             DATABASE_URL (`postgres://USER:PASSWORD@HOST:5432/DB`)"
        };
        let db = Database::connect(options).await.map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
            hint,
        })?;
        Self::open(db).await
    }

    /// Use an open connection: switch SQLite to WAL and migrate.
    ///
    /// # Errors
    /// An unsupported database or a failed migration.
    pub async fn open(db: DatabaseConnection) -> Result<Self, StoreError> {
        let gate = match db.get_database_backend() {
            DbBackend::Sqlite => {
                service::use_wal(&db).await?;
                Some(Arc::new(Semaphore::new(1)))
            }
            DbBackend::Postgres => None,
            DbBackend::MySql => return Err(StoreError::Unsupported),
        };
        skald_participant::migrate::migrate::<LedgerSchema>(&db)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(Self { db, gate })
    }

    /// The connection, for the SDK and for reads.
    #[must_use]
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    #[must_use]
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// A write transaction (after the gate on SQLite).
    ///
    /// # Errors
    /// When the database cannot begin one.
    pub async fn begin(&self) -> Result<WriteTx, DbErr> {
        let permit = match &self.gate {
            Some(gate) => Some(
                Arc::clone(gate)
                    .acquire_owned()
                    .await
                    .map_err(|_| DbErr::Custom("the SQLite write gate is closed".into()))?,
            ),
            None => None,
        };
        let tx = self.db.begin().await?;
        Ok(WriteTx { tx, _permit: permit })
    }

    /// A read-only transaction that sees one consistent snapshot, however
    /// long it runs: `REPEATABLE READ` on PostgreSQL, a WAL read transaction
    /// on SQLite (which holds its snapshot from the first read on).
    ///
    /// # Errors
    /// When the database cannot begin one.
    pub async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        match self.backend() {
            DbBackend::Postgres => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await
            }
            _ => self.db.begin().await,
        }
    }
}

/// An open write transaction; rolled back when dropped without `commit`.
#[derive(Debug)]
pub struct WriteTx {
    // Dropped before the permit: the rollback starts before the gate opens.
    tx: DatabaseTransaction,
    _permit: Option<OwnedSemaphorePermit>,
}

impl WriteTx {
    #[must_use]
    pub fn tx(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// # Errors
    /// When the commit fails (nothing was written).
    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx.commit().await
    }
}

/// On SQLite, take the database's write lock now, as the transaction's first
/// statement, waiting for another writer if need be (its busy timeout). A
/// transaction that read first and wrote later could find its snapshot stale
/// and fail; this one cannot. Does nothing on PostgreSQL, which locks rows.
///
/// # Errors
/// When the lock is not free within the busy timeout.
pub async fn take_write_lock(tx: &impl ConnectionTrait) -> Result<(), DbErr> {
    if let Some(statement) = write_lock_statement(tx.get_database_backend()) {
        tx.execute(statement).await?;
    }
    Ok(())
}

/// The statement of [`take_write_lock`], to run first among others; `None`
/// on PostgreSQL.
#[must_use]
pub fn write_lock_statement(backend: DbBackend) -> Option<Statement> {
    // A write statement that matches no row still takes the write lock.
    (backend == DbBackend::Sqlite)
        .then(|| Statement::from_string(backend, "UPDATE accounts SET id = id WHERE 1 = 0"))
}
