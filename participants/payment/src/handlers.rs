//! The participant's actions: `charge` (compensation `refund`), `payout`, and
//! the risk checks `review` and `screen`.
//!
//! Each handler follows the same three moves, so that one saga step is at most
//! one effect at the provider:
//! 1. record the intent (`pending`, committed on its own) under the command id;
//! 2. call the provider with the command id as `Idempotency-Key`;
//! 3. record the result: in the SDK's transaction when the answer is `ok` (it
//!    commits with the inbox row that stores the reply), on its own when the
//!    provider refused (the SDK rolls its transaction back on `failed`), not at
//!    all on `retry` (the row stays `pending`; the next attempt repeats the call
//!    with the same key and the provider answers it from its store).
//!
//! A duplicate command is answered by the SDK's inbox without calling these.
//!
//! Payloads (from the saga definitions' `input:` mappings; unknown fields are
//! ignored):
//! - `charge`: `{amount, currency, card_token, reference}` →
//!   `{charge_id, status, amount, currency}`
//! - `refund` (the `charge` payload again): →
//!   `{refund_id, charge_id, status, amount, currency}`, or
//!   `{"nothing_to_refund": true}` when the provider has no such charge
//! - `payout`: `{amount, currency, bank_account, reference}` →
//!   `{payout_id, status, amount, currency}`
//! - `review` (compensation `unreview`): `{amount, card_token}` → `{approved: true}`,
//!   or refused `review_refused` for a flagged card (`tok_fraud`) or an amount
//!   over [`REVIEW_AMOUNT_MAX`]; it records nothing, so `unreview` has nothing
//!   to undo (a saga step before the pivot needs a compensation all the same).
//! - `screen` (compensation `unscreen`): `{card_token, wallet_account}` →
//!   `{cleared: true}`, or refused `screening_refused` for a card on the
//!   sanctions list (`tok_sanctioned`); like `review` it records nothing.
//!
//! A charge by a card that asks for 3-D Secure is answered `ok` with
//! `status: "pending"`: the provider's webhook (see [`crate::webhooks`]) says
//! later how it ended.

use crate::api::{ChargeRequest, PayoutRequest, RefundRequest};
use crate::outcome::{self, Action, ProviderOutcome, Verdict};
use crate::provider::Provider;
use crate::store::{self, Intent, Kind, Status};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::Deserialize;
use serde_json::{Value, json};
use skald_participant::{HandlerCtx, HandlerError, HandlerResult, Participant, handler, inspector};
use std::future::Future;
use std::sync::Arc;
use tracing::{info, warn};

/// The participant name the saga definitions use.
pub const PARTICIPANT: &str = "payment";
/// Largest amount accepted, in minor units (10 billion in major units).
pub const AMOUNT_MAX: i64 = 1_000_000_000_000;
/// Longest card token or bank account token.
pub const TOKEN_BYTES_MAX: usize = 256;
/// Longest reference.
pub const REFERENCE_BYTES_MAX: usize = 128;

/// Largest amount `review` approves, in minor units.
pub const REVIEW_AMOUNT_MAX: i64 = 10_000_000;
/// The card `review` refuses.
pub const TOKEN_FLAGGED: &str = "tok_fraud";

/// The `review` payload.
#[derive(Debug, Clone, Deserialize)]
pub struct ReviewInput {
    pub amount: i64,
    pub card_token: String,
}

/// A risk review before a large charge: refuses flagged cards and amounts
/// over [`REVIEW_AMOUNT_MAX`].
async fn review(ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: ReviewInput = ctx.input()?;
    if input.card_token == TOKEN_FLAGGED {
        return Err(HandlerError::failed("review_refused", "the card is flagged"));
    }
    if input.amount > REVIEW_AMOUNT_MAX {
        return Err(HandlerError::failed(
            "review_refused",
            format!("{} is over the {REVIEW_AMOUNT_MAX} a review approves", input.amount),
        ));
    }
    Ok(json!({ "approved": true }))
}

/// The card `screen` refuses: on the sanctions list.
pub const TOKEN_SANCTIONED: &str = "tok_sanctioned";

/// The `screen` payload.
#[derive(Debug, Clone, Deserialize)]
pub struct ScreenInput {
    pub card_token: String,
    pub wallet_account: String,
}

/// Screening of the customer and card against the sanctions list, which
/// runs beside the ledger's hold.
async fn screen(ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: ScreenInput = ctx.input()?;
    if input.card_token.len() > TOKEN_BYTES_MAX || input.wallet_account.len() > TOKEN_BYTES_MAX {
        return Err(HandlerError::failed(
            "invalid_input",
            format!("card_token and wallet_account are at most {TOKEN_BYTES_MAX} bytes"),
        ));
    }
    if input.card_token == TOKEN_SANCTIONED {
        return Err(HandlerError::failed("screening_refused", "the card is on the sanctions list"));
    }
    Ok(json!({ "cleared": true }))
}

/// `review` and `screen` record nothing: there is nothing to undo.
async fn unreview(_ctx: HandlerCtx<'_>) -> HandlerResult {
    Ok(json!({}))
}

/// What every handler shares: the participant's database and the provider.
#[derive(Debug)]
pub struct Payments {
    pub db: DatabaseConnection,
    pub provider: Provider,
}

/// The `payment` participant with its handlers, ready to run.
#[must_use]
pub fn participant(payments: &Arc<Payments>) -> Participant {
    let (charging, refunding, paying, inspecting) =
        (Arc::clone(payments), Arc::clone(payments), Arc::clone(payments), Arc::clone(payments));
    Participant::new(PARTICIPANT)
        .action(
            "charge",
            handler(move |ctx| {
                let payments = Arc::clone(&charging);
                Box::pin(async move { charge(&payments, ctx).await })
            }),
        )
        .compensation(
            "refund",
            handler(move |ctx| {
                let payments = Arc::clone(&refunding);
                Box::pin(async move { refund(&payments, ctx).await })
            }),
        )
        .action(
            "payout",
            handler(move |ctx| {
                let payments = Arc::clone(&paying);
                Box::pin(async move { payout(&payments, ctx).await })
            }),
        )
        .action("review", review)
        .compensation("unreview", unreview)
        .action("screen", screen)
        .compensation("unscreen", unreview)
        .inspector(inspector(move |ctx| {
            let payments = Arc::clone(&inspecting);
            Box::pin(async move { crate::inspect::inspect(&payments, ctx).await })
        }))
}

/// The `charge` payload.
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeInput {
    pub amount: i64,
    pub currency: String,
    pub card_token: String,
    pub reference: String,
}

/// The `refund` payload: the `charge` step's, so the card token is there too
/// (and ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct RefundInput {
    pub amount: i64,
    pub currency: String,
    pub reference: String,
}

/// The `payout` payload.
#[derive(Debug, Clone, Deserialize)]
pub struct PayoutInput {
    pub amount: i64,
    pub currency: String,
    pub bank_account: String,
    pub reference: String,
}

async fn charge(payments: &Payments, ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: ChargeInput = ctx.input()?;
    let request = ChargeRequest {
        amount: input.amount,
        currency: input.currency,
        card_token: input.card_token,
        reference: input.reference,
    };
    let money = Money::of(Kind::Charge, request.amount, &request.currency, &request.reference);
    money.check(Some(("card_token", &request.card_token)))?;
    #[cfg(feature = "planted")]
    if sagas::planted::is_planted(sagas::planted::Mistake::KeyPerAttempt)
        && ctx.command().attempt > 1
    {
        let key = format!("{}#{}", ctx.idempotency_key(), ctx.command().attempt);
        let call = payments.provider.charge(&key, &request);
        return money.move_at_provider(payments, &ctx, call, "charge_id").await;
    }
    let call = payments.provider.charge(ctx.idempotency_key(), &request);
    money.move_at_provider(payments, &ctx, call, "charge_id").await
}

async fn refund(payments: &Payments, ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: RefundInput = ctx.input()?;
    Money::of(Kind::Refund, input.amount, &input.currency, &input.reference).check(None)?;
    // The SDK runs this only when the charge answered `ok`, which committed
    // with the charge's row, so the provider's charge id is known. Without it
    // (another database?), name the charge by its reference.
    let charge_key = skald_participant::do_command_id(ctx.command());
    let charge = store::find(&payments.db, &charge_key).await?;
    let charged = charge.as_ref().and_then(|row| {
        (row.status == Status::Succeeded.as_str())
            .then(|| row.provider_id.clone().map(|id| (id, row.amount, row.currency.clone())))
            .flatten()
    });
    let (charge_id, amount, currency) = match charged {
        Some((id, amount, currency)) => (Some(id), amount, currency),
        None => {
            warn!(%charge_key, "no charge id recorded for the charge to refund; refunding by reference");
            (None, input.amount, input.currency)
        }
    };
    let key = ctx.idempotency_key();
    let request = RefundRequest {
        reference: charge_id.is_none().then(|| input.reference.clone()),
        charge_id: charge_id.clone(),
        amount,
    };
    let money = Money::of(Kind::Refund, amount, &currency, &input.reference);
    let (attempts, verdict) =
        money.call(payments, &ctx, payments.provider.refund(key, &request)).await?;
    if let Verdict::NothingToRefund { code, message } = &verdict {
        warn!(
            %key, charge_id = charge_id.as_deref().unwrap_or("-"), %code, %message,
            "the provider has no such charge: nothing to refund"
        );
    }
    settle(payments, &ctx, attempts, verdict, |receipt| {
        json!({
            "refund_id": receipt.id,
            "charge_id": charge_id,
            "status": receipt.status,
            "amount": amount,
            "currency": currency,
        })
    })
    .await
}

async fn payout(payments: &Payments, ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: PayoutInput = ctx.input()?;
    let request = PayoutRequest {
        amount: input.amount,
        currency: input.currency,
        destination: input.bank_account,
        reference: input.reference,
    };
    let money = Money::of(Kind::Payout, request.amount, &request.currency, &request.reference);
    money.check(Some(("bank_account", &request.destination)))?;
    let call = payments.provider.payout(ctx.idempotency_key(), &request);
    money.move_at_provider(payments, &ctx, call, "payout_id").await
}

/// The money one call to the provider moves, as its intent row records it.
struct Money<'a> {
    kind: Kind,
    amount: i64,
    currency: &'a str,
    reference: &'a str,
}

impl<'a> Money<'a> {
    fn of(kind: Kind, amount: i64, currency: &'a str, reference: &'a str) -> Self {
        Self { kind, amount, currency, reference }
    }

    /// Check the payload: the amount and currency, the `(field, token)` the
    /// call carries if any, then the reference.
    fn check(&self, token: Option<(&str, &str)>) -> Result<(), HandlerError> {
        check_money(self.amount, self.currency)?;
        if let Some((field, value)) = token {
            check_text(field, value, TOKEN_BYTES_MAX)?;
        }
        check_text("reference", self.reference, REFERENCE_BYTES_MAX)
    }

    /// Moves 1 and 2 (see the module doc): record the intent under the
    /// command id, then make `call` (made with that id as its key). The row's
    /// attempts so far, and what the provider's answer means.
    async fn call(
        &self,
        payments: &Payments,
        ctx: &HandlerCtx<'_>,
        call: impl Future<Output = ProviderOutcome>,
    ) -> Result<(i32, Verdict), HandlerError> {
        let intent = Intent {
            key: ctx.idempotency_key(),
            kind: self.kind,
            saga_id: &ctx.command().saga_id,
            amount: self.amount,
            currency: self.currency,
            reference: self.reference,
        };
        // Committed before the call, in the SDK's turn at the database (with
        // group commit, in one commit with other commands' writes).
        let backend = payments.db.get_database_backend();
        ctx.commit_now(store::intent_statement(backend, intent)).await?;
        let row = store::recorded(&payments.db, intent).await?;
        let action = match self.kind {
            Kind::Charge => Action::Charge,
            Kind::Refund => Action::Refund,
            Kind::Payout => Action::Payout,
        };
        Ok((row.attempts, outcome::verdict(action, call.await)))
    }

    /// A charge or a payout: all three moves, answered with
    /// `{<id_field>, status, amount, currency}`.
    async fn move_at_provider(
        &self,
        payments: &Payments,
        ctx: &HandlerCtx<'_>,
        call: impl Future<Output = ProviderOutcome>,
        id_field: &str,
    ) -> HandlerResult {
        let (attempts, verdict) = self.call(payments, ctx, call).await?;
        settle(payments, ctx, attempts, verdict, |receipt| {
            let mut output = serde_json::Map::new();
            output.insert(id_field.to_owned(), json!(receipt.id));
            output.insert("status".to_owned(), json!(receipt.status));
            output.insert("amount".to_owned(), json!(self.amount));
            output.insert("currency".to_owned(), json!(self.currency));
            Value::Object(output)
        })
        .await
    }
}

/// Record what the provider said and turn it into the handler's answer.
async fn settle(
    payments: &Payments,
    ctx: &HandlerCtx<'_>,
    attempts: i32,
    verdict: Verdict,
    output: impl FnOnce(&crate::api::Receipt) -> Value,
) -> HandlerResult {
    let key = ctx.idempotency_key();
    let action = &ctx.command().action;
    match &verdict {
        Verdict::Done(receipt) => {
            // Commits with the inbox row that stores the `ok`.
            let tx = ctx.tx().await?;
            store::settle(tx, key, Status::Succeeded, Some(&receipt.id), None).await?;
            info!(%key, %action, provider_id = %receipt.id, attempts, "done at the provider");
        }
        Verdict::NothingToRefund { .. } => {
            let tx = ctx.tx().await?;
            store::settle(tx, key, Status::NothingToRefund, None, None).await?;
        }
        Verdict::Failed { code, message } => {
            // The SDK rolls its transaction back on `failed`: commit it apart
            // (the intent it updates was recorded above). If this write fails
            // the answer is `retry`, and the next attempt gets the same
            // refusal from the provider.
            let backend = payments.db.get_database_backend();
            let refused = store::settle_statement(backend, key, Status::Refused, None, Some(code));
            ctx.commit_now(refused).await?;
            info!(%key, %action, %code, %message, "refused by the provider");
        }
        Verdict::Retry { code, message } => {
            warn!(%key, %action, %code, %message, attempts, "no definite answer from the provider; the retry reuses the key");
        }
        Verdict::Unsent { code, message } => {
            warn!(%key, %action, %code, %message, attempts, "the provider cannot be reached; nothing was sent, the retry reuses the key");
        }
    }
    verdict.into_answer(output)
}

fn check_money(amount: i64, currency: &str) -> Result<(), HandlerError> {
    if !(1..=AMOUNT_MAX).contains(&amount) {
        return Err(HandlerError::failed(
            "invalid_payload",
            format!("amount {amount} is not between 1 and {AMOUNT_MAX} minor units"),
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HandlerError::failed(
            "invalid_payload",
            format!("currency `{currency}` is not three upper-case letters (ISO 4217, like EUR)"),
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str, bytes_max: usize) -> Result<(), HandlerError> {
    if value.is_empty() || value.len() > bytes_max || value.chars().any(char::is_control) {
        // The value may be a card token: do not echo it.
        return Err(HandlerError::failed(
            "invalid_payload",
            format!(
                "{field} must be 1 to {bytes_max} bytes without control characters \
                 (got {} bytes)",
                value.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_text_are_checked() {
        assert!(check_money(1, "EUR").is_ok());
        assert!(check_money(0, "EUR").is_err());
        assert!(check_money(AMOUNT_MAX + 1, "EUR").is_err());
        assert!(check_money(5, "eur").is_err());
        assert!(check_money(5, "EURO").is_err());
        assert!(check_text("reference", "s1", REFERENCE_BYTES_MAX).is_ok());
        assert!(check_text("reference", "", REFERENCE_BYTES_MAX).is_err());
        let err = check_text("card_token", &"4".repeat(300), TOKEN_BYTES_MAX).unwrap_err();
        assert!(!err.to_string().contains("4444"), "{err}");
    }
}
