//! Ledger operations inside a database transaction: open an account, create
//! a transfer (posted at once, or held), post or void a hold; and reads.
//!
//! Each write operation locks what it reads (accounts in id order after the
//! transfer, see `store`), loads those rows into a [`State`], lets the pure
//! `decide_*` rule on the request, applies the resulting event with the same
//! [`State::apply`] that replay uses, and writes the event and the changed
//! projection rows. Updates are guarded by the values read, so a row changed
//! behind a lock's back fails the operation ([`OpError::Conflict`]) rather
//! than being overwritten.
//!
//! The functions take any connection or transaction, so saga handlers run
//! them in the SDK's transaction (`ctx.tx()`); [`Store`] wraps each in a
//! transaction of its own for the command line and tests.

use crate::events::{self, LedgerEvent};
use crate::model::{
    Account, AccountFlags, Balances, Decision, NewAccount, NewTransfer, Refusal, State, Transfer,
    TransferState, check_account_id, check_transfer_id,
};
use crate::store::entities::{accounts, ledger_events, transfers};
use crate::store::{Store, take_write_lock, write_lock_statement};
use sea_orm::sea_query::{Expr, OnConflict, Query, SimpleExpr};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Statement,
};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The ledger says no (a business rule or a bad request): nothing written.
    #[error("refused ({code}): {refusal}", code = .0.code(), refusal = .0)]
    Refused(#[from] Refusal),
    /// The database failed; nothing was written, trying again may work.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A row changed under a lock that should have prevented it; nothing was
    /// written, trying again may work.
    #[error("{what} changed concurrently; nothing was written, try again")]
    Conflict { what: String },
    /// A stored row cannot be read as what it should be: run `ledger verify`.
    #[error("the stored ledger is inconsistent: {0}; run `ledger verify`")]
    Corrupt(String),
}

/// The answer to a create: explicit, TigerBeetle style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateResult {
    Created,
    /// The same id with the same fields was created before: nothing changed.
    Exists,
}

impl CreateResult {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Exists => "exists",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostResult {
    Posted,
    AlreadyPosted,
}

impl PostResult {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::AlreadyPosted => "already_posted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidResult {
    Voided,
    AlreadyVoided,
}

impl VoidResult {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voided => "voided",
            Self::AlreadyVoided => "already_voided",
        }
    }
}

/// Open an account (zero balances). A repeat with the same currency and
/// flags is [`CreateResult::Exists`].
///
/// # Errors
/// [`OpError::Refused`] for invalid fields or an account with this id and
/// other fields; database errors.
pub async fn create_account(
    tx: &impl ConnectionTrait,
    new: &NewAccount,
    now_ms: i64,
) -> Result<CreateResult, OpError> {
    new.validate()?;
    take_write_lock(tx).await?;
    let mut state = State::default();
    if let Some(account) = find_account(tx, &new.id).await? {
        state.insert_account(account);
    }
    let event = match state.decide_create_account(new)? {
        Decision::Unchanged => return Ok(CreateResult::Exists),
        Decision::Append(event) => event,
    };
    state.apply(&event, now_ms);
    let account = state.accounts.get(&new.id).ok_or_else(|| applied_nothing(&event))?;
    let inserted = accounts::Entity::insert(account_row(account))
        .on_conflict(OnConflict::column(accounts::Column::Id).do_nothing().to_owned())
        .exec_without_returning(tx)
        .await?;
    if inserted == 0 {
        // Created by a concurrent transaction since we looked (PostgreSQL):
        // the request is a repeat of that one, or conflicts with it.
        let mut state = State::default();
        if let Some(account) = find_account(tx, &new.id).await? {
            state.insert_account(account);
        }
        return match state.decide_create_account(new)? {
            Decision::Unchanged => Ok(CreateResult::Exists),
            Decision::Append(_) => Err(OpError::Conflict { what: format!("account {}", new.id) }),
        };
    }
    append_event(tx, &event, now_ms).await?;
    Ok(CreateResult::Created)
}

/// Create a transfer: posted at once, or pending (a hold) when
/// `new.pending`. A repeat with the same fields is [`CreateResult::Exists`],
/// whatever became of the transfer since.
///
/// # Errors
/// [`OpError::Refused`]: invalid fields, `exists_with_different_fields`, an
/// unknown account, `currency_mismatch`, `insufficient_funds`,
/// `exceeds_debits`, `overflows_balance`. Database errors.
pub async fn create_transfer(
    tx: &impl ConnectionTrait,
    new: &NewTransfer,
    now_ms: i64,
) -> Result<CreateResult, OpError> {
    new.validate()?;
    let backend = tx.get_database_backend();
    let mut state = State::default();
    let ids = [new.debit_account_id.as_str(), new.credit_account_id.as_str()];
    let reads = write_lock_statement(backend)
        .into_iter()
        .chain([
            accounts_statement(backend, Condition::all().add(accounts::Column::Id.is_in(ids))),
            transfer_statement(backend, &new.id, false),
        ])
        .collect();
    load(&mut state, query_together(tx, reads).await?)?;
    let event = match state.decide_create_transfer(new)? {
        Decision::Unchanged => return Ok(CreateResult::Exists),
        Decision::Append(event) => event,
    };
    let before = state.clone();
    state.apply(&event, now_ms);
    let transfer = state.transfers.get(&new.id).ok_or_else(|| applied_nothing(&event))?;
    let insert = transfers::Entity::insert(transfer_row(transfer))
        .on_conflict(OnConflict::column(transfers::Column::Id).do_nothing().to_owned())
        .build(backend);
    let mut writes = vec![(insert, format!("transfer {}", new.id))];
    writes.extend(account_updates(backend, &before, &state, ids)?);
    writes.push(event_insert(backend, &event, now_ms));
    match write_one_row_each(tx, writes).await? {
        None => Ok(CreateResult::Created),
        // The transfer was not inserted: another transaction created this id
        // since we looked (PostgreSQL, with other accounts than ours, else we
        // would have waited for it). Nothing after the insert ran there.
        Some((0, _)) if backend != DbBackend::Sqlite => {
            let mut state = before;
            if let Some(transfer) = find_transfer(tx, &new.id).await? {
                state.insert_transfer(transfer);
            }
            match state.decide_create_transfer(new)? {
                Decision::Unchanged => Ok(CreateResult::Exists),
                Decision::Append(_) => {
                    Err(OpError::Conflict { what: format!("transfer {}", new.id) })
                }
            }
        }
        Some((_, what)) => Err(OpError::Conflict { what }),
    }
}

/// Post a pending transfer: its amount moves from pending to posted on both
/// accounts. Posting it again is [`PostResult::AlreadyPosted`].
///
/// # Errors
/// [`OpError::Refused`]: `transfer_not_found`, `transfer_not_pending` (a
/// single-phase transfer), `transfer_voided`. Database errors.
pub async fn post_transfer(
    tx: &impl ConnectionTrait,
    transfer_id: &str,
    now_ms: i64,
) -> Result<PostResult, OpError> {
    check_transfer_id(transfer_id)?;
    let mut state = lock_transfer(tx, transfer_id).await?;
    let event = match state.decide_post(transfer_id)? {
        Decision::Unchanged => return Ok(PostResult::AlreadyPosted),
        Decision::Append(event) => event,
    };
    resolve(tx, &mut state, &event, transfer_id, now_ms).await?;
    Ok(PostResult::Posted)
}

/// Void a pending transfer: its amount is released on both accounts. Voiding
/// it again is [`VoidResult::AlreadyVoided`]. With `expected`, the transfer
/// must have been created by that request (a compensation voids only the
/// hold it undoes).
///
/// # Errors
/// [`OpError::Refused`]: `transfer_not_found`, `exists_with_different_fields`,
/// `transfer_not_pending`, `transfer_posted`. Database errors.
pub async fn void_transfer(
    tx: &impl ConnectionTrait,
    transfer_id: &str,
    expected: Option<&NewTransfer>,
    now_ms: i64,
) -> Result<VoidResult, OpError> {
    check_transfer_id(transfer_id)?;
    let mut state = lock_transfer(tx, transfer_id).await?;
    let event = match state.decide_void(transfer_id, expected)? {
        Decision::Unchanged => return Ok(VoidResult::AlreadyVoided),
        Decision::Append(event) => event,
    };
    resolve(tx, &mut state, &event, transfer_id, now_ms).await?;
    Ok(VoidResult::Voided)
}

/// Apply a post or void to the locked rows and write them with the event.
async fn resolve(
    tx: &impl ConnectionTrait,
    state: &mut State,
    event: &LedgerEvent,
    transfer_id: &str,
    now_ms: i64,
) -> Result<(), OpError> {
    let backend = tx.get_database_backend();
    let before = state.clone();
    state.apply(event, now_ms);
    let t = state.transfers.get(transfer_id).ok_or_else(|| applied_nothing(event))?;
    let update = transfers::Entity::update_many()
        .col_expr(transfers::Column::State, Expr::value(t.state.as_str()))
        .col_expr(transfers::Column::ResolvedAtMs, Expr::value(t.resolved_at_ms))
        .filter(transfers::Column::Id.eq(transfer_id))
        .filter(transfers::Column::State.eq(TransferState::Pending.as_str()))
        .build(backend);
    let mut writes = vec![(update, format!("transfer {transfer_id}"))];
    let ids = [t.debit_account_id.as_str(), t.credit_account_id.as_str()];
    writes.extend(account_updates(backend, &before, state, ids)?);
    writes.push(event_insert(backend, event, now_ms));
    match write_one_row_each(tx, writes).await? {
        None => Ok(()),
        Some((_, what)) => Err(OpError::Conflict { what }),
    }
}

/// One account as its projection row says, if it exists.
///
/// # Errors
/// Database errors.
pub async fn account(db: &impl ConnectionTrait, id: &str) -> Result<Option<Account>, OpError> {
    check_account_id(id)?;
    find_account(db, id).await
}

/// One transfer as its projection row says, if it exists.
///
/// # Errors
/// Database errors, or a row that cannot be read.
pub async fn transfer(db: &impl ConnectionTrait, id: &str) -> Result<Option<Transfer>, OpError> {
    check_transfer_id(id)?;
    find_transfer(db, id).await
}

/// Lock and load a transfer, then its two accounts (always in this order:
/// transfer, then accounts by id), in one call ([`query_together`]).
async fn lock_transfer(tx: &impl ConnectionTrait, transfer_id: &str) -> Result<State, OpError> {
    let backend = tx.get_database_backend();
    // `id = (SELECT …)`, not `id IN (SELECT …)`: PostgreSQL looks a scalar
    // subquery's one value up in the primary key, where `IN … OR IN …` reads
    // every account.
    let account_of = |column: transfers::Column| {
        let id = Query::select()
            .column(column)
            .from(transfers::Entity)
            .and_where(transfers::Column::Id.eq(transfer_id))
            .to_owned();
        accounts::Column::Id
            .into_expr()
            .eq(SimpleExpr::SubQuery(None, Box::new(id.into_sub_query_statement())))
    };
    let accounts = accounts_statement(
        backend,
        Condition::any()
            .add(account_of(transfers::Column::DebitAccountId))
            .add(account_of(transfers::Column::CreditAccountId)),
    );
    let reads = write_lock_statement(backend)
        .into_iter()
        .chain([transfer_statement(backend, transfer_id, true), accounts])
        .collect();
    let mut state = State::default();
    load(&mut state, query_together(tx, reads).await?)?;
    Ok(state)
}

/// The `part` column that says which read a row comes from.
const PART: &str = "part";
const PART_ACCOUNT: &str = "account";
const PART_TRANSFER: &str = "transfer";

/// The accounts that `which` selects (a transfer's two), locked
/// (PostgreSQL: `FOR UPDATE`) in id order, so that two transactions over the
/// same pair cannot deadlock.
fn accounts_statement(backend: DbBackend, which: Condition) -> Statement {
    accounts::Entity::find()
        .expr_as(Expr::val(PART_ACCOUNT), PART)
        .filter(which)
        .order_by_asc(accounts::Column::Id)
        .lock_exclusive()
        .build(backend)
}

/// One transfer; with `lock`, locked for the rest of the transaction.
fn transfer_statement(backend: DbBackend, id: &str, lock: bool) -> Statement {
    let mut query =
        transfers::Entity::find_by_id(id.to_owned()).expr_as(Expr::val(PART_TRANSFER), PART);
    if lock {
        query = query.lock_exclusive();
    }
    query.build(backend)
}

/// Put the rows of [`accounts_statement`] and [`transfer_statement`] into `state`.
fn load(state: &mut State, rows: Vec<QueryResult>) -> Result<(), OpError> {
    for row in rows {
        match row.try_get::<String>("", PART)?.as_str() {
            PART_ACCOUNT => {
                state.insert_account(account_from_row(accounts::Model::from_query_result(
                    &row, "",
                )?));
            }
            PART_TRANSFER => {
                state.insert_transfer(transfer_from_row(transfers::Model::from_query_result(
                    &row, "",
                )?)?);
            }
            part => return Err(OpError::Corrupt(format!("a read returned a row of `{part}`"))),
        }
    }
    Ok(())
}

/// Run `statements` in order in `tx` and return the rows of all of them. On
/// SQLite they go as one query of several statements: one call to the
/// connection's thread where each statement was a call of its own (the
/// transaction holds the database's only write lock, and the SDK's gate,
/// meanwhile). PostgreSQL takes one statement with parameters per query:
/// there they run one after another.
async fn query_together(
    tx: &impl ConnectionTrait,
    statements: Vec<Statement>,
) -> Result<Vec<QueryResult>, DbErr> {
    let backend = tx.get_database_backend();
    if backend != DbBackend::Sqlite || statements.len() == 1 {
        let mut rows = Vec::new();
        for statement in statements {
            rows.extend(tx.query_all(statement).await?);
        }
        return Ok(rows);
    }
    // The driver binds `?` parameters in order across the statements.
    let mut sql = String::new();
    let mut values = Vec::new();
    for statement in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    tx.query_all(Statement::from_sql_and_values(backend, sql, values)).await
}

/// Run `writes` in order in `tx`; each must change exactly one row (an insert
/// that a key refused, or an update whose guard no longer matches, changes
/// none). The first that did not, with its description; `None` when all did.
/// On SQLite all of them run, in one call ([`query_together`], each
/// returning its number once per row it changed): when one did not, the
/// others have run all the same, and the caller's transaction must be
/// rolled back. On PostgreSQL they stop at the first that did not: only
/// there does a failed first write leave nothing written.
async fn write_one_row_each(
    tx: &impl ConnectionTrait,
    writes: Vec<(Statement, String)>,
) -> Result<Option<(usize, String)>, DbErr> {
    if tx.get_database_backend() != DbBackend::Sqlite {
        for (i, (statement, what)) in writes.into_iter().enumerate() {
            if tx.execute(statement).await?.rows_affected() != 1 {
                return Ok(Some((i, what)));
            }
        }
        return Ok(None);
    }
    let mut changed = vec![0_u32; writes.len()];
    let statements = writes
        .iter()
        .enumerate()
        .map(|(i, (statement, _))| Statement {
            sql: format!("{} RETURNING {i} AS {PART}", statement.sql),
            ..statement.clone()
        })
        .collect();
    for row in query_together(tx, statements).await? {
        let i = usize::try_from(row.try_get::<i64>("", PART)?).unwrap_or(usize::MAX);
        if let Some(count) = changed.get_mut(i) {
            *count += 1;
        }
    }
    Ok(changed
        .iter()
        .position(|&count| count != 1)
        .and_then(|i| writes.into_iter().nth(i).map(|(_, what)| (i, what))))
}

/// An account, unlocked.
async fn find_account(db: &impl ConnectionTrait, id: &str) -> Result<Option<Account>, OpError> {
    Ok(accounts::Entity::find_by_id(id.to_owned()).one(db).await?.map(account_from_row))
}

/// A transfer, unlocked.
async fn find_transfer(db: &impl ConnectionTrait, id: &str) -> Result<Option<Transfer>, OpError> {
    transfers::Entity::find_by_id(id.to_owned()).one(db).await?.map(transfer_from_row).transpose()
}

/// The updates of the balances of `ids` that changed from `before` to
/// `after`, each guarded by the values read, with what each updates.
fn account_updates(
    backend: DbBackend,
    before: &State,
    after: &State,
    ids: [&str; 2],
) -> Result<Vec<(Statement, String)>, OpError> {
    let mut updates = Vec::new();
    for id in ids {
        let (Some(old), Some(new)) = (before.accounts.get(id), after.accounts.get(id)) else {
            return Err(OpError::Corrupt(format!("account {id} vanished during a transfer")));
        };
        let (old, new) = (old.balances, new.balances);
        if old == new {
            continue;
        }
        use accounts::Column as C;
        let update = accounts::Entity::update_many()
            .col_expr(C::DebitsPending, Expr::value(new.debits_pending))
            .col_expr(C::DebitsPosted, Expr::value(new.debits_posted))
            .col_expr(C::CreditsPending, Expr::value(new.credits_pending))
            .col_expr(C::CreditsPosted, Expr::value(new.credits_posted))
            .filter(C::Id.eq(id))
            .filter(C::DebitsPending.eq(old.debits_pending))
            .filter(C::DebitsPosted.eq(old.debits_posted))
            .filter(C::CreditsPending.eq(old.credits_pending))
            .filter(C::CreditsPosted.eq(old.credits_posted))
            .build(backend);
        updates.push((update, format!("account {id}")));
    }
    Ok(updates)
}

/// The insert of `event` into the log.
fn event_insert(backend: DbBackend, event: &LedgerEvent, now_ms: i64) -> (Statement, String) {
    let insert = ledger_events::Entity::insert(event_row(event, now_ms)).build(backend);
    (insert, "the event log".to_owned())
}

fn event_row(event: &LedgerEvent, now_ms: i64) -> ledger_events::ActiveModel {
    ledger_events::ActiveModel {
        seq: NotSet,
        account_id: Set(event.account_id().map(str::to_owned)),
        transfer_id: Set(event.transfer_id().map(str::to_owned)),
        event: Set(events::encode(event)),
        at_ms: Set(now_ms),
    }
}

async fn append_event(
    tx: &impl ConnectionTrait,
    event: &LedgerEvent,
    now_ms: i64,
) -> Result<(), OpError> {
    ledger_events::Entity::insert(event_row(event, now_ms)).exec_without_returning(tx).await?;
    Ok(())
}

fn applied_nothing(event: &LedgerEvent) -> OpError {
    OpError::Corrupt(format!("applying {event:?} changed nothing"))
}

pub(crate) fn account_from_row(row: accounts::Model) -> Account {
    Account {
        id: row.id,
        currency: row.currency,
        flags: AccountFlags {
            debits_must_not_exceed_credits: row.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits: row.credits_must_not_exceed_debits,
        },
        balances: Balances {
            debits_pending: row.debits_pending,
            debits_posted: row.debits_posted,
            credits_pending: row.credits_pending,
            credits_posted: row.credits_posted,
        },
        created_at_ms: row.created_at_ms,
    }
}

pub(crate) fn transfer_from_row(row: transfers::Model) -> Result<Transfer, OpError> {
    let state = TransferState::parse(&row.state).ok_or_else(|| {
        OpError::Corrupt(format!("transfer {} has an unknown state `{}`", row.id, row.state))
    })?;
    Ok(Transfer {
        id: row.id,
        debit_account_id: row.debit_account_id,
        credit_account_id: row.credit_account_id,
        amount: row.amount,
        currency: row.currency,
        pending: row.pending,
        state,
        created_at_ms: row.created_at_ms,
        resolved_at_ms: row.resolved_at_ms,
    })
}

fn account_row(a: &Account) -> accounts::ActiveModel {
    accounts::ActiveModel {
        id: Set(a.id.clone()),
        currency: Set(a.currency.clone()),
        debits_must_not_exceed_credits: Set(a.flags.debits_must_not_exceed_credits),
        credits_must_not_exceed_debits: Set(a.flags.credits_must_not_exceed_debits),
        debits_pending: Set(a.balances.debits_pending),
        debits_posted: Set(a.balances.debits_posted),
        credits_pending: Set(a.balances.credits_pending),
        credits_posted: Set(a.balances.credits_posted),
        created_at_ms: Set(a.created_at_ms),
    }
}

fn transfer_row(t: &Transfer) -> transfers::ActiveModel {
    transfers::ActiveModel {
        id: Set(t.id.clone()),
        debit_account_id: Set(t.debit_account_id.clone()),
        credit_account_id: Set(t.credit_account_id.clone()),
        amount: Set(t.amount),
        currency: Set(t.currency.clone()),
        pending: Set(t.pending),
        state: Set(t.state.as_str().to_owned()),
        created_at_ms: Set(t.created_at_ms),
        resolved_at_ms: Set(t.resolved_at_ms),
    }
}

/// Each operation in a transaction of its own, for the command line and tests.
impl Store {
    /// [`create_account`] in its own transaction.
    ///
    /// # Errors
    /// See [`create_account`].
    pub async fn create_account(
        &self,
        new: &NewAccount,
        now_ms: i64,
    ) -> Result<CreateResult, OpError> {
        self.in_own_tx(async |tx| create_account(tx, new, now_ms).await).await
    }

    /// [`create_transfer`] in its own transaction.
    ///
    /// # Errors
    /// See [`create_transfer`].
    pub async fn create_transfer(
        &self,
        new: &NewTransfer,
        now_ms: i64,
    ) -> Result<CreateResult, OpError> {
        self.in_own_tx(async |tx| create_transfer(tx, new, now_ms).await).await
    }

    /// [`post_transfer`] in its own transaction.
    ///
    /// # Errors
    /// See [`post_transfer`].
    pub async fn post_transfer(&self, id: &str, now_ms: i64) -> Result<PostResult, OpError> {
        self.in_own_tx(async |tx| post_transfer(tx, id, now_ms).await).await
    }

    /// [`void_transfer`] in its own transaction.
    ///
    /// # Errors
    /// See [`void_transfer`].
    pub async fn void_transfer(
        &self,
        id: &str,
        expected: Option<&NewTransfer>,
        now_ms: i64,
    ) -> Result<VoidResult, OpError> {
        self.in_own_tx(async |tx| void_transfer(tx, id, expected, now_ms).await).await
    }

    /// See [`account`].
    ///
    /// # Errors
    /// See [`account`].
    pub async fn account(&self, id: &str) -> Result<Option<Account>, OpError> {
        account(self.db(), id).await
    }

    /// See [`transfer`].
    ///
    /// # Errors
    /// See [`transfer`].
    pub async fn transfer(&self, id: &str) -> Result<Option<Transfer>, OpError> {
        transfer(self.db(), id).await
    }

    /// Run `op` in a write transaction of its own, committed when it succeeds
    /// (rolled back, when it fails, as the transaction is dropped).
    async fn in_own_tx<T>(
        &self,
        op: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let tx = self.begin().await?;
        let result = op(tx.tx()).await?;
        tx.commit().await?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::AccountFlags;
    use skald_testkit::{Backend, TempDatabase};

    /// A guard that no longer matches, or an insert a key refuses, is found
    /// (with what it writes) among writes that run together; writes that
    /// all change their row pass.
    async fn writes_that_change_no_row_are_found(backend: Backend) {
        let db = TempDatabase::new(backend).await.unwrap();
        let store = Store::connect(&db.url).await.unwrap();
        let flags = AccountFlags::default();
        let new = NewAccount { id: "a".into(), currency: "EUR".into(), flags };
        store.create_account(&new, 1).await.unwrap();
        let b = store.backend();
        let touch = |guard: i64| {
            let update = accounts::Entity::update_many()
                .col_expr(accounts::Column::DebitsPending, Expr::value(guard + 1))
                .filter(accounts::Column::Id.eq("a"))
                .filter(accounts::Column::DebitsPending.eq(guard))
                .build(b);
            (update, format!("account a at {guard}"))
        };
        let again = accounts::Entity::insert(account_row(&Account {
            id: "a".into(),
            currency: "EUR".into(),
            flags,
            balances: Balances::default(),
            created_at_ms: 1,
        }))
        .on_conflict(OnConflict::column(accounts::Column::Id).do_nothing().to_owned())
        .build(b);

        let tx = store.begin().await.unwrap();
        let passed = write_one_row_each(tx.tx(), vec![touch(0), touch(1)]).await.unwrap();
        assert_eq!(passed, None);
        let stale = write_one_row_each(tx.tx(), vec![touch(2), touch(0)]).await.unwrap();
        assert_eq!(stale, Some((1, "account a at 0".to_owned())));
        let refused = write_one_row_each(tx.tx(), vec![(again, "account a".into())]).await.unwrap();
        assert_eq!(refused, Some((0, "account a".to_owned())));
    }

    #[tokio::test]
    async fn writes_that_change_no_row_are_found_on_sqlite() {
        writes_that_change_no_row_are_found(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn writes_that_change_no_row_are_found_on_postgres() {
        writes_that_change_no_row_are_found(Backend::Postgres).await;
    }
}
