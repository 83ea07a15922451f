//! The simulator's books: charges, refunds, payouts, the idempotency store,
//! and the rules that decide each answer. Plain data behind one lock, no I/O
//! and no `await`, so every rule is a unit test.

use crate::api::{
    Charge, ChargeList, ChargeRequest, ErrorBody, IDEMPOTENCY_KEY_BYTES_MAX, Payout, PayoutList,
    PayoutRequest, Refund, RefundRequest, Totals,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Most charges, refunds or payouts kept (each); then the simulator answers 503.
pub const OBJECTS_MAX: usize = 100_000;
/// Most idempotency keys remembered; then the simulator answers 503.
pub const KEYS_MAX: usize = 300_000;
/// Longest card token, destination or reference accepted.
pub const TEXT_BYTES_MAX: usize = 256;
/// Largest page of a list.
pub const PAGE_MAX: usize = 1_000;

/// The card token that is always declined (`card_declined`).
pub const TOKEN_DECLINE: &str = "tok_decline";
/// The card token that is always declined for `insufficient_funds`.
pub const TOKEN_INSUFFICIENT: &str = "tok_insufficient";
/// A card that asks for 3-D Secure: the charge is answered `pending`, and
/// the customer passes the challenge later (the charge succeeds).
pub const TOKEN_3DS: &str = "tok_3ds";
/// A card that asks for 3-D Secure, whose challenge the customer fails (the
/// charge fails).
pub const TOKEN_3DS_FAIL: &str = "tok_3ds_fail";
/// The destination whose payouts are declined (`account_closed`).
pub const DESTINATION_CLOSED: &str = "ba_closed";

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    #[must_use]
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        Self { status, body: serde_json::to_value(body).unwrap_or(Value::Null) }
    }

    /// `{"error": {"code", "message"}}` with `status`.
    #[must_use]
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(status, &ErrorBody::new(code, message))
    }
}

/// What a `POST` did: its answer, and whether money moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub answer: Answer,
    pub moved_money: bool,
    /// A charge made `pending` (3-D Secure): its id, to resolve later.
    pub pending: Option<String>,
}

impl Made {
    /// An answer that changed nothing.
    #[must_use]
    pub fn nothing(answer: Answer) -> Self {
        Self { answer, moved_money: false, pending: None }
    }
}

/// Where a key stands before a `POST` is processed.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyCheck {
    /// First time (or only failed before): process it; `calls` counts this one.
    Fresh { calls: u32 },
    /// Same key, same path and body: the stored answer again.
    Replay(Answer),
    /// Same key, another path or body.
    Conflict(Answer),
    /// A key we cannot take (too long, or the store is full).
    Refused(Answer),
}

/// A remembered key: how many calls used it, and the answer, once made.
#[derive(Debug, Clone, Default)]
struct KeyEntry {
    calls: u32,
    answer: Option<(String, Value, Answer)>,
}

#[derive(Debug, Default)]
pub struct Books {
    keys: HashMap<String, KeyEntry>,
    /// Calls without a key: fault injection counts these instead.
    keyless_calls: u32,
    charges: Vec<Charge>,
    charge_index: HashMap<String, usize>,
    refunds: Vec<Refund>,
    payouts: Vec<Payout>,
    /// Charges waiting for their 3-D Secure challenge: whether it passes.
    challenges: HashMap<String, bool>,
}

impl Books {
    /// Check `key` for a `POST` to `path` with `request`, counting the call.
    pub fn check_key(&mut self, key: Option<&str>, path: &str, request: &Value) -> KeyCheck {
        let Some(key) = key else {
            self.keyless_calls = self.keyless_calls.saturating_add(1);
            return KeyCheck::Fresh { calls: self.keyless_calls };
        };
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return KeyCheck::Refused(Answer::error(
                400,
                "invalid_idempotency_key",
                format!("an idempotency key is 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            ));
        }
        if !self.keys.contains_key(key) && self.keys.len() >= KEYS_MAX {
            return KeyCheck::Refused(full("idempotency keys", KEYS_MAX));
        }
        let entry = self.keys.entry(key.to_owned()).or_default();
        match &entry.answer {
            Some((stored_path, stored_request, answer)) => {
                if stored_path == path && stored_request == request {
                    KeyCheck::Replay(answer.clone())
                } else {
                    KeyCheck::Conflict(Answer::error(
                        409,
                        "idempotency_conflict",
                        format!(
                            "idempotency key `{key}` was used for another request \
                             ({stored_path} with another body); use a new key"
                        ),
                    ))
                }
            }
            None => {
                entry.calls = entry.calls.saturating_add(1);
                KeyCheck::Fresh { calls: entry.calls }
            }
        }
    }

    /// Remember the answer given to `key`, so that a repeat gets it again.
    pub fn remember(&mut self, key: Option<&str>, path: &str, request: Value, answer: &Answer) {
        if let Some(entry) = key.and_then(|key| self.keys.get_mut(key)) {
            entry.answer = Some((path.to_owned(), request, answer.clone()));
        }
    }

    /// `POST /v1/charges`.
    pub fn charge(&mut self, amount_limit: i64, request: ChargeRequest) -> Made {
        if let Err(answer) = check_money(request.amount, &request.currency)
            .and_then(|()| check_text("card_token", &request.card_token))
            .and_then(|()| check_text("reference", &request.reference))
        {
            return Made::nothing(answer);
        }
        let decline = |code: &str, message: &str| Made::nothing(Answer::error(402, code, message));
        if request.card_token == TOKEN_DECLINE {
            return decline("card_declined", "the card was declined");
        }
        if request.card_token == TOKEN_INSUFFICIENT {
            return decline("insufficient_funds", "the card has insufficient funds");
        }
        if request.amount > amount_limit {
            return decline(
                "amount_too_large",
                &format!("amounts over {amount_limit} minor units are declined"),
            );
        }
        if self.charges.len() >= OBJECTS_MAX {
            return Made::nothing(full("charges", OBJECTS_MAX));
        }
        let challenge = match request.card_token.as_str() {
            TOKEN_3DS => Some(true),
            TOKEN_3DS_FAIL => Some(false),
            _ => None,
        };
        let charge = Charge {
            id: format!("ch_{:06}", self.charges.len() + 1),
            object: "charge".into(),
            amount: request.amount,
            currency: request.currency,
            reference: request.reference,
            status: if challenge.is_some() { "pending" } else { "succeeded" }.into(),
            amount_refunded: 0,
        };
        let answer = Answer::json(200, &charge);
        let id = charge.id.clone();
        self.charge_index.insert(charge.id.clone(), self.charges.len());
        self.charges.push(charge);
        match challenge {
            Some(passes) => {
                self.challenges.insert(id.clone(), passes);
                Made { answer, moved_money: false, pending: Some(id) }
            }
            None => Made { answer, moved_money: true, pending: None },
        }
    }

    /// `POST /v1/refunds`.
    pub fn refund(&mut self, request: RefundRequest) -> Made {
        if request.amount < 1 {
            return Made::nothing(Answer::error(400, "invalid_request", "amount must be positive"));
        }
        let index = match (&request.charge_id, &request.reference) {
            (Some(id), None) => match self.charge_index.get(id) {
                Some(&index) => index,
                None => return Made::nothing(unknown_charge(&format!("id `{id}`"))),
            },
            (None, Some(reference)) => {
                let mut found =
                    self.charges.iter().enumerate().filter(|(_, c)| &c.reference == reference);
                match (found.next(), found.next()) {
                    (None, _) => {
                        return Made::nothing(unknown_charge(&format!("reference `{reference}`")));
                    }
                    (Some((index, _)), None) => index,
                    (Some(_), Some(_)) => {
                        return Made::nothing(Answer::error(
                            409,
                            "ambiguous_reference",
                            format!(
                                "several charges have reference `{reference}`: refund by charge_id"
                            ),
                        ));
                    }
                }
            }
            _ => {
                return Made::nothing(Answer::error(
                    400,
                    "invalid_request",
                    "name the charge by exactly one of charge_id and reference",
                ));
            }
        };
        if self.refunds.len() >= OBJECTS_MAX {
            return Made::nothing(full("refunds", OBJECTS_MAX));
        }
        let Some(charge) = self.charges.get_mut(index) else {
            return Made::nothing(unknown_charge("index"));
        };
        match charge.status.as_str() {
            // Given back before the customer finished the challenge: canceled.
            "pending" => {
                charge.status = "canceled".into();
                self.challenges.remove(&charge.id);
                let id = charge.id.clone();
                return Made::nothing(Answer::error(
                    404,
                    "unknown_charge",
                    format!("charge {id} was never completed; it is canceled, nothing was taken"),
                ));
            }
            "failed" | "canceled" => {
                let id = charge.id.clone();
                return Made::nothing(unknown_charge(&format!("id `{id}` (it took nothing)")));
            }
            _ => {}
        }
        let left = charge.amount - charge.amount_refunded;
        if request.amount > left {
            return Made::nothing(Answer::error(
                400,
                "refund_exceeds_charge",
                format!("charge {} has {left} left to refund, not {}", charge.id, request.amount),
            ));
        }
        charge.amount_refunded += request.amount;
        if charge.amount_refunded == charge.amount {
            charge.status = "refunded".into();
        }
        let refund = Refund {
            id: format!("re_{:06}", self.refunds.len() + 1),
            object: "refund".into(),
            charge_id: charge.id.clone(),
            amount: request.amount,
            currency: charge.currency.clone(),
            status: "succeeded".into(),
        };
        let answer = Answer::json(200, &refund);
        self.refunds.push(refund);
        Made { answer, moved_money: true, pending: None }
    }

    /// `POST /v1/payouts`.
    pub fn payout(&mut self, amount_limit: i64, request: PayoutRequest) -> Made {
        if let Err(answer) = check_money(request.amount, &request.currency)
            .and_then(|()| check_text("destination", &request.destination))
            .and_then(|()| check_text("reference", &request.reference))
        {
            return Made::nothing(answer);
        }
        if request.destination == DESTINATION_CLOSED {
            return Made::nothing(Answer::error(
                402,
                "account_closed",
                "the bank account is closed",
            ));
        }
        if request.amount > amount_limit {
            return Made::nothing(Answer::error(
                402,
                "amount_too_large",
                format!("amounts over {amount_limit} minor units are declined"),
            ));
        }
        if self.payouts.len() >= OBJECTS_MAX {
            return Made::nothing(full("payouts", OBJECTS_MAX));
        }
        let payout = Payout {
            id: format!("po_{:06}", self.payouts.len() + 1),
            object: "payout".into(),
            amount: request.amount,
            currency: request.currency,
            destination: request.destination,
            reference: request.reference,
            status: "paid".into(),
        };
        let answer = Answer::json(200, &payout);
        self.payouts.push(payout);
        Made { answer, moved_money: true, pending: None }
    }

    /// `GET /v1/charges/{id}`.
    #[must_use]
    pub fn get_charge(&self, id: &str) -> Answer {
        match self.charge_index.get(id).and_then(|&i| self.charges.get(i)) {
            Some(charge) => Answer::json(200, charge),
            None => unknown_charge(&format!("id `{id}`")),
        }
    }

    /// `GET /v1/charges`: the first `limit` charges (oldest first) with
    /// `reference`, if given; totals over everything.
    #[must_use]
    pub fn list_charges(&self, reference: Option<&str>, limit: usize) -> ChargeList {
        let matching = self.charges.iter().filter(|c| reference.is_none_or(|r| c.reference == r));
        let count = matching.clone().count();
        let charges = matching.take(limit.min(PAGE_MAX)).cloned().collect();
        ChargeList { charges, count, totals: self.totals() }
    }

    /// `GET /v1/payouts`.
    #[must_use]
    pub fn list_payouts(&self, limit: usize) -> PayoutList {
        let payouts = self.payouts.iter().take(limit.min(PAGE_MAX)).cloned().collect();
        PayoutList { payouts, count: self.payouts.len() }
    }

    /// The charges still waiting for their challenge.
    #[must_use]
    pub fn pending_challenges(&self) -> Vec<String> {
        self.challenges.keys().cloned().collect()
    }

    /// The customer answered the 3-D Secure challenge of pending charge
    /// `id`: it succeeds or fails. `None` when it is not pending (resolved
    /// before, or canceled by a refund).
    pub fn resolve(&mut self, id: &str) -> Option<Charge> {
        let passes = self.challenges.remove(id)?;
        let charge = self.charge_index.get(id).and_then(|&i| self.charges.get_mut(i))?;
        charge.status = if passes { "succeeded" } else { "failed" }.into();
        Some(charge.clone())
    }

    fn totals(&self) -> BTreeMap<String, Totals> {
        let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
        // Only charges that took money: not pending, failed or canceled ones.
        for charge in
            self.charges.iter().filter(|c| matches!(c.status.as_str(), "succeeded" | "refunded"))
        {
            let t = totals.entry(charge.currency.clone()).or_default();
            t.charged += charge.amount;
            t.refunded += charge.amount_refunded;
        }
        for payout in &self.payouts {
            totals.entry(payout.currency.clone()).or_default().paid_out += payout.amount;
        }
        totals
    }
}

fn check_money(amount: i64, currency: &str) -> Result<(), Answer> {
    if amount < 1 {
        return Err(Answer::error(
            400,
            "invalid_request",
            "amount must be a positive integer of minor units",
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Answer::error(
            400,
            "invalid_request",
            "currency must be three upper-case letters",
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), Answer> {
    if value.is_empty() || value.len() > TEXT_BYTES_MAX {
        return Err(Answer::error(
            400,
            "invalid_request",
            format!("{field} must be 1 to {TEXT_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

fn unknown_charge(what: &str) -> Answer {
    Answer::error(404, "unknown_charge", format!("no charge with {what}"))
}

fn full(what: &str, max: usize) -> Answer {
    Answer::error(
        503,
        "simulator_full",
        format!("the simulator keeps at most {max} {what}; restart it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn charge_request(token: &str, amount: i64) -> ChargeRequest {
        ChargeRequest {
            amount,
            currency: "EUR".into(),
            card_token: token.into(),
            reference: "ref-1".into(),
        }
    }

    #[test]
    fn keys_replay_and_conflict() {
        let mut books = Books::default();
        let body = json!({ "a": 1 });
        assert_eq!(books.check_key(Some("k"), "/p", &body), KeyCheck::Fresh { calls: 1 });
        // Not answered yet (a 500 was injected): still fresh, second call.
        assert_eq!(books.check_key(Some("k"), "/p", &body), KeyCheck::Fresh { calls: 2 });
        let answer = Answer::error(402, "card_declined", "no");
        books.remember(Some("k"), "/p", body.clone(), &answer);
        assert_eq!(books.check_key(Some("k"), "/p", &body), KeyCheck::Replay(answer));
        assert!(matches!(
            books.check_key(Some("k"), "/p", &json!({ "a": 2 })),
            KeyCheck::Conflict(_)
        ));
        assert!(matches!(books.check_key(Some("k"), "/q", &body), KeyCheck::Conflict(_)));
        assert!(matches!(books.check_key(Some(""), "/p", &body), KeyCheck::Refused(_)));
        assert_eq!(books.check_key(None, "/p", &body), KeyCheck::Fresh { calls: 1 });
    }

    #[test]
    fn decline_rules() {
        let mut books = Books::default();
        let code = |made: Made| (made.answer.status, made.answer.body["error"]["code"].clone());
        assert_eq!(
            code(books.charge(100, charge_request(TOKEN_DECLINE, 5))),
            (402, json!("card_declined"))
        );
        assert_eq!(
            code(books.charge(100, charge_request(TOKEN_INSUFFICIENT, 5))),
            (402, json!("insufficient_funds"))
        );
        assert_eq!(
            code(books.charge(100, charge_request("tok_ok", 101))),
            (402, json!("amount_too_large"))
        );
        assert_eq!(
            code(books.charge(100, charge_request("tok_ok", 0))),
            (400, json!("invalid_request"))
        );
        let ok = books.charge(100, charge_request("tok_ok", 100));
        assert!(ok.moved_money);
        assert_eq!(ok.answer.body["id"], "ch_000001");
        assert_eq!(books.list_charges(None, 10).count, 1, "declines are not charges");
    }

    #[test]
    fn refunds_by_id_or_reference_up_to_the_charge() {
        let mut books = Books::default();
        books.charge(1_000, charge_request("tok_ok", 500));
        let by_ref =
            |amount| RefundRequest { charge_id: None, reference: Some("ref-1".into()), amount };
        assert!(books.refund(by_ref(200)).moved_money);
        let too_much = books.refund(by_ref(301));
        assert_eq!(too_much.answer.body["error"]["code"], "refund_exceeds_charge");
        let rest = books.refund(RefundRequest {
            charge_id: Some("ch_000001".into()),
            reference: None,
            amount: 300,
        });
        assert_eq!(rest.answer.body["charge_id"], "ch_000001");
        assert_eq!(books.get_charge("ch_000001").body["status"], "refunded");
        let unknown = books.refund(RefundRequest {
            charge_id: Some("ch_9".into()),
            reference: None,
            amount: 1,
        });
        assert_eq!(unknown.answer.status, 404);
        let both = books.refund(RefundRequest {
            charge_id: Some("ch_000001".into()),
            reference: Some("ref-1".into()),
            amount: 1,
        });
        assert_eq!(both.answer.status, 400);
        books.charge(1_000, charge_request("tok_ok", 7));
        assert_eq!(books.refund(by_ref(1)).answer.body["error"]["code"], "ambiguous_reference");
        let totals = books.list_charges(None, 10).totals;
        assert_eq!(totals["EUR"], Totals { charged: 507, refunded: 500, paid_out: 0 });
    }

    #[test]
    fn payouts_decline_closed_accounts() {
        let mut books = Books::default();
        let payout = |destination: &str, amount| PayoutRequest {
            amount,
            currency: "USD".into(),
            destination: destination.into(),
            reference: "r".into(),
        };
        assert_eq!(books.payout(100, payout(DESTINATION_CLOSED, 5)).answer.status, 402);
        assert_eq!(books.payout(100, payout("ba_1", 500)).answer.status, 402);
        assert_eq!(books.payout(100, payout("ba_1", 50)).answer.body["status"], "paid");
        assert_eq!(books.list_payouts(10).count, 1);
        assert_eq!(books.list_charges(None, 1).totals["USD"].paid_out, 50);
    }
}
