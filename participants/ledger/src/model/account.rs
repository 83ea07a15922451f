//! Accounts: their balance rules, their four running totals, and the request
//! to open one.

use super::differing;
use super::refusal::{Refusal, check_account_id, check_currency};
use serde::{Deserialize, Serialize};

/// Balance rules of an account, as in TigerBeetle. At most one may be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFlags {
    /// Debits (posted and pending) may never exceed posted credits: a
    /// customer's wallet, which cannot be overdrawn.
    #[serde(default)]
    pub debits_must_not_exceed_credits: bool,
    /// Credits (posted and pending) may never exceed posted debits.
    #[serde(default)]
    pub credits_must_not_exceed_debits: bool,
}

impl AccountFlags {
    /// The names of the flags set, for people.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.debits_must_not_exceed_credits {
            names.push("debits_must_not_exceed_credits");
        }
        if self.credits_must_not_exceed_debits {
            names.push("credits_must_not_exceed_debits");
        }
        names
    }
}

/// An account's four running totals, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
}

impl Balances {
    /// Posted credits minus posted debits.
    #[must_use]
    pub fn balance(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }

    /// What a debit may still take under `debits_must_not_exceed_credits`:
    /// posted credits minus posted and pending debits.
    #[must_use]
    pub fn available(&self) -> i128 {
        self.balance() - i128::from(self.debits_pending)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub currency: String,
    pub flags: AccountFlags,
    pub balances: Balances,
    pub created_at_ms: i64,
}

impl Account {
    /// The flag these balances break, if any. Never `Some` for a ledger that
    /// only `decide` has written.
    #[must_use]
    pub fn violated_flag(&self) -> Option<&'static str> {
        let b = &self.balances;
        let debits = i128::from(b.debits_posted) + i128::from(b.debits_pending);
        let credits = i128::from(b.credits_posted) + i128::from(b.credits_pending);
        if self.flags.debits_must_not_exceed_credits && debits > i128::from(b.credits_posted) {
            return Some("debits_must_not_exceed_credits");
        }
        if self.flags.credits_must_not_exceed_debits && credits > i128::from(b.debits_posted) {
            return Some("credits_must_not_exceed_debits");
        }
        None
    }
}

/// A request to open an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub id: String,
    pub currency: String,
    pub flags: AccountFlags,
}

impl NewAccount {
    /// Check the fields on their own, before anything is read.
    ///
    /// # Errors
    /// The first field that is not acceptable.
    pub fn validate(&self) -> Result<(), Refusal> {
        check_account_id(&self.id)?;
        check_currency(&self.currency)?;
        if self.flags.debits_must_not_exceed_credits && self.flags.credits_must_not_exceed_debits {
            return Err(Refusal::FlagsAreMutuallyExclusive);
        }
        Ok(())
    }

    /// Names of the fields in which `account` differs from this request.
    pub(super) fn differences(&self, account: &Account) -> Vec<&'static str> {
        differing([
            ("currency", self.currency != account.currency),
            ("flags", self.flags != account.flags),
        ])
    }
}
