//! Transactions on the participant's database.
//!
//! SQLite has one writer at a time: two transactions that read and then write
//! would fail each other with `SQLITE_BUSY`. On SQLite the SDK therefore runs
//! its transactions one at a time (a gate of one permit); PostgreSQL runs them
//! concurrently and relies on the inbox primary key.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait,
};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The participant's database and, on SQLite, the gate its transactions pass.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub conn: DatabaseConnection,
    gate: Option<Arc<Semaphore>>,
}

impl Db {
    pub fn new(conn: DatabaseConnection) -> Self {
        let gate =
            (conn.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Semaphore::new(1)));
        Self { conn, gate }
    }

    pub async fn begin(&self) -> Result<Tx, DbErr> {
        let permit = match &self.gate {
            Some(gate) => Some(
                Arc::clone(gate)
                    .acquire_owned()
                    .await
                    .map_err(|_| DbErr::Custom("the SQLite transaction gate is closed".into()))?,
            ),
            None => None,
        };
        let tx = self.conn.begin().await?;
        Ok(Tx { tx, _permit: permit })
    }
}

/// An open transaction; rolled back when dropped without `commit`.
#[derive(Debug)]
pub(crate) struct Tx {
    // Dropped before the permit: the rollback starts before the gate opens.
    pub tx: DatabaseTransaction,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Tx {
    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        self.tx.rollback().await
    }
}
