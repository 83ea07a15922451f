//! `ledger verify`: replay the event log and check the ledger is sound.
//!
//! In one read snapshot (so a running `ledger serve` does not disturb it):
//! 1. every event is read in `seq` order, checked with [`State::check`]
//!    (could the ledger have written it at that point?) and applied with
//!    [`State::apply`], the code live operations use;
//! 2. every `accounts` and `transfers` row is compared with the replayed one,
//!    field by field, and rows missing on either side are reported;
//! 3. the `accounts` rows must balance: per currency, posted debits equal
//!    posted credits and pending debits equal pending credits, and no row
//!    breaks its account's flag;
//! 4. pending holds older than a threshold are listed: a finished saga
//!    leaves none, so an old one is a saga stuck or lost.
//!
//! The report is sound when 1–3 find nothing. Memory grows with the number
//! of accounts and transfers (the replayed ledger is held in memory); rows
//! are read in pages and the lists in the report are capped.

use crate::events;
use crate::model::{Account, State, Transfer, TransferState};
use crate::ops::{account_from_row, transfer_from_row};
use crate::store::Store;
use crate::store::entities::{accounts, ledger_events, transfers};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, ModelTrait, QueryFilter, QueryOrder,
    QuerySelect, Value,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Rows read per query.
pub const PAGE_ROWS_MAX: u64 = 1000;
/// Most problems listed in a report (the rest are counted).
pub const PROBLEMS_MAX: usize = 1000;
/// Most stale holds listed in a report (the rest are counted).
pub const STALE_HOLDS_MAX: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the ledger: {0}")]
    Db(#[from] DbErr),
}

#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// A pending hold created this long ago or longer is listed as stale.
    pub pending_older_than_ms: u64,
    /// The time now, Unix milliseconds.
    pub now_ms: i64,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No problem found: the projections match the log and balance.
    pub sound: bool,
    pub events: u64,
    pub accounts: u64,
    pub transfers: u64,
    /// Totals of the `accounts` rows, per currency.
    pub currencies: Vec<CurrencyTotals>,
    pub problems: Vec<Problem>,
    /// Problems found beyond [`PROBLEMS_MAX`].
    pub problems_omitted: u64,
    pub pending_older_than_ms: u64,
    /// Pending holds at least `pending_older_than_ms` old, oldest first.
    pub stale_holds: Vec<StaleHold>,
    pub stale_holds_omitted: u64,
}

impl Report {
    /// Sound, and no hold is older than the threshold: `ledger verify` exits 0.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.sound && self.stale_holds.is_empty() && self.stale_holds_omitted == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub currency: String,
    pub debits_posted: i128,
    pub credits_posted: i128,
    pub debits_pending: i128,
    pub credits_pending: i128,
}

/// One thing wrong with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A stored event that cannot be read.
    UnreadableEvent {
        seq: i64,
        message: String,
    },
    /// An event the ledger could not have written at its place in the log
    /// (skipped by the replay).
    IllegalEvent {
        seq: i64,
        code: String,
        message: String,
    },
    /// The row's `account_id` / `transfer_id` column disagrees with its event.
    EventColumnsMismatch {
        seq: i64,
        message: String,
    },
    /// A projection field differs from the replayed value.
    AccountMismatch {
        account_id: String,
        field: String,
        projected: String,
        replayed: String,
    },
    TransferMismatch {
        transfer_id: String,
        field: String,
        projected: String,
        replayed: String,
    },
    /// The log has it, the projection does not.
    AccountMissing {
        account_id: String,
    },
    TransferMissing {
        transfer_id: String,
    },
    /// The projection has it, the log does not.
    AccountNotInLog {
        account_id: String,
    },
    TransferNotInLog {
        transfer_id: String,
    },
    /// A transfer row that cannot be read.
    UnreadableTransfer {
        transfer_id: String,
        message: String,
    },
    /// Debits and credits of one currency differ (`side`: posted or pending).
    Unbalanced {
        currency: String,
        side: String,
        debits: i128,
        credits: i128,
    },
    /// An account row breaks its balance flag.
    FlagViolated {
        account_id: String,
        flag: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnreadableEvent { seq, message } => {
                write!(f, "event {seq} cannot be read: {message}")
            }
            Self::IllegalEvent { seq, code, message } => {
                write!(f, "event {seq} could not have been written ({code}): {message}")
            }
            Self::EventColumnsMismatch { seq, message } => write!(f, "event {seq}: {message}"),
            Self::AccountMismatch { account_id, field, projected, replayed } => write!(
                f,
                "account {account_id}: {field} is {projected} in `accounts` but {replayed} by the log"
            ),
            Self::TransferMismatch { transfer_id, field, projected, replayed } => write!(
                f,
                "transfer {transfer_id}: {field} is {projected} in `transfers` but {replayed} by \
                 the log"
            ),
            Self::AccountMissing { account_id } => {
                write!(f, "account {account_id} is in the log but has no `accounts` row")
            }
            Self::TransferMissing { transfer_id } => {
                write!(f, "transfer {transfer_id} is in the log but has no `transfers` row")
            }
            Self::AccountNotInLog { account_id } => {
                write!(f, "account {account_id} has an `accounts` row but no event")
            }
            Self::TransferNotInLog { transfer_id } => {
                write!(f, "transfer {transfer_id} has a `transfers` row but no event")
            }
            Self::UnreadableTransfer { transfer_id, message } => {
                write!(f, "transfer {transfer_id}: {message}")
            }
            Self::Unbalanced { currency, side, debits, credits } => write!(
                f,
                "{currency} does not balance: {side} debits {debits} != {side} credits {credits}"
            ),
            Self::FlagViolated { account_id, flag } => {
                write!(f, "account {account_id} breaks its flag {flag}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleHold {
    pub transfer_id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: i64,
    pub currency: String,
    pub created_at_ms: i64,
    pub age_ms: i64,
}

/// Problems, capped.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    omitted: u64,
}

impl Problems {
    fn push(&mut self, problem: Problem) {
        if self.list.len() < PROBLEMS_MAX {
            self.list.push(problem);
        } else {
            self.omitted += 1;
        }
    }
}

/// Replay the log and check the projections against it.
///
/// # Errors
/// Only when the database cannot be read; what is wrong with the ledger is
/// in the [`Report`].
pub async fn verify(store: &Store, options: VerifyOptions) -> Result<Report, VerifyError> {
    let tx = store.begin_snapshot().await?;
    let mut problems = Problems::default();

    // 1. Replay.
    let mut state = State::default();
    let events = read_all(&tx, ledger_events::Column::Seq, i64::MIN, |row| {
        replay_one(&mut state, &row, &mut problems);
    })
    .await?;

    // 2 and 3. Compare the projections; total them.
    let mut seen = HashSet::new();
    let mut totals: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
    let account_rows = read_all(&tx, accounts::Column::Id, "", |row| {
        let projected = account_from_row(row);
        add_totals(&mut totals, &projected);
        if let Some(flag) = projected.violated_flag() {
            problems.push(Problem::FlagViolated {
                account_id: projected.id.clone(),
                flag: flag.to_owned(),
            });
        }
        match state.accounts.get(&projected.id) {
            Some(replayed) => compare_accounts(&projected, replayed, &mut problems),
            None => problems.push(Problem::AccountNotInLog { account_id: projected.id.clone() }),
        }
        seen.insert(projected.id);
    })
    .await?;
    for id in missing(&state.accounts, &seen) {
        problems.push(Problem::AccountMissing { account_id: id.clone() });
    }
    for t in totals.values() {
        for (side, debits, credits) in [
            ("posted", t.debits_posted, t.credits_posted),
            ("pending", t.debits_pending, t.credits_pending),
        ] {
            if debits != credits {
                problems.push(Problem::Unbalanced {
                    currency: t.currency.clone(),
                    side: side.to_owned(),
                    debits,
                    credits,
                });
            }
        }
    }

    let mut seen = HashSet::new();
    let transfer_rows = read_all(&tx, transfers::Column::Id, "", |row| {
        let id = row.id.clone();
        seen.insert(id.clone());
        let projected = match transfer_from_row(row) {
            Ok(t) => t,
            Err(e) => {
                problems
                    .push(Problem::UnreadableTransfer { transfer_id: id, message: e.to_string() });
                return;
            }
        };
        match state.transfers.get(&id) {
            Some(replayed) => compare_transfers(&projected, replayed, &mut problems),
            None => problems.push(Problem::TransferNotInLog { transfer_id: id }),
        }
    })
    .await?;
    for id in missing(&state.transfers, &seen) {
        problems.push(Problem::TransferMissing { transfer_id: id.clone() });
    }
    drop(tx); // read-only: nothing to commit

    // 4. Old holds, by the log.
    let cutoff = options
        .now_ms
        .saturating_sub(i64::try_from(options.pending_older_than_ms).unwrap_or(i64::MAX));
    let mut stale: Vec<&Transfer> = state
        .transfers
        .values()
        .filter(|t| t.state == TransferState::Pending && t.created_at_ms <= cutoff)
        .collect();
    stale.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    let stale_holds_omitted = stale.len().saturating_sub(STALE_HOLDS_MAX) as u64;
    let stale_holds = stale
        .into_iter()
        .take(STALE_HOLDS_MAX)
        .map(|t| StaleHold {
            transfer_id: t.id.clone(),
            debit_account_id: t.debit_account_id.clone(),
            credit_account_id: t.credit_account_id.clone(),
            amount: t.amount,
            currency: t.currency.clone(),
            created_at_ms: t.created_at_ms,
            age_ms: options.now_ms.saturating_sub(t.created_at_ms),
        })
        .collect();

    Ok(Report {
        sound: problems.list.is_empty() && problems.omitted == 0,
        events,
        accounts: account_rows,
        transfers: transfer_rows,
        currencies: totals.into_values().collect(),
        problems: problems.list,
        problems_omitted: problems.omitted,
        pending_older_than_ms: options.pending_older_than_ms,
        stale_holds,
        stale_holds_omitted,
    })
}

/// Read every row of `key`'s table in pages of [`PAGE_ROWS_MAX`], in `key`
/// order from after `start`, handing each row to `each`; how many rows
/// there were.
async fn read_all<C>(
    tx: &DatabaseTransaction,
    key: C,
    start: impl Into<Value>,
    mut each: impl FnMut(<C::EntityName as EntityTrait>::Model),
) -> Result<u64, DbErr>
where
    C: ColumnTrait,
    C::EntityName: EntityTrait<Column = C>,
{
    let (mut after, mut rows) = (start.into(), 0_u64);
    loop {
        let page = C::EntityName::find()
            .filter(key.gt(after))
            .order_by_asc(key)
            .limit(PAGE_ROWS_MAX)
            .all(tx)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.get(key);
        for row in page {
            rows += 1;
            each(row);
        }
    }
    Ok(rows)
}

/// The ids the log has and the projection does not (`seen`), in order.
fn missing<'a, T>(replayed: &'a HashMap<String, T>, seen: &HashSet<String>) -> Vec<&'a String> {
    let mut missing: Vec<&String> = replayed.keys().filter(|id| !seen.contains(*id)).collect();
    missing.sort();
    missing
}

/// Check one stored event and apply it if the ledger could have written it.
fn replay_one(state: &mut State, row: &ledger_events::Model, problems: &mut Problems) {
    let event = match events::decode(&row.event) {
        Ok(event) => event,
        Err(e) => {
            problems.push(Problem::UnreadableEvent { seq: row.seq, message: e.to_string() });
            return;
        }
    };
    if event.account_id() != row.account_id.as_deref()
        || event.transfer_id() != row.transfer_id.as_deref()
    {
        problems.push(Problem::EventColumnsMismatch {
            seq: row.seq,
            message: format!(
                "its columns say account {:?}, transfer {:?}; its body says account {:?}, \
                 transfer {:?}",
                row.account_id,
                row.transfer_id,
                event.account_id(),
                event.transfer_id()
            ),
        });
    }
    match state.check(&event) {
        Ok(()) => state.apply(&event, row.at_ms),
        Err(e) => problems.push(Problem::IllegalEvent {
            seq: row.seq,
            code: e.code().to_owned(),
            message: e.to_string(),
        }),
    }
}

fn add_totals(totals: &mut BTreeMap<String, CurrencyTotals>, a: &Account) {
    let t = totals.entry(a.currency.clone()).or_insert_with(|| CurrencyTotals {
        currency: a.currency.clone(),
        debits_posted: 0,
        credits_posted: 0,
        debits_pending: 0,
        credits_pending: 0,
    });
    let b = a.balances;
    t.debits_posted += i128::from(b.debits_posted);
    t.credits_posted += i128::from(b.credits_posted);
    t.debits_pending += i128::from(b.debits_pending);
    t.credits_pending += i128::from(b.credits_pending);
}

/// Report each field in which the projected account `p` differs from the
/// replayed `r`.
fn compare_accounts(p: &Account, r: &Account, problems: &mut Problems) {
    let (pb, rb) = (&p.balances, &r.balances);
    let fields = [
        ("currency", p.currency.clone(), r.currency.clone()),
        (
            "debits_must_not_exceed_credits",
            p.flags.debits_must_not_exceed_credits.to_string(),
            r.flags.debits_must_not_exceed_credits.to_string(),
        ),
        (
            "credits_must_not_exceed_debits",
            p.flags.credits_must_not_exceed_debits.to_string(),
            r.flags.credits_must_not_exceed_debits.to_string(),
        ),
        ("debits_pending", pb.debits_pending.to_string(), rb.debits_pending.to_string()),
        ("debits_posted", pb.debits_posted.to_string(), rb.debits_posted.to_string()),
        ("credits_pending", pb.credits_pending.to_string(), rb.credits_pending.to_string()),
        ("credits_posted", pb.credits_posted.to_string(), rb.credits_posted.to_string()),
        ("created_at_ms", p.created_at_ms.to_string(), r.created_at_ms.to_string()),
    ];
    for (field, projected, replayed) in mismatches(fields) {
        let (account_id, field) = (p.id.clone(), field.to_owned());
        problems.push(Problem::AccountMismatch { account_id, field, projected, replayed });
    }
}

/// Report each field in which the projected transfer `p` differs from the
/// replayed `r`.
fn compare_transfers(p: &Transfer, r: &Transfer, problems: &mut Problems) {
    let opt = |v: Option<i64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let fields = [
        ("debit_account_id", p.debit_account_id.clone(), r.debit_account_id.clone()),
        ("credit_account_id", p.credit_account_id.clone(), r.credit_account_id.clone()),
        ("amount", p.amount.to_string(), r.amount.to_string()),
        ("currency", p.currency.clone(), r.currency.clone()),
        ("pending", p.pending.to_string(), r.pending.to_string()),
        ("state", p.state.to_string(), r.state.to_string()),
        ("created_at_ms", p.created_at_ms.to_string(), r.created_at_ms.to_string()),
        ("resolved_at_ms", opt(p.resolved_at_ms), opt(r.resolved_at_ms)),
    ];
    for (field, projected, replayed) in mismatches(fields) {
        let (transfer_id, field) = (p.id.clone(), field.to_owned());
        problems.push(Problem::TransferMismatch { transfer_id, field, projected, replayed });
    }
}

/// The `(field, projected, replayed)` values that differ.
fn mismatches<const N: usize>(
    fields: [(&'static str, String, String); N],
) -> impl Iterator<Item = (&'static str, String, String)> {
    fields.into_iter().filter(|(_, projected, replayed)| projected != replayed)
}
