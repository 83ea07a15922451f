//! Transfers: where one is in its life, and the request to make one.

use super::AMOUNT_MAX;
use super::differing;
use super::refusal::{Refusal, check_account_id, check_currency, check_transfer_id};
use serde::{Deserialize, Serialize};

/// Where a transfer is in its life. A single-phase transfer is born `posted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Pending,
    Posted,
    Voided,
}

impl TransferState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Posted => "posted",
            Self::Voided => "voided",
        }
    }

    /// The state stored as `text`, if it is one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "posted" => Some(Self::Posted),
            "voided" => Some(Self::Voided),
            _ => None,
        }
    }
}

impl std::fmt::Display for TransferState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: i64,
    pub currency: String,
    /// Created as a two-phase (pending) transfer, to be posted or voided.
    pub pending: bool,
    pub state: TransferState,
    pub created_at_ms: i64,
    /// When it was posted or voided (two-phase transfers only).
    pub resolved_at_ms: Option<i64>,
}

/// A request to move money: single-phase (`pending: false`, posted at once)
/// or a hold (`pending: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransfer {
    pub id: String,
    pub debit_account_id: String,
    pub credit_account_id: String,
    pub amount: i64,
    pub currency: String,
    pub pending: bool,
}

impl NewTransfer {
    /// Check the fields on their own, before anything is read.
    ///
    /// # Errors
    /// The first field that is not acceptable.
    pub fn validate(&self) -> Result<(), Refusal> {
        check_transfer_id(&self.id)?;
        check_account_id(&self.debit_account_id)?;
        check_account_id(&self.credit_account_id)?;
        check_currency(&self.currency)?;
        if !(1..=AMOUNT_MAX).contains(&self.amount) {
            return Err(Refusal::InvalidAmount { amount: self.amount });
        }
        if self.debit_account_id == self.credit_account_id {
            return Err(Refusal::AccountsMustBeDifferent {
                account_id: self.debit_account_id.clone(),
            });
        }
        Ok(())
    }

    /// Names of the fields in which `transfer` differs from this request.
    #[must_use]
    pub fn differences(&self, transfer: &Transfer) -> Vec<&'static str> {
        differing([
            ("debit_account", self.debit_account_id != transfer.debit_account_id),
            ("credit_account", self.credit_account_id != transfer.credit_account_id),
            ("amount", self.amount != transfer.amount),
            ("currency", self.currency != transfer.currency),
            ("pending", self.pending != transfer.pending),
        ])
    }
}
