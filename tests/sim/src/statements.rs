//! Faults at the level of SQL statements: every database connection of the
//! world's orchestrator instances and participants runs SQLite's progress
//! handler, which may interrupt the statement it is running at any of its
//! steps. An interrupted write inside a transaction rolls the transaction
//! back (SQLite does so itself), and the code above sees an error from the
//! statement, the `COMMIT` included: what a failing disk or a dropped
//! connection looks like to it.
//!
//! Each database has a [`Gate`]. It fails a step when the seed says so (a
//! chance per million steps), and it is how a process dies at any point:
//! armed with a crash, it lets so many more steps run, then fails every
//! statement until the process is started again on a new pool — as a
//! process killed mid-transaction leaves the database with its last commit.
//!
//! Whether step `n` of a gate fails is drawn from the seed and `n`. A pool
//! has one connection, so a store's statements run one after another on it,
//! and its steps are numbered the same way every run. A connection that saw
//! an interrupt is closed when it goes back to the pool, once what it had
//! queued (the rollback of a transaction dropped after the error) has run:
//! after SQLite rolled a transaction back by itself, or refused a
//! `ROLLBACK`, the driver's count of open transactions no longer matches
//! the connection's. Its steps after the interrupt are not counted: that
//! rollback may run while the next connection has begun.

use sea_orm::sqlx::Connection;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sea_orm::{DatabaseConnection, SqlxSqliteConnector};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the error of an interrupted statement starts (SQLite's
/// `SQLITE_INTERRUPT`, code 9). Its message is usually "interrupted", but a
/// statement interrupted while it was already failing (a unique key, say)
/// keeps that earlier message with the interrupt's code.
const INTERRUPTED: &str = "(code: 9) ";
/// No crash armed.
const NO_CRASH: u64 = u64::MAX;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `error` (as its message shows, through any wrapping) is a
/// statement a gate interrupted.
pub fn interrupted(error: &impl std::fmt::Display) -> bool {
    error.to_string().contains(INTERRUPTED)
}

/// Decides which steps of one database's statements fail.
#[derive(Debug)]
pub struct Gate {
    seed: u64,
    /// Chance in a million that a step fails; 0 once the world heals.
    per_million: AtomicU32,
    /// Steps run so far.
    steps: AtomicU64,
    /// Steps left before the process dies ([`NO_CRASH`]: none armed).
    crash_in: AtomicU64,
    /// The process died: every statement fails until it is started again.
    dead: AtomicBool,
    /// Whether each open connection (by the address of its SQLite handle)
    /// saw an interrupt.
    spent: Mutex<HashMap<usize, Arc<AtomicBool>>>,
    /// Steps interrupted by chance (not by a crash).
    fired: AtomicU64,
    /// Steps interrupted, by chance or by a crash.
    interrupts: AtomicU64,
}

impl Gate {
    /// A gate for the database `label` names (its steps are drawn apart
    /// from other databases'), failing nothing until [`Gate::set_chance`].
    pub fn new(seed: u64, label: &str) -> Arc<Self> {
        let mut mixed = seed ^ 0x5354_4d54_5341_5445;
        for b in label.bytes() {
            mixed = (mixed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Arc::new(Self {
            seed: mixed,
            per_million: AtomicU32::new(0),
            steps: AtomicU64::new(0),
            crash_in: AtomicU64::new(NO_CRASH),
            dead: AtomicBool::new(false),
            spent: Mutex::new(HashMap::new()),
            fired: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
        })
    }

    /// One step of a statement: `true` to go on, `false` to interrupt it.
    fn step(&self) -> bool {
        let go_on = self.decide();
        if !go_on {
            self.interrupts.fetch_add(1, Ordering::Relaxed);
        }
        go_on
    }

    fn decide(&self) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let left = self.crash_in.load(Ordering::Relaxed);
        if left != NO_CRASH {
            if left == 0 {
                self.crash_in.store(NO_CRASH, Ordering::Relaxed);
                self.dead.store(true, Ordering::Relaxed);
                return false;
            }
            self.crash_in.store(left - 1, Ordering::Relaxed);
        }
        let n = self.steps.fetch_add(1, Ordering::Relaxed);
        let per_million = self.per_million.load(Ordering::Relaxed);
        if per_million == 0 || mix(self.seed ^ n) % 1_000_000 >= u64::from(per_million) {
            return true;
        }
        self.fired.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The process dies after `steps` more steps of its statements.
    pub fn arm_crash(&self, steps: u64) {
        self.crash_in.store(steps, Ordering::Relaxed);
    }

    /// Whether the process died (a crash came).
    pub fn dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The process starts again: no crash armed, statements run.
    pub fn restart(&self) {
        self.crash_in.store(NO_CRASH, Ordering::Relaxed);
        self.dead.store(false, Ordering::Relaxed);
    }

    /// Fail a step by chance, `per_million` in a million (0: never, as
    /// once the world heals).
    pub fn set_chance(&self, per_million: u32) {
        self.per_million.store(per_million, Ordering::Relaxed);
    }

    /// The chance in a million that a step fails.
    pub fn chance(&self) -> u32 {
        self.per_million.load(Ordering::Relaxed)
    }

    /// Steps interrupted so far, by chance or by a crash: an error while
    /// this grows is what the gate did (the statement interrupted, or what
    /// followed from it, such as a `ROLLBACK` finding that SQLite already
    /// rolled the transaction back).
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// A new connection's flag, set once it saw an interrupt.
    fn opened(&self, handle: usize) -> Arc<AtomicBool> {
        let spent = Arc::new(AtomicBool::new(false));
        self.connections().insert(handle, Arc::clone(&spent));
        spent
    }

    /// Whether the connection going back to the pool may be used again (it
    /// saw no interrupt); one that may not is forgotten, as it is closed.
    fn released(&self, handle: usize) -> bool {
        let mut connections = self.connections();
        let spent = connections.get(&handle).is_some_and(|spent| spent.load(Ordering::Relaxed));
        if spent {
            connections.remove(&handle);
        }
        !spent
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<AtomicBool>>> {
        self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Steps interrupted by chance so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }
}

/// The address of a connection's SQLite handle: which connection it is
/// while it is open.
fn address(handle: &mut sea_orm::sqlx::sqlite::LockedSqliteHandle<'_>) -> usize {
    handle.as_raw_handle().as_ptr() as usize
}

/// SplitMix64's finaliser: a well-spread function of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A pool of one connection to the SQLite database at `url` (created if
/// missing, WAL) whose statements pass through `gate`.
///
/// # Errors
/// A bad URL, or a database that cannot be opened.
pub async fn connect(url: &str, gate: &Arc<Gate>) -> anyhow::Result<DatabaseConnection> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let (on_connect, on_release) = (Arc::clone(gate), Arc::clone(gate));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .after_connect(move |conn, _| {
            let gate = Arc::clone(&on_connect);
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                // Once this connection saw an interrupt, what it still runs
                // (the rollback of a transaction dropped after the error,
                // perhaps beside the next connection's first statement) is
                // not counted: it fails only while the process is dead.
                let spent = gate.opened(address(&mut handle));
                handle.set_progress_handler(1, move || {
                    if spent.load(Ordering::Relaxed) {
                        return !gate.dead();
                    }
                    let go_on = gate.step();
                    if !go_on {
                        spent.store(true, Ordering::Relaxed);
                    }
                    go_on
                });
                Ok(())
            })
        })
        .after_release(move |conn, _| {
            let gate = Arc::clone(&on_release);
            Box::pin(async move {
                // What the connection has queued (a dropped transaction's
                // rollback) runs first; then one that saw an interrupt, in
                // that rollback or before, is not used again.
                conn.ping().await?;
                let handle = address(&mut conn.lock_handle().await?);
                Ok(gate.released(handle))
            })
        })
        .connect_with(options)
        .await?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}
