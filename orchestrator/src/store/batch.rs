//! The transaction a batch of the writer is written in.
//!
//! Through sea-orm, every batch takes a connection from the pool and gives it
//! back, and the pool checks a connection given back with a call to it
//! before another user may take it; `BEGIN` and `COMMIT` are calls of their
//! own. On SQLite each call is a hand-off to the connection's thread and back,
//! and with the writes' one connection the next batch waited for the check of
//! the last one's (its `BEGIN` took a quarter of a millisecond under load).
//!
//! On a SQLite file, whose writes have connections of their own
//! ([`Store::writes`](super::Store::writes)), the writer instead keeps one of
//! them from batch to batch ([`Held`]), and a batch sends `BEGIN` with its
//! first statements and `COMMIT` with its last, through sqlx directly: two
//! calls per batch where there were four and the pool's check.
//!
//! A batch refused as a whole (a fence that does not hold) sends `ROLLBACK`
//! and keeps the connection. One that failed (a statement's error, a panic,
//! the task stopped) closes it rather than keep it or give it back: SQLite
//! rolls back what a closing connection had not committed, so nothing
//! half-written can reach a later batch or another user of the pool; after
//! an error the close is awaited, so that the write lock is free for the
//! appends written again one by one. The next batch takes a connection from
//! the pool again.
//!
//! The kept connection's page cache stays warm from batch to batch, except
//! after a commit on the pool's other connection (the relay's deletes, at
//! most every 50 ms under load; leases, heartbeats, re-sends and the appends
//! written one by one), after which SQLite reads its pages again.

use sea_orm::sqlx::{self, Sqlite, SqlitePool, pool::PoolConnection};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
    TransactionTrait,
};
use sea_query_binder::SqlxValues;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The connection a writer task writes its batches through.
pub(super) struct WriterConn {
    pub db: DatabaseConnection,
    /// On a SQLite file: the connection kept from batch to batch.
    held: Option<Held>,
}

/// A connection kept by a writer task, `None` until taken from its pool.
pub(super) struct Held {
    pool: SqlitePool,
    conn: Option<PoolConnection<Sqlite>>,
    /// The store's count of statements (sea-orm's calls count themselves).
    counted: Arc<AtomicU64>,
}

impl WriterConn {
    /// `hold` (with the store's statement count) on a SQLite file whose
    /// writes have connections of their own: at least two, one kept by the
    /// writer and one for the process's other writes.
    pub fn new(db: DatabaseConnection, hold: Option<Arc<AtomicU64>>) -> Self {
        let held = hold.map(|counted| Held {
            pool: db.get_sqlite_connection_pool().clone(),
            conn: None,
            counted,
        });
        Self { db, held }
    }

    /// Begin a batch's transaction: on the kept connection when there is one
    /// and `hold` (`BEGIN` is sent with the first statements), else through
    /// sea-orm.
    pub async fn begin(&mut self, hold: bool) -> Result<BatchTxn<'_>, DbErr> {
        match &mut self.held {
            Some(held) if hold => {
                if held.conn.is_none() {
                    let conn = held
                        .pool
                        .acquire()
                        .await
                        .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e)))?;
                    held.conn = Some(conn);
                }
                Ok(BatchTxn::Held(HeldTxn { held, begun: false, finished: false }))
            }
            _ => Ok(BatchTxn::Orm(self.db.begin().await?)),
        }
    }
}

/// An open transaction of the writer.
pub(super) enum BatchTxn<'a> {
    /// sea-orm's transaction.
    Orm(DatabaseTransaction),
    /// On the writer's kept connection.
    Held(HeldTxn<'a>),
}

pub(super) struct HeldTxn<'a> {
    held: &'a mut Held,
    /// `BEGIN` sent (or on its way).
    begun: bool,
    /// Committed or rolled back: the connection is fit for the next batch.
    finished: bool,
}

impl Drop for HeldTxn<'_> {
    fn drop(&mut self) {
        if self.begun
            && !self.finished
            && let Some(mut conn) = self.held.conn.take()
        {
            // Rolled back by SQLite as it closes.
            conn.close_on_drop();
        }
    }
}

impl BatchTxn<'_> {
    /// sea-orm's transaction, for the rare paths that run statements of
    /// their own (`None` on the kept connection).
    pub fn orm(&self) -> Option<&DatabaseTransaction> {
        match self {
            Self::Orm(txn) => Some(txn),
            Self::Held(_) => None,
        }
    }

    /// Run `statements` in the transaction, in order, and return their rows
    /// (see `writer::run_together`).
    pub async fn run(&mut self, statements: Vec<Statement>) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Orm(txn) => super::writer::run_together(txn, statements).await,
            Self::Held(txn) => txn.call(statements, false).await,
        }
    }

    /// Roll back what was written, keeping the kept connection when it
    /// takes the `ROLLBACK`.
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Self::Orm(txn) => txn.rollback().await,
            Self::Held(mut txn) => {
                txn.run_sql("ROLLBACK".to_owned(), Vec::new()).await?;
                txn.finished = true;
                Ok(())
            }
        }
    }

    /// Run `statements` and commit: one call on the kept connection.
    pub async fn commit_with(self, statements: Vec<Statement>) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Orm(txn) => {
                let rows = super::writer::run_together(&txn, statements).await?;
                txn.commit().await?;
                Ok(rows)
            }
            Self::Held(mut txn) => {
                let rows = txn.call(statements, true).await?;
                txn.finished = true;
                Ok(rows)
            }
        }
    }
}

impl HeldTxn<'_> {
    /// One call: `BEGIN` first if not sent yet, `statements`, and `COMMIT`
    /// last when `commit` (see `writer::joined`).
    async fn call(
        &mut self,
        statements: Vec<Statement>,
        commit: bool,
    ) -> Result<Vec<QueryResult>, DbErr> {
        if !statements.is_empty() {
            self.held.counted.fetch_add(1, Ordering::Relaxed);
        }
        let control = |sql: &str| Statement::from_string(DbBackend::Sqlite, sql);
        let (sql, values) = super::writer::joined(
            (!self.begun)
                .then(|| control("BEGIN"))
                .into_iter()
                .chain(statements)
                .chain(commit.then(|| control("COMMIT"))),
        );
        self.run_sql(sql, values).await
    }

    /// Send `sql` on the kept connection. A failure closes the connection
    /// (waiting for it, so that SQLite's write lock is free again when this
    /// returns): SQLite rolls back what it had not committed.
    async fn run_sql(
        &mut self,
        sql: String,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let Some(conn) = self.held.conn.as_mut() else {
            return Err(DbErr::Custom("the writer's connection is gone".into()));
        };
        // From here on the transaction may be open: if this future is
        // dropped, so is the connection (see `Drop`).
        self.begun = true;
        match sqlx::query_with(&sql, SqlxValues(sea_orm::sea_query::Values(values)))
            .fetch_all(&mut **conn)
            .await
        {
            Ok(rows) => Ok(rows.into_iter().map(QueryResult::from).collect()),
            Err(e) => {
                if let Some(conn) = self.held.conn.take() {
                    let _ = conn.close().await;
                }
                Err(DbErr::Query(RuntimeErr::SqlxError(e)))
            }
        }
    }
}
