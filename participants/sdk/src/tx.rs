//! Transactions on the participant's database.
//!
//! SQLite has one writer at a time: two transactions that read and then write
//! would fail each other with `SQLITE_BUSY`. On SQLite the SDK therefore runs
//! its transactions one at a time (a gate of one permit); PostgreSQL runs them
//! concurrently and relies on the inbox primary key.
//!
//! **Group commit** (SQLite, [`crate::Config::commit_group_max`] above 1): as
//! the commands pass the gate one at a time anyway, they share one
//! transaction, and that transaction is committed (one fsync) when nobody is
//! waiting at the gate, when it holds `commit_group_max` commands, or when it
//! is [`GROUP_AGE_MAX`] old. A command that finds no group open and nobody
//! waiting behind it runs in a transaction of its own. A command's
//! [`Tx::commit`] returns only once the shared transaction is committed, so
//! its reply still follows its commit. If the shared commit fails, every
//! command in it gets the error and is handed back to JetStream.
//!
//! Each command of a group runs inside the savepoint [`SAVEPOINT`], which
//! the shared transaction always has open at its top: a command that fails
//! rolls back to it (its writes go, the savepoint stays open for the next),
//! and a command that succeeds writes its inbox row, releases the savepoint
//! and opens it again in one statement. So a command costs the gate one call
//! to the database beside its handler's own, where a savepoint of its own
//! (open, insert, release) cost three: the gate is held for the calls, and on
//! a busy host every call waits to be scheduled on the database's thread.
//!
//! A command that writes nothing but its inbox row (its handler wrote
//! nothing, or its answer was decided without the handler) goes through
//! [`Db::commit_one`]: where it would have had a transaction of its own, the
//! one `INSERT` runs alone and commits by itself (one call, not three). So
//! does a handler's write apart from its command's transaction
//! (`HandlerCtx::commit_now`), which it makes before that transaction begins.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Longest a shared transaction stays open for more commands to join it.
pub(crate) const GROUP_AGE_MAX: Duration = Duration::from_millis(5);

/// The savepoint a command of a group runs in.
const SAVEPOINT: &str = "skald_command";
/// A command's writes kept: the savepoint released and opened again for the next.
const KEEP: &str = "RELEASE SAVEPOINT skald_command; SAVEPOINT skald_command";
/// A command's writes undone; the savepoint stays open.
const UNDO: &str = "ROLLBACK TO SAVEPOINT skald_command";

/// The participant's database and, on SQLite, the gate its transactions pass.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub conn: DatabaseConnection,
    gate: Option<Arc<Semaphore>>,
    /// On SQLite with group commit on: the shared transaction.
    group: Option<Arc<Group>>,
    /// Counts each commit (a group's shared one once).
    commits: Arc<AtomicU64>,
}

impl Db {
    /// `commit_group_max` above 1 turns group commit on (SQLite only);
    /// `commits` counts each commit.
    pub fn new(conn: DatabaseConnection, commit_group_max: usize, commits: Arc<AtomicU64>) -> Self {
        let sqlite = conn.get_database_backend() == DbBackend::Sqlite;
        let gate = sqlite.then(|| Arc::new(Semaphore::new(1)));
        let group = (sqlite && commit_group_max > 1).then(|| {
            Arc::new(Group {
                members_max: commit_group_max,
                waiting: AtomicUsize::new(0),
                state: Mutex::default(),
                commits: Arc::clone(&commits),
            })
        });
        Self { conn, gate, group, commits }
    }

    pub async fn begin(&self) -> Result<Tx, DbErr> {
        let permit = self.pass_gate().await?;
        self.begin_past_gate(permit).await
    }

    /// Write `last` (an inbox row for a command that wrote nothing else, or a
    /// handler's write of its own, `HandlerCtx::commit_now`) as
    /// [`Db::begin`] and [`Tx::commit`] would. Where that would be a
    /// transaction of its own (PostgreSQL; SQLite with no group open and
    /// nobody at the gate), the statement runs alone and commits by itself:
    /// one call to the database where `BEGIN`, the statement and `COMMIT` were
    /// three. Returns once it is committed.
    pub async fn commit_one(&self, last: Statement) -> Result<(), DbErr> {
        let permit = self.pass_gate().await?;
        if !self.alone() {
            return self.begin_past_gate(permit).await?.commit(last).await;
        }
        self.conn.execute(last).await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        drop(permit);
        Ok(())
    }

    /// On SQLite, wait for the gate; its permit.
    async fn pass_gate(&self) -> Result<Option<OwnedSemaphorePermit>, DbErr> {
        let Some(gate) = &self.gate else { return Ok(None) };
        let _waiting = self.group.as_deref().map(Waiting::new);
        let permit = Arc::clone(gate)
            .acquire_owned()
            .await
            .map_err(|_| DbErr::Custom("the SQLite transaction gate is closed".into()))?;
        Ok(Some(permit))
    }

    /// Whether the gate's holder would have a transaction of its own: no
    /// group commit, or no group open and nobody at the gate to join one.
    /// Only the gate's holder opens or takes a group, so this holds until it
    /// acts.
    fn alone(&self) -> bool {
        self.group.as_deref().is_none_or(|group| {
            group.lock().txn.is_none() && group.waiting.load(Ordering::SeqCst) == 0
        })
    }

    async fn begin_past_gate(&self, permit: Option<OwnedSemaphorePermit>) -> Result<Tx, DbErr> {
        let group = match &self.group {
            // A transaction of its own spares the savepoint.
            Some(group) if !self.alone() => group,
            _ => return Ok(Tx::own(self.conn.begin().await?, permit, &self.commits)),
        };
        let shared = match group.take_txn() {
            Some(txn) => txn,
            None => {
                let txn = self.conn.begin().await?;
                // Dropped on error: the new transaction rolls back, holding nothing yet.
                txn.execute_unprepared(&format!("SAVEPOINT {SAVEPOINT}")).await?;
                txn
            }
        };
        Ok(Tx {
            txn: Some(shared),
            permit,
            group: Some(Arc::clone(group)),
            commits: Arc::clone(&self.commits),
        })
    }
}

/// An open transaction (or, with group commit, the shared one with this
/// command's savepoint); rolled back when dropped without `commit`.
#[derive(Debug)]
pub(crate) struct Tx {
    /// `None` once committed or rolled back.
    txn: Option<DatabaseTransaction>,
    permit: Option<OwnedSemaphorePermit>,
    /// With group commit: the group whose transaction `txn` is.
    group: Option<Arc<Group>>,
    /// The database's count of commits.
    commits: Arc<AtomicU64>,
}

impl Tx {
    fn own(
        txn: DatabaseTransaction,
        permit: Option<OwnedSemaphorePermit>,
        commits: &Arc<AtomicU64>,
    ) -> Self {
        Self { txn: Some(txn), permit, group: None, commits: Arc::clone(commits) }
    }

    /// The transaction to write in.
    pub fn txn(&self) -> Result<&DatabaseTransaction, DbErr> {
        // Only `None` after `commit` or `rollback`, which take `self`.
        self.txn.as_ref().ok_or_else(ended)
    }

    /// Run `last` (the inbox row) and commit; with group commit, return once
    /// the shared transaction committed.
    ///
    /// Dropped mid-way (a cancelled command), the transaction is left in
    /// `self`, whose drop undoes this command's writes and nobody else's.
    pub async fn commit(mut self, last: Statement) -> Result<(), DbErr> {
        if self.group.is_none() {
            let txn = self.take_txn()?;
            txn.execute(last).await?;
            txn.commit().await?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let keep = Statement { sql: format!("{}; {KEEP}", last.sql), ..last };
        if let Err(e) = self.txn()?.execute(keep).await {
            let _ = self.undo().await;
            return Err(e);
        }
        let (txn, permit) = (self.take_txn()?, self.permit.take());
        let Some(group) = self.group.take() else { return Err(ended()) };
        group.put_txn(txn);
        let committed = group.join();
        if group.should_flush() {
            // Dropped mid-way, the commit's members are told it failed.
            group.flush().await;
        }
        drop(permit);
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DbErr::Custom(message)),
            Err(_) => Err(DbErr::Custom("the shared transaction was dropped".into())),
        }
    }

    pub async fn rollback(mut self) -> Result<(), DbErr> {
        if self.group.is_none() {
            return self.take_txn()?.rollback().await;
        }
        self.undo().await
    }

    /// With group commit: undo this command's writes in a task of its own, so
    /// that a caller dropped mid-way cannot take the shared transaction with it.
    fn undo(&mut self) -> impl Future<Output = Result<(), DbErr>> + use<> {
        let undone = match (self.txn.take(), self.group.take()) {
            (Some(txn), Some(group)) => {
                let permit = self.permit.take();
                Some(tokio::spawn(async move {
                    let result = group.undo(txn).await;
                    drop(permit);
                    result
                }))
            }
            _ => None,
        };
        async move {
            match undone {
                Some(task) => task.await.unwrap_or_else(|e| {
                    Err(DbErr::Custom(format!("undoing a command's writes failed: {e}")))
                }),
                None => Ok(()),
            }
        }
    }

    fn take_txn(&mut self) -> Result<DatabaseTransaction, DbErr> {
        self.txn.take().ok_or_else(ended)
    }
}

fn ended() -> DbErr {
    DbErr::Custom("the transaction was already committed or rolled back".into())
}

impl Drop for Tx {
    /// A command dropped mid-way (a cancelled handler): with group commit its
    /// writes are undone before the gate opens, and the group's commands that
    /// committed before it still get their commit. Without a group the
    /// driver rolls the transaction back.
    fn drop(&mut self) {
        if self.txn.is_some()
            && self.group.is_some()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            drop(self.undo());
        }
    }
}

/// The shared transaction of group commit and the commands waiting for it.
#[derive(Debug)]
struct Group {
    members_max: usize,
    /// Tasks waiting at the gate: while any wait, the transaction stays open for them.
    waiting: AtomicUsize,
    state: Mutex<GroupState>,
    /// The database's count of commits.
    commits: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// The shared transaction, its savepoint open; taken by the command at the gate.
    txn: Option<DatabaseTransaction>,
    opened_at: Option<Instant>,
    /// Commands whose writes it holds, told the shared commit's outcome.
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

    /// Undo one command's writes (its savepoint stays open for the next) and
    /// commit the group if nobody waits for it. When even that fails, the
    /// shared transaction cannot be trusted: it is rolled back and its
    /// members told, so they are handed back to JetStream. Only called by
    /// the holder of the gate.
    async fn undo(&self, txn: DatabaseTransaction) -> Result<(), DbErr> {
        match txn.execute_unprepared(UNDO).await {
            Ok(_) => {
                self.put_txn(txn);
                if self.should_flush() {
                    self.flush().await;
                }
                Ok(())
            }
            Err(e) => {
                let members = {
                    let mut state = self.lock();
                    state.opened_at = None;
                    std::mem::take(&mut state.members)
                };
                let _ = txn.rollback().await;
                let message = format!("the shared transaction was rolled back: {e}");
                for member in members {
                    let _ = member.send(Err(message.clone()));
                }
                Err(e)
            }
        }
    }

    /// Commit the shared transaction and tell its members. Only called by
    /// the holder of the gate.
    async fn flush(&self) {
        let (txn, members) = {
            let mut state = self.lock();
            state.opened_at = None;
            (state.txn.take(), std::mem::take(&mut state.members))
        };
        // The open savepoint holds nothing: `COMMIT` commits it with the rest.
        let result = match txn {
            Some(txn) => txn.commit().await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        if result.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use skald_testkit::database::{Backend, TempDatabase};

    const ROWS: &str = "CREATE TABLE effects (name TEXT NOT NULL)";
    const DONE: &str = "CREATE TABLE done (name TEXT PRIMARY KEY)";

    async fn grouped() -> (Db, TempDatabase) {
        let temp = TempDatabase::new(Backend::Sqlite).await.unwrap();
        let conn = temp.connect().await.unwrap();
        conn.execute_unprepared(ROWS).await.unwrap();
        conn.execute_unprepared(DONE).await.unwrap();
        (Db::new(conn, 16, Arc::default()), temp)
    }

    fn stmt(sql: &str, name: &str) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, [name.into()])
    }

    fn effect(name: &str) -> Statement {
        stmt("INSERT INTO effects (name) VALUES (?)", name)
    }

    /// The last statement of a command, as the inbox row is: a second one
    /// with the same name fails on the key.
    fn done(name: &str) -> Statement {
        stmt("INSERT INTO done (name) VALUES (?)", name)
    }

    async fn names(db: &Db, table: &str) -> Vec<String> {
        let rows = db
            .conn
            .query_all(Statement::from_string(
                DbBackend::Sqlite,
                format!("SELECT name FROM {table} ORDER BY name"),
            ))
            .await
            .unwrap();
        rows.iter().map(|row| row.try_get::<String>("", "name").unwrap()).collect()
    }

    /// Take the gate alone (a transaction of its own); tasks that queue behind
    /// it form a group when it commits.
    async fn queue_behind(db: &Db) -> Tx {
        let first = db.begin().await.unwrap();
        assert!(first.group.is_none(), "alone at the gate: a transaction of its own");
        first
    }

    async fn until_waiting(db: &Db, waiting: usize) {
        let group = db.group.as_ref().unwrap();
        while group.waiting.load(Ordering::SeqCst) < waiting {
            tokio::task::yield_now().await;
        }
    }

    /// In one group: a command whose last statement fails, one that rolls
    /// back and one dropped mid-way lose their own writes only; the others'
    /// commit, and the group goes on after each.
    #[tokio::test]
    async fn a_group_undoes_only_the_command_that_failed() {
        let (db, _temp) = grouped().await;
        let first = queue_behind(&db).await;
        let mut tasks = Vec::new();
        for (i, what) in
            ["kept", "duplicate", "rolled_back", "dropped", "kept_too"].iter().enumerate()
        {
            let each = db.clone();
            tasks.push(tokio::spawn(async move {
                let tx = each.begin().await.unwrap();
                assert!(tx.group.is_some(), "{what}: in the group");
                tx.txn().unwrap().execute(effect(what)).await.unwrap();
                match *what {
                    "duplicate" => tx.commit(done("first")).await.map(|()| "committed"),
                    "rolled_back" => tx.rollback().await.map(|()| "rolled back"),
                    "dropped" => {
                        drop(tx);
                        Ok("dropped")
                    }
                    _ => tx.commit(done(what)).await.map(|()| "committed"),
                }
            }));
            until_waiting(&db, i + 1).await;
        }
        first.txn().unwrap().execute(effect("first")).await.unwrap();
        first.commit(done("first")).await.unwrap();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().map_err(|e| e.to_string()));
        }
        assert_eq!(results[0], Ok("committed"));
        let duplicate = results[1].as_ref().unwrap_err();
        assert!(duplicate.contains("UNIQUE"), "{duplicate}");
        assert_eq!(results[2..], [Ok("rolled back"), Ok("dropped"), Ok("committed")]);
        assert_eq!(names(&db, "effects").await, ["first", "kept", "kept_too"]);
        assert_eq!(names(&db, "done").await, ["first", "kept", "kept_too"]);
        assert_eq!(db.commits.load(Ordering::Relaxed), 2, "the first alone, then the group once");
    }

    /// A command's commit returns once the group committed: its writes are
    /// visible to another connection by then.
    #[tokio::test]
    async fn a_commit_in_a_group_returns_once_the_group_committed() {
        let (db, _temp) = grouped().await;
        let first = queue_behind(&db).await;
        let mut tasks = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let each = db.clone();
            tasks.push(tokio::spawn(async move {
                let tx = each.begin().await.unwrap();
                assert!(tx.group.is_some());
                tx.txn().unwrap().execute(effect(name)).await.unwrap();
                tx.commit(done(name)).await.unwrap();
                names(&each, "done").await
            }));
            until_waiting(&db, i + 1).await;
        }
        first.commit(done("first")).await.unwrap();
        for (task, name) in tasks.into_iter().zip(["a", "b"]) {
            let seen = task.await.unwrap();
            assert!(seen.iter().any(|n| n == name), "{name} committed: {seen:?}");
        }
    }

    /// A lone write (a command that wrote nothing else) commits by itself
    /// when nobody shares the gate; behind a command at the gate it joins the
    /// group like any command, and a duplicate fails alone in both cases.
    #[tokio::test]
    async fn a_lone_write_commits_alone_or_with_the_group() {
        let (db, _temp) = grouped().await;
        db.commit_one(done("alone")).await.unwrap();
        assert_eq!(names(&db, "done").await, ["alone"]);
        let again = db.commit_one(done("alone")).await.unwrap_err().to_string();
        assert!(again.contains("UNIQUE"), "{again}");

        let first = queue_behind(&db).await;
        let mut tasks = Vec::new();
        for (i, name) in ["alone", "grouped"].into_iter().enumerate() {
            let each = db.clone();
            tasks.push(tokio::spawn(async move {
                let result = each.commit_one(done(name)).await.map_err(|e| e.to_string());
                (result, names(&each, "done").await)
            }));
            until_waiting(&db, i + 1).await;
        }
        first.commit(done("first")).await.unwrap();
        let (duplicate, _) = tasks.remove(0).await.unwrap();
        assert!(duplicate.unwrap_err().contains("UNIQUE"));
        let (grouped, seen) = tasks.remove(0).await.unwrap();
        assert_eq!(grouped, Ok(()));
        assert!(seen.iter().any(|n| n == "grouped"), "committed when it returned: {seen:?}");
        assert_eq!(names(&db, "done").await, ["alone", "first", "grouped"]);
        // `alone`, `first` and the group; the duplicates committed nothing.
        assert_eq!(db.commits.load(Ordering::Relaxed), 3);
    }
}
