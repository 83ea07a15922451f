//! Transactions on the participant's database.
//!
//! SQLite has one writer at a time: two transactions that read and then write
//! would fail each other with `SQLITE_BUSY`. On SQLite the SDK therefore runs
//! its transactions one at a time (a gate of one permit); PostgreSQL runs them
//! concurrently and relies on the inbox primary key.
//!
//! **Group commit** (SQLite, [`crate::Config::commit_group_max`] above 1): as
//! the commands pass the gate one at a time anyway, each runs in a savepoint
//! of one shared transaction instead of a transaction of its own, and that
//! transaction is committed (one fsync) when nobody is waiting at the gate,
//! when it holds `commit_group_max` commands, or when it is
//! [`GROUP_AGE_MAX`] old. A command that finds no group open and nobody
//! waiting behind it runs in a transaction of its own (no savepoint). A command's [`Tx::commit`] returns only once the
//! shared transaction is committed, so its reply still follows its commit; a
//! command that rolls back undoes only its savepoint. If the shared commit
//! fails, every command in it gets the error and is handed back to JetStream.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Longest a shared transaction stays open for more commands to join it.
pub(crate) const GROUP_AGE_MAX: Duration = Duration::from_millis(5);

/// The participant's database and, on SQLite, the gate its transactions pass.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub conn: DatabaseConnection,
    gate: Option<Arc<Semaphore>>,
    /// On SQLite with group commit on: the shared transaction.
    group: Option<Arc<Group>>,
}

impl Db {
    /// `commit_group_max` above 1 turns group commit on (SQLite only).
    pub fn new(conn: DatabaseConnection, commit_group_max: usize) -> Self {
        let sqlite = conn.get_database_backend() == DbBackend::Sqlite;
        let gate = sqlite.then(|| Arc::new(Semaphore::new(1)));
        let group = (sqlite && commit_group_max > 1).then(|| {
            Arc::new(Group {
                members_max: commit_group_max,
                waiting: AtomicUsize::new(0),
                state: Mutex::default(),
            })
        });
        Self { conn, gate, group }
    }

    pub async fn begin(&self) -> Result<Tx, DbErr> {
        let permit =
            match &self.gate {
                Some(gate) => {
                    let _waiting = self.group.as_deref().map(Waiting::new);
                    Some(Arc::clone(gate).acquire_owned().await.map_err(|_| {
                        DbErr::Custom("the SQLite transaction gate is closed".into())
                    })?)
                }
                None => None,
            };
        if let (Some(group), Some(gate)) = (&self.group, &self.gate) {
            let shared = match group.take_txn() {
                Some(txn) => txn,
                // Alone: no group open and nobody at the gate to join one. A
                // transaction of its own spares a savepoint and its release.
                None if group.waiting.load(Ordering::SeqCst) == 0 => {
                    let tx = self.conn.begin().await?;
                    return Ok(Tx { tx, _permit: permit, guard: None });
                }
                None => match self.conn.begin().await {
                    Ok(txn) => txn,
                    Err(e) => {
                        group.flush().await;
                        return Err(e);
                    }
                },
            };
            let savepoint = shared.begin().await;
            group.put_txn(shared);
            let tx = match savepoint {
                Ok(tx) => tx,
                Err(e) => {
                    group.flush().await;
                    return Err(e);
                }
            };
            let guard =
                GroupGuard { group: Arc::clone(group), gate: Arc::clone(gate), armed: true };
            return Ok(Tx { tx, _permit: permit, guard: Some(guard) });
        }
        let tx = self.conn.begin().await?;
        Ok(Tx { tx, _permit: permit, guard: None })
    }
}

/// An open transaction (or, with group commit, a savepoint of the shared
/// one); rolled back when dropped without `commit`.
#[derive(Debug)]
pub(crate) struct Tx {
    // Dropped before the permit: the rollback starts before the gate opens.
    pub tx: DatabaseTransaction,
    _permit: Option<OwnedSemaphorePermit>,
    // Dropped last: a savepoint dropped without commit or rollback (a
    // cancelled handler) still gets its group committed.
    guard: Option<GroupGuard>,
}

impl Tx {
    /// Commit; with group commit, return once the shared transaction committed.
    pub async fn commit(self) -> Result<(), DbErr> {
        let Tx { tx, _permit: permit, guard } = self;
        let Some(mut guard) = guard else { return tx.commit().await };
        guard.armed = false;
        let group = Arc::clone(&guard.group);
        if let Err(e) = tx.commit().await {
            // The shared transaction is suspect: end it now.
            group.flush().await;
            return Err(e);
        }
        let committed = group.join();
        if group.should_flush() {
            group.flush().await;
        }
        drop(permit);
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DbErr::Custom(message)),
            Err(_) => Err(DbErr::Custom("the shared transaction was dropped".into())),
        }
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        let Tx { tx, _permit: permit, guard } = self;
        let Some(mut guard) = guard else { return tx.rollback().await };
        guard.armed = false;
        let result = tx.rollback().await;
        if result.is_err() || guard.group.should_flush() {
            guard.group.flush().await;
        }
        drop(permit);
        result
    }
}

/// The shared transaction of group commit and the commands waiting for it.
#[derive(Debug)]
struct Group {
    members_max: usize,
    /// Tasks waiting at the gate: while any wait, the transaction stays open for them.
    waiting: AtomicUsize,
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    txn: Option<DatabaseTransaction>,
    opened_at: Option<Instant>,
    /// Commands whose savepoint was released, told the shared commit's outcome.
    members: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Group {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_txn(&self) -> Option<DatabaseTransaction> {
        self.lock().txn.take()
    }

    fn put_txn(&self, txn: DatabaseTransaction) {
        let mut state = self.lock();
        state.opened_at.get_or_insert_with(Instant::now);
        state.txn = Some(txn);
    }

    /// Wait for the shared commit.
    fn join(&self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.lock().members.push(tx);
        rx
    }

    fn should_flush(&self) -> bool {
        let state = self.lock();
        self.waiting.load(Ordering::SeqCst) == 0
            || state.members.len() >= self.members_max
            || state.opened_at.is_some_and(|t| t.elapsed() >= GROUP_AGE_MAX)
    }

    /// Commit the shared transaction and tell its members. Only called by
    /// the holder of the gate.
    async fn flush(&self) {
        let (txn, members) = {
            let mut state = self.lock();
            state.opened_at = None;
            (state.txn.take(), std::mem::take(&mut state.members))
        };
        let result = match txn {
            Some(txn) => txn.commit().await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        for member in members {
            let _ = member.send(result.clone());
        }
    }
}

/// Counts a task waiting at the gate for as long as it waits.
struct Waiting<'a>(&'a Group);

impl<'a> Waiting<'a> {
    fn new(group: &'a Group) -> Self {
        group.waiting.fetch_add(1, Ordering::SeqCst);
        Self(group)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Commits the group of a savepoint that was dropped without commit or
/// rollback, so the commands that joined it before are not left waiting.
#[derive(Debug)]
struct GroupGuard {
    group: Arc<Group>,
    gate: Arc<Semaphore>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (group, gate) = (Arc::clone(&self.group), Arc::clone(&self.gate));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(_permit) = gate.acquire_owned().await {
                    group.flush().await;
                }
            });
        }
    }
}
