//! The ledger as its event log says it is, and its rules: `decide_*` say
//! whether a change is allowed and which event records it; [`State::apply`]
//! is what an event does, and cannot fail; [`State::check`] asks whether
//! `decide` could have written an event (replay).

use super::refusal::check_transfer_id;
use super::{Account, Balances, NewAccount, NewTransfer, Refusal, Transfer, TransferState};
use crate::events::LedgerEvent;
use std::collections::HashMap;

/// What a `decide_*` concluded for an acceptable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record this event (then [`State::apply`] it).
    Append(LedgerEvent),
    /// Already done: an exact repeat (`exists`, `already posted`, `already voided`).
    Unchanged,
}

/// Why an event in the log could not have been written by `decide`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalEvent {
    #[error("the ledger would have refused it: {0}")]
    Refused(#[from] Refusal),
    #[error("it repeats a change already made")]
    Repeated,
}

impl IllegalEvent {
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.code(),
            Self::Repeated => "repeated",
        }
    }
}

/// Accounts and transfers: the whole ledger (when replayed) or the rows one
/// operation locked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub accounts: HashMap<String, Account>,
    pub transfers: HashMap<String, Transfer>,
}

impl State {
    pub fn insert_account(&mut self, account: Account) {
        self.accounts.insert(account.id.clone(), account);
    }

    pub fn insert_transfer(&mut self, transfer: Transfer) {
        self.transfers.insert(transfer.id.clone(), transfer);
    }

    /// Open an account, unless one with this id exists.
    ///
    /// # Errors
    /// Invalid fields, or an account with this id and other fields.
    pub fn decide_create_account(&self, new: &NewAccount) -> Result<Decision, Refusal> {
        new.validate()?;
        if let Some(existing) = self.accounts.get(&new.id) {
            return repeat_or_refuse(new.differences(existing), |fields| {
                Refusal::AccountExistsWithDifferentFields { account_id: new.id.clone(), fields }
            });
        }
        Ok(Decision::Append(LedgerEvent::AccountCreated {
            account_id: new.id.clone(),
            currency: new.currency.clone(),
            flags: new.flags,
        }))
    }

    /// Create a transfer (posted at once, or pending), unless one with this id
    /// exists. Needs both accounts in `self`.
    ///
    /// # Errors
    /// Invalid fields, an existing transfer with other fields, a missing
    /// account, another currency, a flag the transfer would break, overflow.
    pub fn decide_create_transfer(&self, new: &NewTransfer) -> Result<Decision, Refusal> {
        new.validate()?;
        if let Some(existing) = self.transfers.get(&new.id) {
            return repeat_or_refuse(new.differences(existing), |fields| {
                Refusal::TransferExistsWithDifferentFields { transfer_id: new.id.clone(), fields }
            });
        }
        let debit = self.accounts.get(&new.debit_account_id).ok_or_else(|| {
            Refusal::DebitAccountNotFound { account_id: new.debit_account_id.clone() }
        })?;
        let credit = self.accounts.get(&new.credit_account_id).ok_or_else(|| {
            Refusal::CreditAccountNotFound { account_id: new.credit_account_id.clone() }
        })?;
        for account in [debit, credit] {
            if account.currency != new.currency {
                return Err(Refusal::CurrencyMismatch {
                    account_id: account.id.clone(),
                    account_currency: account.currency.clone(),
                    currency: new.currency.clone(),
                });
            }
        }
        let amount = i128::from(new.amount);
        let max = i128::from(i64::MAX);

        let d = &debit.balances;
        let debits = i128::from(d.debits_posted) + i128::from(d.debits_pending) + amount;
        if debits > max {
            return Err(Refusal::OverflowsBalance { account_id: debit.id.clone() });
        }
        if debit.flags.debits_must_not_exceed_credits && debits > i128::from(d.credits_posted) {
            return Err(Refusal::InsufficientFunds {
                account_id: debit.id.clone(),
                amount: new.amount,
                available: d.available().max(0),
            });
        }

        let c = &credit.balances;
        let credits = i128::from(c.credits_posted) + i128::from(c.credits_pending) + amount;
        if credits > max {
            return Err(Refusal::OverflowsBalance { account_id: credit.id.clone() });
        }
        if credit.flags.credits_must_not_exceed_debits && credits > i128::from(c.debits_posted) {
            let room = i128::from(c.debits_posted)
                - i128::from(c.credits_posted)
                - i128::from(c.credits_pending);
            return Err(Refusal::ExceedsDebits {
                account_id: credit.id.clone(),
                amount: new.amount,
                room: room.max(0),
            });
        }
        Ok(Decision::Append(LedgerEvent::TransferCreated {
            transfer_id: new.id.clone(),
            debit_account_id: new.debit_account_id.clone(),
            credit_account_id: new.credit_account_id.clone(),
            amount: new.amount,
            currency: new.currency.clone(),
            pending: new.pending,
        }))
    }

    /// Post a pending transfer; `Unchanged` when it is already posted.
    ///
    /// # Errors
    /// Not found, not a pending transfer, or voided.
    pub fn decide_post(&self, transfer_id: &str) -> Result<Decision, Refusal> {
        check_transfer_id(transfer_id)?;
        let t = self.pending_transfer(transfer_id)?;
        match t.state {
            TransferState::Pending => {
                Ok(Decision::Append(LedgerEvent::TransferPosted { transfer_id: t.id.clone() }))
            }
            TransferState::Posted => Ok(Decision::Unchanged),
            TransferState::Voided => Err(Refusal::TransferVoided { transfer_id: t.id.clone() }),
        }
    }

    /// Void a pending transfer; `Unchanged` when it is already voided. With
    /// `expected`, the transfer must also have been created by that request.
    ///
    /// # Errors
    /// Not found, other fields than expected, not a pending transfer, or posted.
    pub fn decide_void(
        &self,
        transfer_id: &str,
        expected: Option<&NewTransfer>,
    ) -> Result<Decision, Refusal> {
        check_transfer_id(transfer_id)?;
        let t = self.pending_transfer(transfer_id)?;
        if let Some(expected) = expected {
            let fields = expected.differences(t);
            if !fields.is_empty() {
                return Err(Refusal::TransferExistsWithDifferentFields {
                    transfer_id: t.id.clone(),
                    fields,
                });
            }
        }
        match t.state {
            TransferState::Pending => {
                Ok(Decision::Append(LedgerEvent::TransferVoided { transfer_id: t.id.clone() }))
            }
            TransferState::Voided => Ok(Decision::Unchanged),
            TransferState::Posted => Err(Refusal::TransferPosted { transfer_id: t.id.clone() }),
        }
    }

    fn pending_transfer(&self, transfer_id: &str) -> Result<&Transfer, Refusal> {
        let t = self
            .transfers
            .get(transfer_id)
            .ok_or_else(|| Refusal::TransferNotFound { transfer_id: transfer_id.to_owned() })?;
        if t.pending {
            Ok(t)
        } else {
            Err(Refusal::TransferNotPending { transfer_id: t.id.clone() })
        }
    }

    /// Whether `decide` could have written `event` in this state (replay
    /// checks every event of the log with this before applying it).
    ///
    /// # Errors
    /// The refusal `decide` would have given, or [`IllegalEvent::Repeated`].
    pub fn check(&self, event: &LedgerEvent) -> Result<(), IllegalEvent> {
        let decision = match Recorded::of(event) {
            Recorded::Account(new) => self.decide_create_account(&new)?,
            Recorded::Transfer(new) => self.decide_create_transfer(&new)?,
            Recorded::Post(transfer_id) => self.decide_post(transfer_id)?,
            Recorded::Void(transfer_id) => self.decide_void(transfer_id, None)?,
        };
        match decision {
            Decision::Append(decided) if &decided == event => Ok(()),
            Decision::Append(_) | Decision::Unchanged => Err(IllegalEvent::Repeated),
        }
    }

    /// What `event`, recorded at `at_ms`, does to the ledger. Never fails: an
    /// event about something missing changes only what exists (replay reports
    /// such an event through [`State::check`] first).
    pub fn apply(&mut self, event: &LedgerEvent, at_ms: i64) {
        match Recorded::of(event) {
            Recorded::Account(new) => {
                self.accounts.entry(new.id.clone()).or_insert_with(|| Account {
                    id: new.id,
                    currency: new.currency,
                    flags: new.flags,
                    balances: Balances::default(),
                    created_at_ms: at_ms,
                });
            }
            Recorded::Transfer(new) => {
                let (amount, pending) = (new.amount, new.pending);
                if let Some(a) = self.accounts.get_mut(&new.debit_account_id) {
                    let b = &mut a.balances;
                    let field = if pending { &mut b.debits_pending } else { &mut b.debits_posted };
                    *field = field.saturating_add(amount);
                }
                if let Some(a) = self.accounts.get_mut(&new.credit_account_id) {
                    let b = &mut a.balances;
                    let field =
                        if pending { &mut b.credits_pending } else { &mut b.credits_posted };
                    *field = field.saturating_add(amount);
                }
                self.transfers.entry(new.id.clone()).or_insert_with(|| Transfer {
                    id: new.id,
                    debit_account_id: new.debit_account_id,
                    credit_account_id: new.credit_account_id,
                    amount,
                    currency: new.currency,
                    pending,
                    state: if pending { TransferState::Pending } else { TransferState::Posted },
                    created_at_ms: at_ms,
                    resolved_at_ms: None,
                });
            }
            Recorded::Post(transfer_id) => self.resolve(transfer_id, TransferState::Posted, at_ms),
            Recorded::Void(transfer_id) => self.resolve(transfer_id, TransferState::Voided, at_ms),
        }
    }

    /// Move a pending transfer's amount out of pending: into posted, or nowhere.
    fn resolve(&mut self, transfer_id: &str, to: TransferState, at_ms: i64) {
        let Some(t) = self.transfers.get_mut(transfer_id) else { return };
        if t.state != TransferState::Pending {
            return;
        }
        t.state = to;
        t.resolved_at_ms = Some(at_ms);
        let (amount, posted) = (t.amount, to == TransferState::Posted);
        if let Some(a) = self.accounts.get_mut(&t.debit_account_id) {
            let b = &mut a.balances;
            b.debits_pending = b.debits_pending.saturating_sub(amount);
            if posted {
                b.debits_posted = b.debits_posted.saturating_add(amount);
            }
        }
        if let Some(a) = self.accounts.get_mut(&t.credit_account_id) {
            let b = &mut a.balances;
            b.credits_pending = b.credits_pending.saturating_sub(amount);
            if posted {
                b.credits_posted = b.credits_posted.saturating_add(amount);
            }
        }
    }
}

/// An event read as the request that `decide` turned into it: `check` asks
/// `decide` that request again, `apply` carries it out.
enum Recorded<'a> {
    Account(NewAccount),
    Transfer(NewTransfer),
    Post(&'a str),
    Void(&'a str),
}

impl<'a> Recorded<'a> {
    fn of(event: &'a LedgerEvent) -> Self {
        match event {
            LedgerEvent::AccountCreated { account_id, currency, flags } => {
                Self::Account(NewAccount {
                    id: account_id.clone(),
                    currency: currency.clone(),
                    flags: *flags,
                })
            }
            LedgerEvent::TransferCreated {
                transfer_id,
                debit_account_id,
                credit_account_id,
                amount,
                currency,
                pending,
            } => Self::Transfer(NewTransfer {
                id: transfer_id.clone(),
                debit_account_id: debit_account_id.clone(),
                credit_account_id: credit_account_id.clone(),
                amount: *amount,
                currency: currency.clone(),
                pending: *pending,
            }),
            LedgerEvent::TransferPosted { transfer_id } => Self::Post(transfer_id),
            LedgerEvent::TransferVoided { transfer_id } => Self::Void(transfer_id),
        }
    }
}

/// The answer to a create whose id is taken: an exact repeat changes
/// nothing; a request that differs in `fields` is refused.
fn repeat_or_refuse(
    fields: Vec<&'static str>,
    refuse: impl FnOnce(Vec<&'static str>) -> Refusal,
) -> Result<Decision, Refusal> {
    if fields.is_empty() { Ok(Decision::Unchanged) } else { Err(refuse(fields)) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::model::{AMOUNT_MAX, AccountFlags};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn account(id: &str, currency: &str, flags: AccountFlags) -> NewAccount {
        NewAccount { id: id.into(), currency: currency.into(), flags }
    }

    const WALLET: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: false,
    };

    fn transfer(id: &str, debit: &str, credit: &str, amount: i64, pending: bool) -> NewTransfer {
        NewTransfer {
            id: id.into(),
            debit_account_id: debit.into(),
            credit_account_id: credit.into(),
            amount,
            currency: "EUR".into(),
            pending,
        }
    }

    /// Decide and apply, as `ops` does: the event appended, if any.
    fn run(
        state: &mut State,
        decide: impl FnOnce(&State) -> Result<Decision, Refusal>,
    ) -> Result<Option<LedgerEvent>, Refusal> {
        match decide(state)? {
            Decision::Append(event) => {
                state.check(&event).unwrap();
                state.apply(&event, 1);
                Ok(Some(event))
            }
            Decision::Unchanged => Ok(None),
        }
    }

    /// Given a bank (no flags) and a wallet funded with 100 EUR.
    fn funded() -> State {
        let mut s = State::default();
        run(&mut s, |s| s.decide_create_account(&account("bank", "EUR", AccountFlags::default())))
            .unwrap();
        run(&mut s, |s| s.decide_create_account(&account("alice", "EUR", WALLET))).unwrap();
        run(&mut s, |s| s.decide_create_transfer(&transfer("fund", "bank", "alice", 100, false)))
            .unwrap();
        s
    }

    #[test]
    fn a_hold_reserves_and_a_post_moves_it_to_posted_once() {
        let mut s = funded();
        run(&mut s, |s| s.decide_create_transfer(&transfer("h", "alice", "bank", 60, true)))
            .unwrap();
        assert_eq!(s.accounts["alice"].balances.available(), 40);
        assert_eq!(s.accounts["alice"].balances.debits_pending, 60);
        assert!(run(&mut s, |s| s.decide_post("h")).unwrap().is_some());
        assert_eq!(run(&mut s, |s| s.decide_post("h")), Ok(None), "a second post changes nothing");
        let b = s.accounts["alice"].balances;
        assert_eq!((b.debits_pending, b.debits_posted, b.credits_posted), (0, 60, 100));
        assert_eq!(s.decide_void("h", None).unwrap_err().code(), "transfer_posted");
    }

    #[test]
    fn a_void_releases_the_hold_once_and_forbids_a_post() {
        let mut s = funded();
        run(&mut s, |s| s.decide_create_transfer(&transfer("h", "alice", "bank", 60, true)))
            .unwrap();
        assert!(run(&mut s, |s| s.decide_void("h", None)).unwrap().is_some());
        assert_eq!(run(&mut s, |s| s.decide_void("h", None)), Ok(None));
        assert_eq!(s.accounts["alice"].balances.available(), 100);
        assert_eq!(s.accounts["bank"].balances.credits_pending, 0);
        assert_eq!(s.decide_post("h").unwrap_err().code(), "transfer_voided");
    }

    #[test]
    fn holds_cannot_overdraw_a_wallet() {
        let mut s = funded();
        run(&mut s, |s| s.decide_create_transfer(&transfer("h1", "alice", "bank", 70, true)))
            .unwrap();
        let refused = s.decide_create_transfer(&transfer("h2", "alice", "bank", 31, true));
        assert_eq!(
            refused,
            Err(Refusal::InsufficientFunds {
                account_id: "alice".into(),
                amount: 31,
                available: 30
            })
        );
        run(&mut s, |s| s.decide_create_transfer(&transfer("h3", "alice", "bank", 30, true)))
            .unwrap();
    }

    #[test]
    fn credits_must_not_exceed_debits_is_kept() {
        let mut s = State::default();
        let flags = AccountFlags { credits_must_not_exceed_debits: true, ..Default::default() };
        run(&mut s, |s| s.decide_create_account(&account("loan", "EUR", flags))).unwrap();
        run(&mut s, |s| s.decide_create_account(&account("bank", "EUR", AccountFlags::default())))
            .unwrap();
        let refused = s.decide_create_transfer(&transfer("t", "bank", "loan", 1, false));
        assert_eq!(refused.unwrap_err().code(), "exceeds_debits");
        run(&mut s, |s| s.decide_create_transfer(&transfer("t1", "loan", "bank", 5, false)))
            .unwrap();
        run(&mut s, |s| s.decide_create_transfer(&transfer("t2", "bank", "loan", 5, false)))
            .unwrap();
    }

    #[test]
    fn repeats_are_exists_or_exists_with_different_fields() {
        let mut s = funded();
        let t = transfer("h", "alice", "bank", 10, true);
        run(&mut s, |s| s.decide_create_transfer(&t)).unwrap();
        assert_eq!(s.decide_create_transfer(&t), Ok(Decision::Unchanged));
        let other = NewTransfer { amount: 11, pending: false, ..t };
        assert_eq!(
            s.decide_create_transfer(&other),
            Err(Refusal::TransferExistsWithDifferentFields {
                transfer_id: "h".into(),
                fields: vec!["amount", "pending"],
            })
        );
        assert_eq!(
            s.decide_create_account(&account("alice", "EUR", WALLET)),
            Ok(Decision::Unchanged)
        );
        assert_eq!(
            s.decide_create_account(&account("alice", "USD", WALLET)).unwrap_err().code(),
            "exists_with_different_fields"
        );
    }

    #[test]
    fn bad_requests_are_refused_with_their_code() {
        let s = funded();
        let code = |t: NewTransfer| s.decide_create_transfer(&t).unwrap_err().code();
        assert_eq!(code(transfer("x", "alice", "alice", 1, true)), "accounts_must_be_different");
        assert_eq!(code(transfer("x", "alice", "bank", 0, true)), "invalid_amount");
        assert_eq!(code(transfer("x", "alice", "bank", AMOUNT_MAX + 1, true)), "invalid_amount");
        assert_eq!(code(transfer("x", "alice", "nobody", 1, true)), "credit_account_not_found");
        assert_eq!(code(transfer("x", "nobody", "alice", 1, true)), "debit_account_not_found");
        assert_eq!(code(transfer("x y", "alice", "bank", 1, true)), "invalid_transfer_id");
        assert_eq!(
            code(transfer(&"x".repeat(193), "alice", "bank", 1, true)),
            "invalid_transfer_id"
        );
        assert_eq!(
            code(NewTransfer { currency: "USD".into(), ..transfer("x", "alice", "bank", 1, true) }),
            "currency_mismatch"
        );
        assert_eq!(
            code(NewTransfer { currency: "eur".into(), ..transfer("x", "alice", "bank", 1, true) }),
            "invalid_currency"
        );
        let both = AccountFlags {
            debits_must_not_exceed_credits: true,
            credits_must_not_exceed_debits: true,
        };
        assert_eq!(
            s.decide_create_account(&account("z", "EUR", both)).unwrap_err().code(),
            "flags_are_mutually_exclusive"
        );
        assert_eq!(
            s.decide_create_account(&account(&"a".repeat(65), "EUR", WALLET)).unwrap_err().code(),
            "invalid_account_id"
        );
        assert_eq!(s.decide_post("fund").unwrap_err().code(), "transfer_not_pending");
        assert_eq!(s.decide_void("nope", None).unwrap_err().code(), "transfer_not_found");
    }

    #[test]
    fn a_void_with_other_fields_than_its_hold_is_refused() {
        let mut s = funded();
        let t = transfer("h", "alice", "bank", 10, true);
        run(&mut s, |s| s.decide_create_transfer(&t)).unwrap();
        let other = NewTransfer { amount: 9, ..t.clone() };
        assert_eq!(
            s.decide_void("h", Some(&other)).unwrap_err().code(),
            "exists_with_different_fields"
        );
        assert!(matches!(s.decide_void("h", Some(&t)), Ok(Decision::Append(_))));
    }

    #[test]
    fn balances_cannot_overflow() {
        let mut s = State::default();
        run(&mut s, |s| s.decide_create_account(&account("a", "EUR", AccountFlags::default())))
            .unwrap();
        run(&mut s, |s| s.decide_create_account(&account("b", "EUR", AccountFlags::default())))
            .unwrap();
        for i in 0..(i64::MAX / AMOUNT_MAX) {
            run(&mut s, |s| {
                s.decide_create_transfer(&transfer(&format!("t{i}"), "a", "b", AMOUNT_MAX, false))
            })
            .unwrap();
        }
        let last = s.decide_create_transfer(&transfer("over", "a", "b", AMOUNT_MAX, false));
        assert_eq!(last.unwrap_err().code(), "overflows_balance");
    }

    #[test]
    fn replay_rejects_events_decide_would_not_write() {
        let s = funded();
        let posted_twice = LedgerEvent::TransferPosted { transfer_id: "fund".into() };
        assert_eq!(s.check(&posted_twice).unwrap_err().code(), "transfer_not_pending");
        let again = LedgerEvent::AccountCreated {
            account_id: "alice".into(),
            currency: "EUR".into(),
            flags: WALLET,
        };
        assert_eq!(s.check(&again), Err(IllegalEvent::Repeated));
        let overdraft = LedgerEvent::TransferCreated {
            transfer_id: "x".into(),
            debit_account_id: "alice".into(),
            credit_account_id: "bank".into(),
            amount: 101,
            currency: "EUR".into(),
            pending: false,
        };
        assert_eq!(s.check(&overdraft).unwrap_err().code(), "insufficient_funds");
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Transfer { debit: usize, credit: usize, amount: i64, pending: bool },
        Post(usize),
        Void(usize),
        Repeat(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 0..4usize, 1..200i64, any::<bool>()).prop_map(
                |(debit, credit, amount, pending)| Op::Transfer { debit, credit, amount, pending }
            ),
            (0..64usize).prop_map(Op::Post),
            (0..64usize).prop_map(Op::Void),
            (0..64usize).prop_map(Op::Repeat),
        ]
    }

    proptest! {
        /// Whatever is asked, in any order: debits equal credits per
        /// currency, no flag is broken, repeats change nothing, and replaying
        /// the events written gives the same ledger.
        #[test]
        fn any_history_balances_and_replays(ops in proptest::collection::vec(op(), 1..80)) {
            let ids = ["bank", "alice", "bob", "loan"];
            let flags = [
                AccountFlags::default(),
                WALLET,
                WALLET,
                AccountFlags { credits_must_not_exceed_debits: true, ..Default::default() },
            ];
            let mut s = State::default();
            let mut log = Vec::new();
            for (id, flags) in ids.iter().zip(flags) {
                log.extend(run(&mut s, |s| s.decide_create_account(&account(id, "EUR", flags))).unwrap());
            }
            let mut made: Vec<NewTransfer> = Vec::new();
            for (i, op) in ops.into_iter().enumerate() {
                let decision = match op {
                    Op::Transfer { debit, credit, amount, pending } => {
                        let t = transfer(&format!("t{i}"), ids[debit], ids[credit], amount, pending);
                        made.push(t.clone());
                        s.decide_create_transfer(&t)
                    }
                    Op::Post(k) if !made.is_empty() => s.decide_post(&made[k % made.len()].id),
                    Op::Void(k) if !made.is_empty() => s.decide_void(&made[k % made.len()].id, None),
                    Op::Repeat(k) if !made.is_empty() => {
                        let t = &made[k % made.len()];
                        let repeat = s.decide_create_transfer(t);
                        if s.transfers.contains_key(&t.id) {
                            prop_assert_eq!(&repeat, &Ok(Decision::Unchanged));
                        }
                        repeat
                    }
                    _ => continue,
                };
                if let Ok(Some(event)) = run(&mut s, |_| decision) {
                    log.push(event);
                }
                let mut sums: BTreeMap<&str, [i128; 4]> = BTreeMap::new();
                for a in s.accounts.values() {
                    prop_assert_eq!(a.violated_flag(), None);
                    let b = a.balances;
                    let sum = sums.entry(&a.currency).or_default();
                    sum[0] += i128::from(b.debits_posted);
                    sum[1] += i128::from(b.credits_posted);
                    sum[2] += i128::from(b.debits_pending);
                    sum[3] += i128::from(b.credits_pending);
                }
                for sum in sums.values() {
                    prop_assert_eq!(sum[0], sum[1]);
                    prop_assert_eq!(sum[2], sum[3]);
                }
            }
            let mut replayed = State::default();
            for event in &log {
                prop_assert_eq!(replayed.check(event), Ok(()));
                replayed.apply(event, 1);
            }
            prop_assert_eq!(replayed, s);
        }
    }
}
