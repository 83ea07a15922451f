//! Why the ledger says no, and the checks of the fields every request has.

use super::{ACCOUNT_ID_LEN_MAX, AMOUNT_MAX, TRANSFER_ID_LEN_MAX};

/// Why the ledger refuses a change: the caller's mistake or a business rule,
/// never a fault. `code()` is the stable, machine-readable name (the `code`
/// of a `failed` reply); the message says what it means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("account id `{id}` is not valid: {reason}")]
    InvalidAccountId { id: String, reason: String },
    #[error("transfer id `{id}` is not valid: {reason}")]
    InvalidTransferId { id: String, reason: String },
    #[error("currency `{currency}` is not valid: use a 3-letter upper-case code such as EUR")]
    InvalidCurrency { currency: String },
    #[error("amount {amount} is not valid: it must be 1..={AMOUNT_MAX} minor units")]
    InvalidAmount { amount: i64 },
    #[error(
        "an account cannot have both debits_must_not_exceed_credits and \
         credits_must_not_exceed_debits"
    )]
    FlagsAreMutuallyExclusive,
    #[error("a transfer must debit and credit two different accounts, not `{account_id}` twice")]
    AccountsMustBeDifferent { account_id: String },
    #[error("account `{account_id}` already exists with a different {}", fields.join(" and "))]
    AccountExistsWithDifferentFields { account_id: String, fields: Vec<&'static str> },
    #[error("transfer `{transfer_id}` already exists with a different {}", fields.join(" and "))]
    TransferExistsWithDifferentFields { transfer_id: String, fields: Vec<&'static str> },
    #[error("the debit account `{account_id}` does not exist")]
    DebitAccountNotFound { account_id: String },
    #[error("the credit account `{account_id}` does not exist")]
    CreditAccountNotFound { account_id: String },
    #[error("account `{account_id}` holds {account_currency}, not {currency}")]
    CurrencyMismatch { account_id: String, account_currency: String, currency: String },
    #[error(
        "insufficient funds on account `{account_id}`: {amount} requested, {available} available"
    )]
    InsufficientFunds { account_id: String, amount: i64, available: i128 },
    #[error(
        "account `{account_id}` cannot be credited {amount}: its credits may not exceed its \
         debits, and only {room} is left"
    )]
    ExceedsDebits { account_id: String, amount: i64, room: i128 },
    #[error("a balance of account `{account_id}` would overflow")]
    OverflowsBalance { account_id: String },
    #[error("transfer `{transfer_id}` does not exist")]
    TransferNotFound { transfer_id: String },
    #[error("transfer `{transfer_id}` was not created pending, so it cannot be posted or voided")]
    TransferNotPending { transfer_id: String },
    #[error("transfer `{transfer_id}` is already posted and cannot be voided")]
    TransferPosted { transfer_id: String },
    #[error("transfer `{transfer_id}` was voided and cannot be posted or held again")]
    TransferVoided { transfer_id: String },
}

impl Refusal {
    /// The stable, machine-readable name of the refusal.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidAccountId { .. } => "invalid_account_id",
            Self::InvalidTransferId { .. } => "invalid_transfer_id",
            Self::InvalidCurrency { .. } => "invalid_currency",
            Self::InvalidAmount { .. } => "invalid_amount",
            Self::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            Self::AccountsMustBeDifferent { .. } => "accounts_must_be_different",
            Self::AccountExistsWithDifferentFields { .. }
            | Self::TransferExistsWithDifferentFields { .. } => "exists_with_different_fields",
            Self::DebitAccountNotFound { .. } => "debit_account_not_found",
            Self::CreditAccountNotFound { .. } => "credit_account_not_found",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::ExceedsDebits { .. } => "exceeds_debits",
            Self::OverflowsBalance { .. } => "overflows_balance",
            Self::TransferNotFound { .. } => "transfer_not_found",
            Self::TransferNotPending { .. } => "transfer_not_pending",
            Self::TransferPosted { .. } => "transfer_posted",
            Self::TransferVoided { .. } => "transfer_voided",
        }
    }
}

fn check_id(id: &str, len_max: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.len() > len_max {
        return Err(format!("it is {} bytes long, the limit is {len_max}", id.len()));
    }
    if let Some(c) =
        id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!("`{c}` is not allowed; use letters, digits, `_`, `-`, `.` and `:`"));
    }
    Ok(())
}

/// An account id: 1..=64 bytes of letters, digits, `_`, `-`, `.`, `:`.
///
/// # Errors
/// [`Refusal::InvalidAccountId`].
pub fn check_account_id(id: &str) -> Result<(), Refusal> {
    check_id(id, ACCOUNT_ID_LEN_MAX)
        .map_err(|reason| Refusal::InvalidAccountId { id: clip_id(id), reason })
}

/// A transfer id: 1..=192 bytes of letters, digits, `_`, `-`, `.`, `:`.
///
/// # Errors
/// [`Refusal::InvalidTransferId`].
pub fn check_transfer_id(id: &str) -> Result<(), Refusal> {
    check_id(id, TRANSFER_ID_LEN_MAX)
        .map_err(|reason| Refusal::InvalidTransferId { id: clip_id(id), reason })
}

/// A currency: three upper-case ASCII letters (ISO 4217 style).
///
/// # Errors
/// [`Refusal::InvalidCurrency`].
pub fn check_currency(currency: &str) -> Result<(), Refusal> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Refusal::InvalidCurrency { currency: clip_id(currency) })
    }
}

/// An id as quoted in a refusal: long ones are cut, so a refusal stays small.
fn clip_id(id: &str) -> String {
    const QUOTED_MAX: usize = TRANSFER_ID_LEN_MAX + 8;
    if id.len() <= QUOTED_MAX {
        return id.to_owned();
    }
    let mut end = QUOTED_MAX;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &id[..end])
}
