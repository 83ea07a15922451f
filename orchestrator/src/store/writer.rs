//! Group commit: a writer task puts the appends of many sagas into one
//! transaction, so one commit (one fsync) covers all of them.
//!
//! Callers queue their append ([`Writer::append`], a bounded queue) and wait
//! for its own result. The writer takes whatever is queued (at most
//! [`BATCH_APPENDS_MAX`]) without waiting for more: at low load a batch is one
//! append and costs nothing extra; under load the appends that queued while
//! the last commit was flushed go together. On SQLite one writer task serves
//! the store; on PostgreSQL [`POSTGRES_WRITERS`] take turns at the queue, so
//! that a batch is written while the last one waits for its commit. Two
//! batches in flight hold the same guards as one: a saga in both (two appends
//! of one saga queued at once, rare) is updated by the first to commit and
//! refused by its seq guard in the other, and should they ever lock each
//! other's rows, PostgreSQL fails one of them and its appends are written
//! one by one, as after any failed batch.
//!
//! Every append keeps its own checks, and one failing append never fails the
//! others:
//! - the batch's fences are read in one query in the shared transaction (on
//!   PostgreSQL `FOR SHARE`, held until the commit); if one does not hold (a
//!   takeover), the batch is written again one append at a time, where an
//!   append whose fence fails is answered [`StoreError::Fenced`] and writes
//!   nothing;
//! - new sagas go in one `INSERT … ON CONFLICT DO NOTHING RETURNING`: a start
//!   whose row was not inserted was refused by its type and idempotency key
//!   ([`StoreError::DuplicateKey`]) and writes nothing;
//! - existing sagas' projections are updated in one `UPDATE … FROM (VALUES …)
//!   RETURNING`, each guarded by the seq its caller read: a saga not returned
//!   is a [`StoreError::Conflict`] and nothing of that append is written (a
//!   saga twice in a batch has its later appends guarded one by one);
//! - the events and commands of every append that passed go in one multi-row
//!   insert each, so a batch costs the same few statements whatever its size;
//! - an append that records a repair, whose request id may be taken, runs
//!   inside its own savepoint, rolled back when refused;
//! - anything else going wrong (a database error, a failed commit) rolls the
//!   shared transaction back and every append of the batch is written again
//!   on its own, so each caller gets the answer it would have had alone.
//!
//! On SQLite the statements between `BEGIN` and `COMMIT` go to the database
//! in two calls, several statements each ([`run_together`]; on a SQLite file
//! `BEGIN` and `COMMIT` ride in those two calls, on a connection the writer
//! keeps: see `store::batch`), and the
//! writer waits for this process's turn to write ([`WriteTurn`]) before it
//! begins. On PostgreSQL, which takes one statement per query, the events' and
//! tags' inserts ride in the commands' insert as `WITH` clauses
//! ([`ride_along`]).
//!
//! Acknowledging a reply or answering a start happens in the caller after
//! this returns, so only after the commit.
//!
//! SQLite has one writer at a time, and a transaction that reads before it
//! writes cannot wait for the lock (it fails with `SQLITE_BUSY` at once): each
//! transaction here therefore writes first, to take the lock (waiting for it
//! if need be): the fences are read with a no-op `UPDATE … RETURNING` of their
//! lease rows, and a transaction without fences starts with a no-op `UPDATE`
//! that matches no row.

use super::batch::WriterConn;
use super::entities::{archived_sagas, outbox, repairs, saga_events, saga_tags, sagas};
use super::handoff::Handoff;
use super::{Fence, LeaseTurn, OutboxRow, Projection, RepairRecord, Store, StoreError, WriteTurn};
use sea_orm::sea_query::{Expr, OnConflict, Query, SimpleExpr, ValueTuple};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryResult, QueryTrait, SqlErr, Statement,
    TransactionTrait,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Most appends committed together.
pub const BATCH_APPENDS_MAX: usize = 128;
/// Writer tasks on PostgreSQL, each with a batch in flight: while one waits
/// for its commit, the next batch is written (measured: two gave 6-10% more
/// sagas/s at concurrency 64 than one, four no more than one and more CPU).
const POSTGRES_WRITERS: usize = 2;
/// Most appends waiting for the writer; callers wait for room beyond it.
const QUEUE_APPENDS_MAX: usize = 1_024;
/// Most rows in one multi-row insert (PostgreSQL takes at most 65,535 parameters).
pub(super) const INSERT_ROWS_MAX: usize = 1_000;
/// Most sagas in one guarded multi-row update (12 parameters each).
const BULK_UPDATE_ROWS_MAX: usize = 1_000;

/// One saga's append, owned, as queued for the writer.
#[derive(Debug, Clone)]
pub(super) struct OwnedAppend {
    pub saga_id: String,
    pub expected_seq: i64,
    /// The events, encoded (`SagaEvent::encode`), in order.
    pub events: Vec<String>,
    pub projection: Projection,
    pub outbox: Vec<OutboxRow>,
    pub now_ms: i64,
    pub repair: Option<RepairRecord>,
    pub fence: Option<Fence>,
}

impl OwnedAppend {
    fn conflict(&self) -> StoreError {
        StoreError::Conflict { saga_id: self.saga_id.clone(), expected_seq: self.expected_seq }
    }

    fn event_rows(&self) -> impl Iterator<Item = saga_events::ActiveModel> + '_ {
        self.events.iter().enumerate().map(|(i, event)| saga_events::ActiveModel {
            saga_id: Set(self.saga_id.clone()),
            seq: Set(self.expected_seq + 1 + i as i64),
            event: Set(event.clone()),
            recorded_at_ms: Set(self.now_ms),
        })
    }

    /// A new saga's projection row.
    fn saga_row(&self) -> sagas::ActiveModel {
        let p = &self.projection;
        sagas::ActiveModel {
            saga_id: Set(self.saga_id.clone()),
            saga_type: Set(p.saga_type.clone()),
            definition_hash: Set(p.definition_hash.clone()),
            status: Set(p.status.clone()),
            current_step: Set(p.current_step.clone()),
            partition: Set(p.partition),
            idempotency_key: Set(p.idempotency_key.clone()),
            input_hash: Set(p.input_hash.clone()),
            seq: Set(self.events.len() as i64),
            next_deadline_ms: Set(p.next_deadline_ms),
            last_error: Set(p.last_error.clone()),
            created_at_ms: Set(self.now_ms),
            updated_at_ms: Set(self.now_ms),
            current_kind: Set(p.current_kind.clone()),
            attempt: Set(p.attempt),
            deadline_at_ms: Set(p.deadline_at_ms),
            park_reason: Set(p.park_reason.clone()),
            wait_half_at_ms: Set(p.wait_half_at_ms),
            wait_key: Set(p.wait_key.clone()),
        }
    }

    /// A new saga's tag rows.
    fn tag_rows(&self) -> impl Iterator<Item = saga_tags::ActiveModel> + '_ {
        self.projection.tags.iter().flatten().map(|(name, value)| saga_tags::ActiveModel {
            saga_id: Set(self.saga_id.clone()),
            name: Set(name.clone()),
            value: Set(value.clone()),
        })
    }

    fn outbox_rows(&self) -> impl Iterator<Item = outbox::ActiveModel> + '_ {
        self.outbox.iter().map(|o| outbox::ActiveModel {
            saga_id: Set(self.saga_id.clone()),
            subject: Set(o.subject.clone()),
            msg_id: Set(o.msg_id.clone()),
            body: Set(o.body.clone()),
            created_at_ms: Set(self.now_ms),
            partition: Set(self.projection.partition),
            ..Default::default()
        })
    }
}

struct Job {
    append: OwnedAppend,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle to a store's writer task; the task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Db(DbErr::Custom("the store's writer task has stopped".into()))
}

impl Writer {
    /// Start the writer task of `db` on the current runtime; the commands it
    /// commits are handed to the relay through `handoff`.
    ///
    /// `hold` (the store's count of statements) on a SQLite file: the
    /// writer keeps a connection of `db` (see `store::batch`). `commits`
    /// counts the transactions it commits.
    pub fn spawn(
        db: DatabaseConnection,
        hold: Option<Arc<AtomicU64>>,
        commits: Arc<AtomicU64>,
        handoff: Arc<Handoff>,
        turn: Option<WriteTurn>,
        lease_turn: Option<LeaseTurn>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_APPENDS_MAX);
        let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
        // SQLite has one writer at a time anyway.
        let writers = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_WRITERS,
            _ => 1,
        };
        for _ in 0..writers {
            tokio::spawn(run(
                WriterConn::new(db.clone(), hold.clone()),
                Arc::clone(&commits),
                Arc::clone(&jobs),
                Arc::clone(&handoff),
                turn.clone(),
                lease_turn.clone(),
            ));
        }
        Self { queue }
    }

    /// Queue an append and wait until it is committed or refused.
    pub async fn append(&self, append: OwnedAppend) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.queue.send(Job { append, done }).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

async fn run(
    mut conn: WriterConn,
    commits: Arc<AtomicU64>,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    handoff: Arc<Handoff>,
    turn: Option<WriteTurn>,
    lease_turn: Option<LeaseTurn>,
) {
    let mut batch = Vec::with_capacity(BATCH_APPENDS_MAX);
    loop {
        {
            let mut jobs = jobs.lock().await;
            let Some(job) = jobs.recv().await else { break };
            batch.push(job);
            while batch.len() < BATCH_APPENDS_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let began = Instant::now();
        let size = batch.len();
        let _turn = WriteTurn::take(turn.as_ref()).await;
        let _share = LeaseTurn::share(lease_turn.as_ref()).await;
        write_batch(&mut conn, &mut batch, &handoff, &commits).await;
        tracing::debug!(size, took_us = began.elapsed().as_micros() as u64, "appends committed");
    }
}

/// Write a batch (one append or many) together, hand its committed commands
/// to the relay, and answer every job in it; if the shared transaction
/// fails, write each append alone.
async fn write_batch(
    conn: &mut WriterConn,
    batch: &mut Vec<Job>,
    handoff: &Handoff,
    commits: &AtomicU64,
) {
    let appends: Vec<&OwnedAppend> = batch.iter().map(|j| &j.append).collect();
    match write_together(conn, &appends).await {
        Ok(BatchWritten { results, commands, unread }) => {
            commits.fetch_add(1, Ordering::Relaxed);
            handoff.push(commands);
            if unread {
                handoff.miss();
            }
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.done.send(result);
            }
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, size = batch.len(), "batch rolled back; writing its appends one by one");
        }
    }
    for job in batch.drain(..) {
        let result = write_alone(&conn.db, &job.append).await.map(|commands| {
            commits.fetch_add(1, Ordering::Relaxed);
            handoff.push(commands);
        });
        let _ = job.done.send(result);
    }
}

/// One append in its own transaction: any error rolls all of it back.
/// Returns the commands it queued, as stored.
async fn write_alone(
    db: &DatabaseConnection,
    a: &OwnedAppend,
) -> Result<Vec<outbox::Model>, StoreError> {
    let txn = db.begin().await?;
    match &a.fence {
        // On SQLite the fence check takes the write lock.
        Some(fence) => Store::check_fence(&txn, fence).await?,
        None => take_write_lock(&txn).await?,
    }
    let commands = write_one(&txn, a).await?;
    txn.commit().await?;
    Ok(commands)
}

/// Insert outbox rows, returning them as stored (with their ids).
pub(super) async fn insert_commands<C: ConnectionTrait>(
    conn: &C,
    rows: Vec<outbox::ActiveModel>,
) -> Result<Vec<outbox::Model>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let statement = insert_commands_statement(conn.get_database_backend(), rows);
    outbox::Entity::find().from_raw_sql(statement).all(conn).await
}

/// The insert of outbox rows (at least one), returning them as stored.
fn insert_commands_statement(backend: DbBackend, rows: Vec<outbox::ActiveModel>) -> Statement {
    let mut insert = outbox::Entity::insert_many(rows);
    insert.query().returning(Query::returning().columns([
        outbox::Column::Id,
        outbox::Column::SagaId,
        outbox::Column::Subject,
        outbox::Column::MsgId,
        outbox::Column::Body,
        outbox::Column::CreatedAtMs,
        outbox::Column::Partition,
    ]));
    backend.build(insert.query())
}

/// Run `statements` in order in the caller's transaction and return the
/// rows of all of them, in order. On SQLite they go as one query of several
/// statements: one call to the connection's thread, where each statement
/// would be a call of its own (on a busy host every call waits to be
/// scheduled on that thread, and the writer holds the database's only write
/// lock meanwhile). PostgreSQL takes one statement with parameters per
/// query: there they run one after another.
pub(super) async fn run_together<C: ConnectionTrait>(
    conn: &C,
    statements: Vec<Statement>,
) -> Result<Vec<QueryResult>, DbErr> {
    let backend = conn.get_database_backend();
    if backend != DbBackend::Sqlite {
        let mut rows = Vec::new();
        for statement in statements {
            rows.extend(conn.query_all(statement).await?);
        }
        return Ok(rows);
    }
    if statements.len() <= 1 {
        return match statements.into_iter().next() {
            Some(statement) => conn.query_all(statement).await,
            None => Ok(Vec::new()),
        };
    }
    let (sql, values) = joined(statements);
    conn.query_all(Statement::from_sql_and_values(backend, sql, values)).await
}

/// SQLite: `statements` as the text and parameters of one query of several
/// statements (the driver binds `?` parameters in order across them).
pub(super) fn joined(
    statements: impl IntoIterator<Item = Statement>,
) -> (String, Vec<sea_orm::Value>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    for statement in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    (sql, values)
}

/// Most parameters PostgreSQL takes in one statement.
const POSTGRES_PARAMS_MAX: usize = 65_535;

/// `silent` (statements whose rows are not read) and then `then`, in order,
/// as the statements to run. PostgreSQL takes one statement per query: there
/// the silent statements ride in the statement after them as data-modifying
/// `WITH` clauses (`WITH w0 AS (INSERT …), w1 AS (INSERT …) INSERT …
/// RETURNING …`), one round trip for what were several, the same writes in
/// the same transaction (a failing one fails the statement, as it failed the
/// transaction alone). A statement's parameters are numbered from 1, so they
/// are renumbered after those before it; no statement gets more than
/// PostgreSQL's limit of parameters, and statements whose numbering is not
/// the plain `$1..$n` are left as they are. SQLite runs them together anyway
/// ([`run_together`]): there they are returned as they are.
fn ride_along(backend: DbBackend, silent: Vec<Statement>, then: Vec<Statement>) -> Vec<Statement> {
    if backend != DbBackend::Postgres {
        return silent.into_iter().chain(then).collect();
    }
    let mut out = Vec::new();
    let mut riders: Vec<Statement> = Vec::new();
    let mut riders_params = 0;
    let tagged = silent.into_iter().map(|s| (s, true)).chain(then.into_iter().map(|s| (s, false)));
    for (statement, is_silent) in tagged {
        let params = params_of(&statement);
        if !riders.is_empty() && riders_params + params > POSTGRES_PARAMS_MAX {
            out.extend(carry(std::mem::take(&mut riders)));
            riders_params = 0;
        }
        riders.push(statement);
        riders_params += params;
        if !is_silent {
            out.extend(carry(std::mem::take(&mut riders)));
            riders_params = 0;
        }
    }
    out.extend(carry(riders));
    out
}

fn params_of(statement: &Statement) -> usize {
    statement.values.as_ref().map_or(0, |v| v.0.len())
}

/// The last of `statements` carrying the others as `WITH` clauses (see
/// [`ride_along`]); all of them as they are if one's parameters are not
/// numbered `$1..$n`.
fn carry(mut statements: Vec<Statement>) -> Vec<Statement> {
    if statements.len() <= 1 {
        return statements;
    }
    let mut clauses = Vec::with_capacity(statements.len() - 1);
    let mut values = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        let Some(sql) = shift_placeholders(&statement.sql, values.len(), params_of(statement))
        else {
            return statements;
        };
        values.extend(statement.values.iter().flat_map(|v| v.0.iter().cloned()));
        clauses.push(if i + 1 < statements.len() { format!("w{i} AS ({sql})") } else { sql });
    }
    let Some(main) = clauses.pop() else { return statements };
    let sql = match main.strip_prefix("WITH ") {
        Some(rest) => format!("WITH {}, {rest}", clauses.join(", ")),
        None => format!("WITH {} {main}", clauses.join(", ")),
    };
    let backend = statements.pop().map_or(DbBackend::Postgres, |s| s.db_backend);
    vec![Statement::from_sql_and_values(backend, sql, values)]
}

/// `sql` with each PostgreSQL parameter `$k` (outside quotes) written
/// `$(k + by)`; `None` if one is not in `1..=count`. Made for the writer's
/// own statements (sea-query inserts with every value a parameter): no
/// dollar quoting, `E''` strings or comments.
fn shift_placeholders(sql: &str, by: usize, count: usize) -> Option<String> {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut k = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    k = k.checked_mul(10)?.checked_add(d as usize)?;
                    chars.next();
                }
                if k == 0 || k > count {
                    return None;
                }
                out.push('$');
                out.push_str(&(k + by).to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    Some(out)
}

/// The part of a combined query's results a row belongs to (its `part`
/// column), for the statements that return rows in one.
pub(super) fn part(row: &QueryResult) -> Result<String, DbErr> {
    row.try_get::<String>("", "part")
}

/// `'<name>' AS part`, the first column a statement of a combined query
/// returns, so that its rows can be told from the others'.
pub(super) fn part_column(name: &'static str) -> SimpleExpr {
    Expr::cust(format!("CAST('{name}' AS TEXT) AS \"part\""))
}

/// What a committed batch wrote.
struct BatchWritten {
    /// Each append's result.
    results: Vec<Result<(), StoreError>>,
    /// The commands the batch queued, as stored.
    commands: Vec<outbox::Model>,
    /// Whether a command's row came back unreadable: it is committed all
    /// the same, and the relay finds it by scanning the outbox.
    unread: bool,
}

/// The appends of a batch in one transaction. `Err` when the transaction as
/// a whole failed (nothing of it was committed); else each append's result
/// and the commands committed.
///
/// A batch costs a fixed number of statements whatever its size, and on
/// SQLite two calls to the database between `BEGIN` and `COMMIT`
/// ([`run_together`]; on the writer's kept connection `BEGIN` goes with
/// the first and `COMMIT` with the second, see `store::batch`):
/// 1. the fences (which on SQLite take the write lock), the new sagas in one
///    `INSERT … ON CONFLICT DO NOTHING`, the archived sagas holding their
///    keys, and the existing sagas' projections in one guarded `UPDATE …
///    FROM (VALUES …)`. The fences are read in the same call as the writes
///    they guard: if one does not hold (a takeover, rare), the transaction
///    is rolled back and each append written alone, where the fence is
///    checked before anything is written.
/// 2. the events, the tags and the commands, in one multi-row insert each.
///
/// Appends recording a repair, and later appends to a saga already in the
/// batch, run between the two, one by one (rare): a repair in a savepoint of
/// its own, since its request id may be taken.
async fn write_together(
    conn: &mut WriterConn,
    appends: &[&OwnedAppend],
) -> Result<BatchWritten, StoreError> {
    let backend = conn.db.get_database_backend();
    let fences: Vec<Fence> = appends
        .iter()
        .filter_map(|a| a.fence.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut results: Vec<Option<Result<(), StoreError>>> =
        std::iter::repeat_with(|| None).take(appends.len()).collect();
    // Indexes into `appends`: new sagas; the first append to each existing
    // saga, guarded by its seq in the bulk update; later appends to a saga
    // of the batch; repairs.
    let (mut starts, mut bulk, mut again, mut repairs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for (i, a) in appends.iter().enumerate() {
        if a.repair.is_some() {
            repairs.push(i);
        } else if a.expected_seq == 0 {
            starts.push(i);
        } else if seen.insert(a.saga_id.as_str()) {
            bulk.push(i);
        } else {
            again.push(i);
        }
    }
    // The appends written one by one need sea-orm's transaction.
    let mut txn = conn.begin(again.is_empty() && repairs.is_empty()).await?;

    // Call 1: fences, new sagas, archived keys, projections.
    let mut statements: Vec<Statement> =
        Store::fences_statement(backend, &fences).into_iter().collect();
    for chunk in starts.chunks(INSERT_ROWS_MAX) {
        let chunk: Vec<&OwnedAppend> = chunk.iter().map(|&i| appends[i]).collect();
        statements.push(insert_sagas_statement(backend, &chunk));
        statements.push(archived_keys_statement(backend, &chunk));
    }
    for chunk in bulk.chunks(BULK_UPDATE_ROWS_MAX) {
        let chunk: Vec<&OwnedAppend> = chunk.iter().map(|&i| appends[i]).collect();
        statements.push(update_projections_statement(backend, &chunk));
    }
    let rows = txn.run(statements).await?;
    if let Some(fence) = fences
        .iter()
        .zip(Store::fences_held(&fences, &rows)?)
        .find_map(|(fence, held)| (!held).then_some(fence))
    {
        // Written alone, the appends under this fence are refused and the others pass.
        txn.rollback().await?;
        return Err(StoreError::Fenced { partition: fence.partition, epoch: fence.epoch });
    }
    let (mut inserted, mut archived, mut updated) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    for row in &rows {
        match part(row)?.as_str() {
            "inserted" => {
                inserted.insert(row.try_get::<String>("", "saga_id")?);
            }
            "archived" => {
                archived.insert((
                    row.try_get::<String>("", "saga_type")?,
                    row.try_get::<String>("", "idempotency_key")?,
                ));
            }
            "updated" => {
                updated.insert(row.try_get::<String>("", "saga_id")?);
            }
            _ => {}
        }
    }
    // A start whose row was not inserted was refused by a unique key (its
    // type and idempotency key are taken, maybe by another start of this
    // batch); one whose row was inserted is refused when an archived saga
    // (moved out of `sagas` by retention, so its unique key let the row in)
    // holds its key: its row is deleted again. The archive is read after the
    // insert, so that a saga archived while this transaction runs is seen
    // there or its live row stopped the insert.
    let refused: Vec<&str> = starts
        .iter()
        .map(|&i| appends[i])
        .filter(|a| {
            inserted.contains(&a.saga_id)
                && archived.contains(&(
                    a.projection.saga_type.clone(),
                    a.projection.idempotency_key.clone(),
                ))
        })
        .map(|a| a.saga_id.as_str())
        .collect();
    if !refused.is_empty() {
        let delete = sagas::Entity::delete_many()
            .filter(sagas::Column::SagaId.is_in(refused.iter().copied()))
            .build(backend);
        txn.run(vec![delete]).await?;
        for id in refused {
            inserted.remove(id);
        }
    }
    for &i in &starts {
        let a = appends[i];
        results[i] = Some(if inserted.contains(&a.saga_id) {
            Ok(())
        } else {
            Err(StoreError::DuplicateKey { saga_type: a.projection.saga_type.clone() })
        });
    }
    for &i in &bulk {
        results[i] = Some(if updated.contains(&appends[i].saga_id) {
            Ok(())
        } else {
            Err(appends[i].conflict())
        });
    }

    // One by one: later appends to a saga of the batch, and repairs.
    let mut committed = Vec::new();
    let one_by_one = || {
        txn.orm().ok_or_else(|| {
            DbErr::Custom("a batch on the kept connection has no appends one by one".into())
        })
    };
    for &i in &again {
        let passed = update_projection(one_by_one()?, appends[i]).await?;
        results[i] = Some(if passed { Ok(()) } else { Err(appends[i].conflict()) });
    }
    for &i in &repairs {
        let savepoint = one_by_one()?.begin().await?;
        match write_one(&savepoint, appends[i]).await {
            Ok(commands) => {
                savepoint.commit().await?;
                committed.extend(commands);
                results[i] = Some(Ok(()));
            }
            Err(
                e @ (StoreError::Conflict { .. }
                | StoreError::DuplicateKey { .. }
                | StoreError::DuplicateRequest { .. }),
            ) => {
                savepoint.rollback().await?;
                results[i] = Some(Err(e));
            }
            Err(e) => return Err(e),
        }
    }

    // Call 2: the events, tags and commands of every append that passed
    // (a repair wrote its own).
    let mut events = Vec::new();
    let mut commands = Vec::new();
    let mut tags = Vec::new();
    for (a, result) in appends.iter().zip(&results) {
        if matches!(result, Some(Ok(()))) && a.repair.is_none() {
            events.extend(a.event_rows());
            commands.extend(a.outbox_rows());
            // Only a start's: a move, which replaces tags, is a repair and
            // so written by `write_one`.
            if a.expected_seq == 0 {
                tags.extend(a.tag_rows());
            }
        }
    }
    // Past a passed seq guard (or a new saga's row) no other writer can hold
    // these seqs: a unique violation here means a corrupt store, and fails
    // the batch.
    let mut silent = Vec::new();
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(INSERT_ROWS_MAX));
        silent.push(
            saga_events::Entity::insert_many(std::mem::replace(&mut events, rest)).build(backend),
        );
    }
    while !tags.is_empty() {
        let rest = tags.split_off(tags.len().min(INSERT_ROWS_MAX));
        silent.push(
            saga_tags::Entity::insert_many(std::mem::replace(&mut tags, rest)).build(backend),
        );
    }
    let mut returning = Vec::new();
    while !commands.is_empty() {
        let rest = commands.split_off(commands.len().min(INSERT_ROWS_MAX));
        returning.push(insert_commands_statement(backend, std::mem::replace(&mut commands, rest)));
    }
    // Only the commands' insert returns rows, read once the batch is
    // committed: from here on it must not be written again.
    let mut unread = false;
    for row in txn.commit_with(ride_along(backend, silent, returning)).await? {
        match outbox::Model::from_query_result(&row, "") {
            Ok(command) => committed.push(command),
            Err(e) => {
                tracing::error!(error = %e, "a committed command's row is unreadable; the relay will scan for it");
                unread = true;
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(StoreError::Db(DbErr::Custom("append not written".into()))))
        })
        .collect();
    Ok(BatchWritten { results, commands: committed, unread })
}

/// The insert of new sagas' projection rows (at least one), skipping any a
/// unique key refuses, returning the ids inserted (`part = 'inserted'`).
fn insert_sagas_statement(backend: DbBackend, appends: &[&OwnedAppend]) -> Statement {
    let mut insert = sagas::Entity::insert_many(appends.iter().map(|a| a.saga_row()));
    insert.query().on_conflict(OnConflict::new().do_nothing().to_owned()).returning(
        Query::returning()
            .exprs([part_column("inserted"), Expr::col(sagas::Column::SagaId).into()]),
    );
    backend.build(insert.query())
}

/// The archived sagas holding the type and idempotency key of one of
/// `appends` (`part = 'archived'`).
fn archived_keys_statement(backend: DbBackend, appends: &[&OwnedAppend]) -> Statement {
    let keys = appends.iter().map(|a| {
        ValueTuple::Two(
            a.projection.saga_type.as_str().into(),
            a.projection.idempotency_key.as_str().into(),
        )
    });
    let query = Query::select()
        .expr(part_column("archived"))
        .columns([archived_sagas::Column::SagaType, archived_sagas::Column::IdempotencyKey])
        .from(archived_sagas::Entity)
        .and_where(
            Expr::tuple([
                Expr::col(archived_sagas::Column::SagaType).into(),
                Expr::col(archived_sagas::Column::IdempotencyKey).into(),
            ])
            .in_tuples(keys),
        )
        .to_owned();
    backend.build(&query)
}

/// Of a new saga just inserted alone, whether an archived saga holds its
/// type and idempotency key (see [`write_together`]); if so its row is
/// deleted again.
async fn refuse_archived_key<C: ConnectionTrait>(
    conn: &C,
    a: &OwnedAppend,
) -> Result<bool, StoreError> {
    let backend = conn.get_database_backend();
    if conn.query_all(archived_keys_statement(backend, &[a])).await?.is_empty() {
        return Ok(false);
    }
    sagas::Entity::delete_many()
        .filter(sagas::Column::SagaId.eq(a.saga_id.as_str()))
        .exec(conn)
        .await?;
    Ok(true)
}

/// The projections of `appends` (distinct sagas, at least one) in one
/// `UPDATE … FROM (VALUES …)`, each guarded by its expected seq, returning
/// the sagas updated (`part = 'updated'`); the others conflict.
fn update_projections_statement(backend: DbBackend, appends: &[&OwnedAppend]) -> Statement {
    const COLUMNS: [(&str, &str); 14] = [
        ("saga_id", "text"),
        ("expected_seq", "int8"),
        ("seq", "int8"),
        ("status", "text"),
        ("current_step", "text"),
        ("next_deadline_ms", "int8"),
        ("last_error", "text"),
        ("updated_at_ms", "int8"),
        ("current_kind", "text"),
        ("attempt", "int4"),
        ("deadline_at_ms", "int8"),
        ("park_reason", "text"),
        ("wait_half_at_ms", "int8"),
        ("wait_key", "text"),
    ];
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(appends.len() * COLUMNS.len());
    let mut rows = Vec::with_capacity(appends.len());
    for a in appends {
        let p = &a.projection;
        let first = values.len();
        values.extend([
            a.saga_id.clone().into(),
            a.expected_seq.into(),
            (a.expected_seq + a.events.len() as i64).into(),
            p.status.clone().into(),
            p.current_step.clone().into(),
            p.next_deadline_ms.into(),
            p.last_error.clone().into(),
            a.now_ms.into(),
            p.current_kind.clone().into(),
            p.attempt.into(),
            p.deadline_at_ms.into(),
            p.park_reason.clone().into(),
            p.wait_half_at_ms.into(),
            p.wait_key.clone().into(),
        ]);
        let placeholders: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(j, (_, ty))| match backend {
                // PostgreSQL cannot infer the types of parameters in VALUES.
                DbBackend::Postgres => format!("${}::{ty}", first + j + 1),
                _ => "?".to_owned(),
            })
            .collect();
        rows.push(format!("({})", placeholders.join(", ")));
    }
    // The VALUES columns are named `v_<column>`, so that no name is shared
    // with `sagas` (SQLite's RETURNING may only name the updated table's).
    let names: Vec<String> = COLUMNS.iter().map(|(name, _)| format!("\"v_{name}\"")).collect();
    let sets: Vec<String> =
        COLUMNS[2..].iter().map(|(name, _)| format!("\"{name}\" = v.\"v_{name}\"")).collect();
    let sql = format!(
        "WITH v({}) AS (VALUES {}) \
         UPDATE \"sagas\" SET {} FROM v \
         WHERE \"sagas\".\"saga_id\" = v.\"v_saga_id\" AND \"sagas\".\"seq\" = v.\"v_expected_seq\" \
         RETURNING CAST('updated' AS TEXT) AS \"part\", \"saga_id\"",
        names.join(", "),
        rows.join(", "),
        sets.join(", "),
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// On SQLite, take the database's write lock now, waiting for it if another
/// connection holds it: a transaction that read first could not wait later.
async fn take_write_lock<C: ConnectionTrait>(txn: &C) -> Result<(), StoreError> {
    // The fences' statement with no fences: on SQLite a no-op `UPDATE` that
    // matches no row; on PostgreSQL none.
    if let Some(lock) = Store::fences_statement(txn.get_database_backend(), &[]) {
        txn.execute(lock).await?;
    }
    Ok(())
}

/// Update an existing saga's projection if its seq is still the one the
/// append was decided on; false when it is not (a conflict).
async fn update_projection<C: ConnectionTrait>(
    conn: &C,
    a: &OwnedAppend,
) -> Result<bool, StoreError> {
    let p = &a.projection;
    let seq = a.expected_seq + a.events.len() as i64;
    // The definition changes only by an operator's move, which is a repair
    // and so written here, never by the batch update.
    let updated = sagas::Entity::update_many()
        .col_expr(sagas::Column::DefinitionHash, Expr::value(p.definition_hash.clone()))
        .col_expr(sagas::Column::Status, Expr::value(p.status.clone()))
        .col_expr(sagas::Column::CurrentStep, Expr::value(p.current_step.clone()))
        .col_expr(sagas::Column::Seq, Expr::value(seq))
        .col_expr(sagas::Column::NextDeadlineMs, Expr::value(p.next_deadline_ms))
        .col_expr(sagas::Column::LastError, Expr::value(p.last_error.clone()))
        .col_expr(sagas::Column::UpdatedAtMs, Expr::value(a.now_ms))
        .col_expr(sagas::Column::CurrentKind, Expr::value(p.current_kind.clone()))
        .col_expr(sagas::Column::Attempt, Expr::value(p.attempt))
        .col_expr(sagas::Column::DeadlineAtMs, Expr::value(p.deadline_at_ms))
        .col_expr(sagas::Column::ParkReason, Expr::value(p.park_reason.clone()))
        .col_expr(sagas::Column::WaitHalfAtMs, Expr::value(p.wait_half_at_ms))
        .col_expr(sagas::Column::WaitKey, Expr::value(p.wait_key.clone()))
        .filter(sagas::Column::SagaId.eq(a.saga_id.as_str()))
        .filter(sagas::Column::Seq.eq(a.expected_seq))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Everything of one append but its fence, on `conn` (a transaction or a
/// savepoint); an error leaves the caller to roll back. Returns the commands
/// it queued, as stored.
async fn write_one<C: ConnectionTrait>(
    conn: &C,
    a: &OwnedAppend,
) -> Result<Vec<outbox::Model>, StoreError> {
    let p = &a.projection;
    if a.expected_seq != 0 && !update_projection(conn, a).await? {
        return Err(a.conflict());
    }
    if a.expected_seq == 0 {
        // The saga's row first, as in a batch: a start whose row is taken
        // (its key, or its id by an earlier try of the same start that did
        // commit) is a duplicate, whatever its events would have met.
        let row = a.saga_row();
        sagas::Entity::insert(row).exec(conn).await.map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::DuplicateKey { saga_type: p.saga_type.clone() }
            }
            _ => StoreError::Db(e),
        })?;
        if refuse_archived_key(conn, a).await? {
            return Err(StoreError::DuplicateKey { saga_type: p.saga_type.clone() });
        }
    }
    saga_events::Entity::insert_many(a.event_rows()).exec(conn).await.map_err(|e| {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => a.conflict(),
            _ => StoreError::Db(e),
        }
    })?;
    if let Some(tags) = &p.tags {
        if a.expected_seq != 0 {
            // A move to another version: its tags replace the old ones.
            saga_tags::Entity::delete_many()
                .filter(saga_tags::Column::SagaId.eq(a.saga_id.as_str()))
                .exec(conn)
                .await?;
        }
        if !tags.is_empty() {
            saga_tags::Entity::insert_many(a.tag_rows()).exec(conn).await?;
        }
    }
    let commands = insert_commands(conn, a.outbox_rows().collect()).await?;
    if let Some(r) = &a.repair {
        let row = repairs::ActiveModel {
            request_id: Set(r.request_id.clone()),
            saga_id: Set(a.saga_id.clone()),
            action: Set(r.action.clone()),
            requested_by: Set(r.requested_by.clone()),
            response: Set(r.response.clone()),
            created_at_ms: Set(a.now_ms),
        };
        repairs::Entity::insert(row).exec(conn).await.map_err(|e| match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::DuplicateRequest { request_id: r.request_id.clone() }
            }
            _ => StoreError::Db(e),
        })?;
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entities::{outbox, saga_events, saga_tags, sagas};
    use sea_orm::QueryOrder;
    use skald_testkit::{Backend, TempDatabase};

    fn pg(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }

    #[test]
    fn placeholders_are_shifted_outside_quotes_only() {
        assert_eq!(
            shift_placeholders(r#"INSERT INTO "a$1" VALUES ($1, $2, '$2', $10)"#, 5, 10).as_deref(),
            Some(r#"INSERT INTO "a$1" VALUES ($6, $7, '$2', $15)"#)
        );
        assert_eq!(shift_placeholders("SELECT $3", 0, 2), None);
        assert_eq!(shift_placeholders("SELECT $0", 0, 2), None);
    }

    #[test]
    fn silent_statements_ride_in_the_next_one_on_postgres() {
        let silent = vec![
            pg("INSERT INTO e VALUES ($1, $2)", vec![1.into(), 2.into()]),
            pg("INSERT INTO t VALUES ($1)", vec![3.into()]),
        ];
        let then = vec![pg("INSERT INTO o VALUES ($1, $2) RETURNING id", vec![4.into(), 5.into()])];
        let out = ride_along(DbBackend::Postgres, silent.clone(), then.clone());
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].sql,
            "WITH w0 AS (INSERT INTO e VALUES ($1, $2)), w1 AS (INSERT INTO t VALUES ($3)) \
             INSERT INTO o VALUES ($4, $5) RETURNING id"
        );
        let values: Vec<sea_orm::Value> = (1..=5).map(sea_orm::Value::from).collect();
        assert_eq!(out[0].values.as_ref().map(|v| v.0.clone()), Some(values));
        // Only silent ones: the last carries the others.
        let out = ride_along(DbBackend::Postgres, silent.clone(), Vec::new());
        assert_eq!(out.len(), 1);
        assert!(out[0].sql.ends_with(") INSERT INTO t VALUES ($3)"), "{}", out[0].sql);
        // A main statement with its own WITH keeps it after the riders.
        let with = vec![pg("WITH v(x) AS (VALUES ($1)) SELECT x FROM v", vec![6.into()])];
        let out = ride_along(DbBackend::Postgres, silent[1..].to_vec(), with);
        assert_eq!(
            out[0].sql,
            "WITH w0 AS (INSERT INTO t VALUES ($1)), v(x) AS (VALUES ($2)) SELECT x FROM v"
        );
        // SQLite runs them together as they are.
        assert_eq!(ride_along(DbBackend::Sqlite, silent, then).len(), 3);
    }

    #[test]
    fn riders_stay_under_postgres_parameter_limit() {
        let big = |n: usize| {
            let sql = (1..=n).map(|k| format!("${k}")).collect::<Vec<_>>().join(", ");
            pg(&format!("INSERT INTO e VALUES ({sql})"), vec![sea_orm::Value::from(0); n])
        };
        let out = ride_along(DbBackend::Postgres, vec![big(40_000), big(40_000)], vec![big(10)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(params_of).collect::<Vec<_>>(), vec![40_000, 40_010]);
        // A statement not numbered $1..$n is run as it is.
        let odd = vec![pg("INSERT INTO e VALUES ($2)", vec![1.into()])];
        assert_eq!(ride_along(DbBackend::Postgres, odd, vec![big(1)]).len(), 2);
    }

    fn projection(key: &str, partition: i32) -> Projection {
        Projection {
            saga_type: "bench".into(),
            definition_hash: "h".into(),
            status: "running".into(),
            current_step: Some("one".into()),
            partition,
            idempotency_key: key.into(),
            input_hash: "i".into(),
            next_deadline_ms: None,
            last_error: None,
            current_kind: Some("do".into()),
            attempt: 1,
            deadline_at_ms: None,
            park_reason: None,
            wait_half_at_ms: None,
            wait_key: None,
            tags: None,
        }
    }

    fn append(saga_id: &str, expected_seq: i64, events: usize) -> OwnedAppend {
        OwnedAppend {
            saga_id: saga_id.into(),
            expected_seq,
            events: (0..events)
                .map(|i| format!("{{\"n\":{}}}", expected_seq + 1 + i as i64))
                .collect(),
            projection: projection(saga_id, 0),
            outbox: vec![OutboxRow {
                subject: format!("t.cmd.p.a.{saga_id}"),
                msg_id: format!("{saga_id}/{expected_seq}"),
                body: "{}".into(),
            }],
            now_ms: 1,
            repair: None,
            fence: None,
        }
    }

    /// A writer's connection to `store`'s database, as the store's own
    /// writer has it (on a SQLite file it keeps a connection of the writes'
    /// pool).
    fn conn_of(store: &Store) -> WriterConn {
        let hold = (store.backend() == DbBackend::Sqlite)
            .then(|| Arc::new(std::sync::atomic::AtomicU64::new(0)));
        WriterConn::new(store.writes().clone(), hold)
    }

    async fn seqs(store: &Store, saga_id: &str) -> Vec<i64> {
        saga_events::Entity::find()
            .filter(saga_events::Column::SagaId.eq(saga_id))
            .order_by_asc(saga_events::Column::Seq)
            .all(store.db())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect()
    }

    async fn outbox_of(store: &Store, saga_id: &str) -> usize {
        outbox::Entity::find()
            .filter(outbox::Column::SagaId.eq(saga_id))
            .all(store.db())
            .await
            .unwrap()
            .len()
    }

    /// Several sagas' appends in one transaction: the one that conflicts
    /// and the starts whose keys are taken are refused, each with its own
    /// error, and nothing of theirs is written; the others commit (one of
    /// them under a fence that holds).
    async fn one_refused_append_does_not_fail_the_others(store: Store) {
        store.ensure_cluster(2).await.unwrap();
        let epoch = store.acquire(1, "me", 0, 60_000).await.unwrap().unwrap();
        for id in ["a", "b", "c", "f"] {
            store.writer.append(append(id, 0, 2)).await.unwrap();
        }
        let held = Fence { partition: 1, owner: "me".into(), epoch };
        let mut fenced_ok = append("c", 2, 1);
        fenced_ok.fence = Some(held);
        let mut taken_key = append("d", 0, 1);
        taken_key.projection.idempotency_key = "a".into();
        let mut same_key_in_batch = append("h", 0, 1);
        same_key_in_batch.projection.idempotency_key = "g".into();
        let batch = [
            append("a", 2, 2), // commits
            append("b", 1, 1), // stale seq: conflict
            fenced_ok,         // commits, under a held fence
            taken_key,         // the idempotency key of "a": duplicate
            append("e", 0, 2), // a new saga: commits
            append("f", 2, 1), // commits
            append("f", 2, 2), // the same saga at the same seq: conflict
            append("g", 0, 1), // a new saga: commits
            same_key_in_batch, // the key "g" took in this batch: duplicate
        ];
        let refs: Vec<&OwnedAppend> = batch.iter().collect();
        let BatchWritten { results, commands: committed, .. } =
            write_together(&mut conn_of(&store), &refs).await.unwrap();
        let mut handed: Vec<(&str, &str)> =
            committed.iter().map(|r| (r.saga_id.as_str(), r.msg_id.as_str())).collect();
        handed.sort_unstable();
        assert_eq!(
            handed,
            [("a", "a/2"), ("c", "c/2"), ("e", "e/0"), ("f", "f/2"), ("g", "g/0")],
            "exactly the committed appends' commands are handed to the relay"
        );
        assert!(committed.iter().all(|r| r.id > 0 && r.body == "{}"));
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(StoreError::Conflict { expected_seq: 1, .. })),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert!(matches!(results[3], Err(StoreError::DuplicateKey { .. })), "{:?}", results[3]);
        assert!(results[4].is_ok(), "{:?}", results[4]);
        assert!(results[5].is_ok(), "{:?}", results[5]);
        assert!(matches!(results[6], Err(StoreError::Conflict { .. })), "{:?}", results[6]);
        assert!(results[7].is_ok(), "{:?}", results[7]);
        assert!(matches!(results[8], Err(StoreError::DuplicateKey { .. })), "{:?}", results[8]);
        assert_eq!(seqs(&store, "h").await, Vec::<i64>::new(), "the refused start wrote nothing");
        assert_eq!(outbox_of(&store, "h").await, 0);
        assert_eq!(seqs(&store, "f").await, vec![1, 2, 3]);

        assert_eq!(seqs(&store, "a").await, vec![1, 2, 3, 4]);
        assert_eq!(seqs(&store, "b").await, vec![1, 2], "the conflicting append wrote nothing");
        assert_eq!(seqs(&store, "c").await, vec![1, 2, 3]);
        assert_eq!(seqs(&store, "d").await, Vec::<i64>::new(), "the refused start wrote nothing");
        assert_eq!(seqs(&store, "e").await, vec![1, 2]);
        assert_eq!(outbox_of(&store, "a").await, 2);
        assert_eq!(outbox_of(&store, "b").await, 1);
        assert_eq!(outbox_of(&store, "d").await, 0);
        let rows = sagas::Entity::find()
            .order_by_asc(sagas::Column::SagaId)
            .all(store.db())
            .await
            .unwrap();
        let by_id: Vec<(String, i64)> = rows.into_iter().map(|r| (r.saga_id, r.seq)).collect();
        let expected = [("a", 4), ("b", 2), ("c", 3), ("e", 2), ("f", 3), ("g", 1)];
        assert_eq!(by_id, expected.map(|(id, seq)| (id.to_owned(), seq)).to_vec());
    }

    /// A batch with an append written under a lost lease: the shared
    /// transaction is refused as a whole, and written again one append at a
    /// time the deposed append is refused as fenced and writes nothing, while
    /// the others of its batch commit and their commands reach the relay.
    async fn a_lost_fence_refuses_only_its_append(store: Store) {
        store.ensure_cluster(2).await.unwrap();
        let epoch = store.acquire(1, "me", 0, 60_000).await.unwrap().unwrap();
        // All through this connection: on a SQLite file it keeps one of the
        // writes' two, as the store's writer would (which then needs none),
        // and the appends written alone take the other.
        let mut conn = conn_of(&store);
        let starts = [append("a", 0, 2), append("c", 0, 2)];
        let written = write_together(&mut conn, &starts.iter().collect::<Vec<_>>()).await.unwrap();
        assert!(written.results.iter().all(Result::is_ok), "{:?}", written.results);
        let held = Fence { partition: 1, owner: "me".into(), epoch };
        let lost = Fence { partition: 1, owner: "me".into(), epoch: epoch - 1 };
        let mut fenced_ok = append("c", 2, 1);
        fenced_ok.fence = Some(held);
        let mut fenced_stale = append("a", 2, 1);
        fenced_stale.fence = Some(lost);
        let batch = [fenced_ok, fenced_stale, append("e", 0, 2)];
        let refs: Vec<&OwnedAppend> = batch.iter().collect();
        assert!(
            matches!(
                write_together(&mut conn, &refs).await,
                Err(StoreError::Fenced { partition: 1, .. })
            ),
            "a lost fence refuses the shared transaction"
        );
        let handoff = Handoff::default();
        let (mut jobs, mut answers) = (Vec::new(), Vec::new());
        for append in batch {
            let (done, answer) = oneshot::channel();
            jobs.push(Job { append, done });
            answers.push(answer);
        }
        let commits = AtomicU64::new(0);
        write_batch(&mut conn, &mut jobs, &handoff, &commits).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        assert_eq!(commits.load(Ordering::Relaxed), 2, "the two appends that passed, each alone");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(StoreError::Fenced { partition: 1, .. })),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
        let mut handed: Vec<String> =
            handoff.take(usize::MAX).into_iter().map(|r| r.msg_id).collect();
        handed.sort_unstable();
        assert_eq!(handed, ["c/2", "e/0"]);
        assert_eq!(seqs(&store, "a").await, vec![1, 2], "the fenced append wrote nothing");
        assert_eq!(outbox_of(&store, "a").await, 1);
        assert_eq!(seqs(&store, "c").await, vec![1, 2, 3]);
        assert_eq!(seqs(&store, "e").await, vec![1, 2]);
    }

    /// A batch that fails after its first statements (here an event's seq
    /// already taken: a corrupt store) writes nothing, and the writer's
    /// connection is fit for the next batch, which commits.
    async fn a_failed_batch_leaves_its_connection_fit(store: Store) {
        store.writer.append(append("x", 0, 2)).await.unwrap();
        let taken = saga_events::ActiveModel {
            saga_id: Set("x".into()),
            seq: Set(3),
            event: Set("{}".into()),
            recorded_at_ms: Set(1),
        };
        saga_events::Entity::insert(taken).exec(store.db()).await.unwrap();
        let mut conn = conn_of(&store);
        let failing = [append("y", 0, 1), append("x", 2, 1)];
        let refs: Vec<&OwnedAppend> = failing.iter().collect();
        assert!(write_together(&mut conn, &refs).await.is_err(), "the taken seq fails the batch");
        assert_eq!(seqs(&store, "y").await, Vec::<i64>::new(), "nothing of the batch was kept");
        assert_eq!(outbox_of(&store, "y").await, 0);
        let x = sagas::Entity::find_by_id("x").one(store.db()).await.unwrap().unwrap();
        assert_eq!(x.seq, 2, "the projection's update was rolled back");
        for id in ["z1", "z2"] {
            let next = [append(id, 0, 1)];
            let refs: Vec<&OwnedAppend> = next.iter().collect();
            let results = write_together(&mut conn, &refs).await.unwrap().results;
            assert!(results[0].is_ok(), "{:?}", results[0]);
            assert_eq!(seqs(&store, id).await, vec![1]);
        }
    }

    /// What a batch writes is read back as it was given: text with quotes,
    /// backslashes, line breaks and non-ASCII characters, absent values
    /// (`NULL`) and present ones, in starts and later appends alike.
    async fn a_batch_stores_its_values_exactly(store: Store) {
        // Everything but NUL, which PostgreSQL's text does not take.
        let odd = "quote \" backslash \\ tab\t line\nbreak é 雪 \u{1F600}";
        let mut conn = conn_of(&store);
        let mut start = append("x1", 0, 2);
        start.events[1] = format!("{{\"text\":{}}}", serde_json::to_string(odd).unwrap());
        start.outbox[0].body = odd.to_owned();
        start.projection.tags = Some(vec![("order".into(), odd.into())]);
        let mut bare = append("x2", 0, 1);
        bare.projection.current_step = None;
        bare.projection.current_kind = None;
        bare.outbox.clear();
        let refs = [&start, &bare];
        let written = write_together(&mut conn, &refs).await.unwrap();
        assert!(written.results.iter().all(Result::is_ok), "{:?}", written.results);
        assert_eq!(written.commands.len(), 1);
        assert_eq!(written.commands[0].body, odd);
        let bare_row = sagas::Entity::find_by_id("x2").one(store.db()).await.unwrap().unwrap();
        assert_eq!((bare_row.current_step, bare_row.current_kind), (None, None));

        let mut step = append("x1", 2, 1);
        step.events[0] = odd.to_owned();
        step.now_ms = 7;
        let p = &mut step.projection;
        p.status = "compensating".into();
        p.current_step = Some(odd.into());
        p.next_deadline_ms = Some(i64::MAX - 1);
        p.last_error = Some(odd.into());
        p.attempt = i32::MAX;
        p.deadline_at_ms = Some(-5);
        p.park_reason = Some("why".into());
        p.wait_half_at_ms = Some(42);
        p.wait_key = Some(format!("paid:{odd}"));
        let refs = [&step, &append("x2", 1, 1)];
        let written = write_together(&mut conn, &refs).await.unwrap();
        assert!(written.results.iter().all(Result::is_ok), "{:?}", written.results);
        drop(conn);

        let events: Vec<(i64, String)> = saga_events::Entity::find()
            .filter(saga_events::Column::SagaId.eq("x1"))
            .order_by_asc(saga_events::Column::Seq)
            .all(store.db())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.event))
            .collect();
        assert_eq!(
            events,
            [(1, start.events[0].clone()), (2, start.events[1].clone()), (3, odd.to_owned())]
        );
        let row = sagas::Entity::find_by_id("x1").one(store.db()).await.unwrap().unwrap();
        let p = &step.projection;
        assert_eq!(
            (row.seq, row.status.as_str(), row.current_step.as_deref(), row.next_deadline_ms),
            (3, "compensating", Some(odd), p.next_deadline_ms)
        );
        assert_eq!(
            (row.last_error.as_deref(), row.attempt, row.deadline_at_ms),
            (Some(odd), i32::MAX, Some(-5))
        );
        assert_eq!(
            (row.park_reason.as_deref(), row.wait_half_at_ms, row.wait_key.as_deref()),
            (Some("why"), Some(42), p.wait_key.as_deref())
        );
        assert_eq!((row.created_at_ms, row.updated_at_ms), (1, 7));
        let bare_row = sagas::Entity::find_by_id("x2").one(store.db()).await.unwrap().unwrap();
        assert_eq!(
            (bare_row.seq, bare_row.current_step, bare_row.current_kind),
            (2, Some("one".into()), Some("do".into()))
        );
        let tag = saga_tags::Entity::find_by_id(("x1".to_owned(), "order".to_owned()))
            .one(store.db())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tag.value, odd);
        assert_eq!(outbox_of(&store, "x2").await, 1, "the step's command; the start had none");
    }

    /// A start tried again after an earlier try committed (same saga id,
    /// same key) is a duplicate, in a batch and written alone alike (alone
    /// it was once a conflict: its events met the earlier try's first).
    async fn a_start_tried_again_is_a_duplicate(store: Store) {
        store.writer.append(append("x", 0, 2)).await.unwrap();
        let again = append("x", 0, 2);
        let alone = write_alone(store.writes(), &again).await;
        assert!(matches!(alone, Err(StoreError::DuplicateKey { .. })), "{alone:?}");
        let mut conn = conn_of(&store);
        let batch = write_together(&mut conn, &[&again]).await.unwrap();
        assert!(
            matches!(batch.results[0], Err(StoreError::DuplicateKey { .. })),
            "{:?}",
            batch.results[0]
        );
        assert_eq!(seqs(&store, "x").await, vec![1, 2]);
        assert_eq!(outbox_of(&store, "x").await, 1);
    }

    /// Appends queued at once from many tasks all commit, each told its own result.
    async fn concurrent_appends_are_committed_together(store: Store) {
        let ids: Vec<String> = (0..200).map(|i| format!("s{i:03}")).collect();
        let starts = ids.iter().map(|id| store.writer.append(append(id, 0, 2)));
        let commits_before = store.commits();
        for r in futures::future::join_all(starts).await {
            r.unwrap();
        }
        let commits = store.commits() - commits_before;
        assert!(
            (1..ids.len() as u64 / 2).contains(&commits),
            "200 starts in {commits} transactions: not batched"
        );
        // Every saga twice in one go: one of each pair conflicts.
        let next = ids.iter().flat_map(|id| [append(id, 2, 1), append(id, 2, 2)]);
        let results = futures::future::join_all(next.map(|a| {
            let store = store.clone();
            async move { store.writer.append(a).await }
        }))
        .await;
        for pair in results.chunks(2) {
            let ok = pair.iter().filter(|r| r.is_ok()).count();
            let conflicts =
                pair.iter().filter(|r| matches!(r, Err(StoreError::Conflict { .. }))).count();
            assert_eq!((ok, conflicts), (1, 1), "{pair:?}");
        }
        for id in &ids {
            let n = seqs(&store, id).await.len();
            assert!(n == 3 || n == 4, "{id}: {n} events");
        }
    }

    /// A start whose type and key an archived saga holds is refused as a
    /// duplicate, in a batch and written alone, and leaves no row; the
    /// others of its batch commit.
    async fn a_start_with_an_archived_key_is_refused(store: Store) {
        use crate::store::entities::archived_sagas;
        archived_sagas::Entity::insert(archived_sagas::ActiveModel {
            saga_id: Set("old".into()),
            saga_type: Set("bench".into()),
            status: Set("completed".into()),
            idempotency_key: Set("kept".into()),
            input_hash: Set("i".into()),
            ended_at_ms: Set(1),
            archived_at_ms: Set(2),
            file: Set("f".into()),
        })
        .exec(store.db())
        .await
        .unwrap();
        let archived_key = |id: &str| {
            let mut a = append(id, 0, 1);
            a.projection.idempotency_key = "kept".into();
            a
        };
        let results = futures::future::join_all(
            [archived_key("x"), append("y", 0, 1), archived_key("z")]
                .into_iter()
                .map(|a| store.writer.append(a)),
        )
        .await;
        assert!(matches!(results[0], Err(StoreError::DuplicateKey { .. })), "{results:?}");
        assert!(results[1].is_ok(), "{results:?}");
        assert!(matches!(results[2], Err(StoreError::DuplicateKey { .. })), "{results:?}");
        // Written alone, as after a failed batch.
        let txn = store.db().begin().await.unwrap();
        let alone = write_one(&txn, &archived_key("w")).await;
        assert!(matches!(alone, Err(StoreError::DuplicateKey { .. })), "{alone:?}");
        txn.rollback().await.unwrap();
        let rows = sagas::Entity::find().all(store.db()).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.saga_id.as_str()).collect::<Vec<_>>(), ["y"]);
        assert_eq!(seqs(&store, "x").await, Vec::<i64>::new());
        assert_eq!(outbox_of(&store, "z").await, 0);
    }

    /// On a SQLite file the writes in turn go through a pool of their own,
    /// one connection kept by the writer and one for the rest; reads through
    /// the store's pool see what they wrote (the other tests here).
    #[tokio::test]
    async fn on_a_sqlite_file_writes_have_connections_of_their_own() {
        let (_db, store) = store_on(Backend::Sqlite).await;
        let size =
            |c: &DatabaseConnection| c.get_sqlite_connection_pool().options().get_max_connections();
        assert_eq!(size(store.writes()), 2);
        assert_eq!(size(store.db()), 4);
    }

    /// A store on a fresh database of `backend`, and the database to remove after.
    async fn store_on(backend: Backend) -> (TempDatabase, Store) {
        let db = TempDatabase::new(backend).await.unwrap();
        let store = Store::connect(&db.url).await.unwrap();
        (db, store)
    }

    /// Two tests of one check, named `$sqlite` and `$postgres`: `$check`
    /// runs on a store over each database, which is removed afterwards.
    macro_rules! on_each_backend {
        ($check:ident: $sqlite:ident, $postgres:ident) => {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $sqlite() {
                let (db, store) = store_on(Backend::Sqlite).await;
                $check(store).await;
                db.remove().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $postgres() {
                let (db, store) = store_on(Backend::Postgres).await;
                $check(store).await;
                db.remove().await;
            }
        };
    }

    on_each_backend!(
        one_refused_append_does_not_fail_the_others:
        one_refused_append_does_not_fail_the_others_on_sqlite,
        one_refused_append_does_not_fail_the_others_on_postgres
    );
    on_each_backend!(
        a_lost_fence_refuses_only_its_append:
        a_lost_fence_refuses_only_its_append_on_sqlite,
        a_lost_fence_refuses_only_its_append_on_postgres
    );
    on_each_backend!(
        a_batch_stores_its_values_exactly:
        a_batch_stores_its_values_exactly_on_sqlite,
        a_batch_stores_its_values_exactly_on_postgres
    );
    on_each_backend!(
        a_failed_batch_leaves_its_connection_fit:
        a_failed_batch_leaves_its_connection_fit_on_sqlite,
        a_failed_batch_leaves_its_connection_fit_on_postgres
    );
    on_each_backend!(
        a_start_tried_again_is_a_duplicate:
        a_start_tried_again_is_a_duplicate_on_sqlite,
        a_start_tried_again_is_a_duplicate_on_postgres
    );
    on_each_backend!(
        concurrent_appends_are_committed_together:
        concurrent_appends_are_committed_together_on_sqlite,
        concurrent_appends_are_committed_together_on_postgres
    );
    on_each_backend!(
        a_start_with_an_archived_key_is_refused:
        a_start_with_an_archived_key_is_refused_on_sqlite,
        a_start_with_an_archived_key_is_refused_on_postgres
    );
}
