//! The ledger's pure core: accounts, transfers, their limits, and the rules.
//!
//! [`State`] is the ledger as its event log says it is (or the part of it
//! that one operation has locked). `decide_*` say whether a change is allowed
//! and, if so, which event records it; [`State::apply`] is what an event
//! does, and cannot fail. The database layer (`ops`) runs the same `decide`
//! and `apply` on the rows it locked, and `verify` replays the whole log
//! through them, so live operation and replay cannot disagree. No database,
//! no clock: times are inputs.
//!
//! Money is integer minor units (`i64`, cents), never floats. Each transfer
//! debits one account and credits another of the same currency by the same
//! amount. A pending transfer (a hold) reserves its amount as
//! `debits_pending` / `credits_pending` until it is posted or voided, once.
//!
//! | module | owns |
//! |---|---|
//! | [`account`] | accounts: flags, balances, the request to open one |
//! | [`transfer`] | transfers: their life (`pending` → `posted` / `voided`), the request to make one |
//! | [`refusal`] | why the ledger says no, and the checks of ids and currencies |
//! | [`state`] | the ledger as the log says it is: `decide_*`, `check`, `apply` |

pub mod account;
pub mod refusal;
pub mod state;
pub mod transfer;

pub use account::{Account, AccountFlags, Balances, NewAccount};
pub use refusal::{Refusal, check_account_id, check_currency, check_transfer_id};
pub use state::{Decision, IllegalEvent, State};
pub use transfer::{NewTransfer, Transfer, TransferState};

/// Longest account id, in bytes.
pub const ACCOUNT_ID_LEN_MAX: usize = 64;
/// Longest transfer id, in bytes: room for a saga id (up to 128) and a suffix.
pub const TRANSFER_ID_LEN_MAX: usize = 192;
/// Largest amount of one transfer, in minor units (10^15: ten trillion in cents).
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;

/// The names of the fields that differ (`true`), in the order given: what a
/// repeated request with the same id changed.
fn differing<const N: usize>(fields: [(&'static str, bool); N]) -> Vec<&'static str> {
    fields.into_iter().filter(|(_, differs)| *differs).map(|(name, _)| name).collect()
}
