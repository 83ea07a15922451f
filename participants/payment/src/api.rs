//! The payment provider's HTTP API as data: the request and response bodies
//! that the client ([`crate::provider`]) sends and reads and the simulator
//! ([`crate::sim`]) serves, kept in one place so the two cannot drift apart.
//!
//! Amounts are integers in minor units (cents). Every `POST` carries an
//! [`IDEMPOTENCY_KEY_HEADER`]: the same key with the same body gets the same
//! answer, the same key with another body gets `409`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Create a charge (`POST`), list charges (`GET`).
pub const CHARGES_PATH: &str = "/v1/charges";
/// Refund a charge (`POST`).
pub const REFUNDS_PATH: &str = "/v1/refunds";
/// Send money to a bank account (`POST`), list payouts (`GET`).
pub const PAYOUTS_PATH: &str = "/v1/payouts";
/// The header that makes a `POST` idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Set (to `true`) on an answer repeated from the idempotency store.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// Longest idempotency key the provider accepts (a Skald command id is at
/// most 128 + 1 + 64 + 1 + 4 bytes).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// `POST /v1/charges`: take `amount` from a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub amount: i64,
    /// ISO 4217, upper case (`EUR`).
    pub currency: String,
    /// The provider's token for the card; never a card number.
    pub card_token: String,
    /// The merchant's reference (Skald passes the saga id).
    pub reference: String,
}

/// `POST /v1/refunds`: give back (part of) a charge, named by its id or by
/// its reference (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub amount: i64,
}

/// `POST /v1/payouts`: send `amount` to a bank account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutRequest {
    pub amount: i64,
    pub currency: String,
    /// The provider's token for the destination bank account.
    pub destination: String,
    pub reference: String,
}

/// What the client needs of any object the provider made: its id and
/// status. Other fields are ignored, so the provider may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub status: String,
}

/// A charge as the provider shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub currency: String,
    pub reference: String,
    /// `succeeded`, or `refunded` once `amount_refunded == amount`.
    pub status: String,
    pub amount_refunded: i64,
}

/// What a webhook tells: a charge that was `pending` (3-D Secure) succeeded.
pub const WEBHOOK_CHARGE_SUCCEEDED: &str = "charge.succeeded";
/// What a webhook tells: a charge that was `pending` failed (the customer
/// did not pass the challenge).
pub const WEBHOOK_CHARGE_FAILED: &str = "charge.failed";

/// A webhook the provider `POST`s to the merchant: one event, with its id
/// (the same event may come more than once, or never).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `evt_<charge id>`: one per charge outcome; a repeat has the same id.
    pub id: String,
    /// [`WEBHOOK_CHARGE_SUCCEEDED`] or [`WEBHOOK_CHARGE_FAILED`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// The charge as it is now.
    pub data: Charge,
}

/// A refund as the provider shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub charge_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
}

/// A payout as the provider shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub currency: String,
    pub destination: String,
    pub reference: String,
    pub status: String,
}

/// Money moved in one currency, over every charge (not only the listed page).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub charged: i64,
    pub refunded: i64,
    pub paid_out: i64,
}

/// `GET /v1/charges`: a page of charges, how many match, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeList {
    pub charges: Vec<Charge>,
    /// Charges matching the filter (may exceed `charges.len()`).
    pub count: usize,
    /// By currency, over all charges, refunds and payouts.
    pub totals: BTreeMap<String, Totals>,
}

/// `GET /v1/payouts`: a page of payouts and how many there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutList {
    pub payouts: Vec<Payout>,
    pub count: usize,
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable: `card_declined`, `insufficient_funds`, `unknown_charge`, ...
    pub code: String,
    /// For people; never holds card data.
    pub message: String,
}

impl ErrorBody {
    #[must_use]
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}
