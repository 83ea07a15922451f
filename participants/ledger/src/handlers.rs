//! The ledger's saga actions, served through the participant SDK as the
//! participant `ledger` (see `sagas/definitions/topup.yaml` and `payout.yaml`):
//!
//! | command | payload | `ok` output |
//! |---|---|---|
//! | `hold` (action) | `{transfer_id, debit_account, credit_account, amount, currency}` | `{transfer_id, result: created\|exists}` |
//! | `void` (compensation of `hold`, same payload) | as `hold` | `{transfer_id, result: voided\|already_voided\|not_found}` |
//! | `post` (action) | `{transfer_id}` | `{transfer_id, result: posted\|already_posted}` |
//!
//! A business refusal (`insufficient_funds`, an unknown account,
//! `currency_mismatch`, `exists_with_different_fields`, posting a voided
//! hold, voiding a posted one, ...) is a `failed` reply with the refusal's
//! code; a database problem is `retry`. A `void` whose payload does not match
//! the transfer it names is refused too: it would release someone else's hold. Every write goes through the SDK's
//! transaction, so the effect and the SDK's inbox row commit together: a
//! duplicate command is answered from the inbox and changes nothing.

use crate::model::{NewTransfer, Refusal, TransferState};
use crate::ops::{self, CreateResult, OpError};
use sagas::protocol::{Effect, EffectState};
use serde::Deserialize;
use serde_json::{Value, json};
use skald_participant::{
    Effects, HandlerCtx, HandlerError, HandlerResult, InspectCtx, Participant, inspector,
};
use tracing::{error, warn};

/// The participant name the saga definitions use.
pub const PARTICIPANT: &str = "ledger";

/// The payload of `hold` and of its compensation `void`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HoldInput {
    pub transfer_id: String,
    /// The account the money leaves (its debits grow).
    pub debit_account: String,
    /// The account the money goes to (its credits grow).
    pub credit_account: String,
    /// Minor units, 1..=10^15.
    pub amount: i64,
    pub currency: String,
}

impl HoldInput {
    /// The pending transfer this hold creates.
    #[must_use]
    pub fn to_transfer(&self) -> NewTransfer {
        NewTransfer {
            id: self.transfer_id.clone(),
            debit_account_id: self.debit_account.clone(),
            credit_account_id: self.credit_account.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            pending: true,
        }
    }
}

/// The payload of `post`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostInput {
    pub transfer_id: String,
}

/// The `ledger` participant: `hold`, its compensation `void`, and `post`;
/// an audit is told the transfer each command names and its state.
#[must_use]
pub fn participant() -> Participant {
    Participant::new(PARTICIPANT)
        .action("hold", hold)
        .compensation("void", void)
        .action("post", post)
        .inspector(inspector(|ctx| Box::pin(inspect(ctx))))
}

/// The effect of each command: the transfer its payload names. A hold (and
/// its void) is in force while the transfer is pending or posted, undone once
/// voided; a post is in force once the transfer is posted.
async fn inspect(ctx: InspectCtx<'_>) -> Result<Effects, String> {
    let mut effects = Effects::default();
    for asked in ctx.asked {
        let command = &asked.command;
        let Some(id) = command.payload.get("transfer_id").and_then(|v| v.as_str()) else {
            continue;
        };
        let mut found = match ops::transfer(ctx.db, id).await {
            Ok(found) => found,
            Err(OpError::Refused(_)) => None, // not a transfer id the ledger could hold
            Err(e) => return Err(format!("reading transfer `{id}`: {e}")),
        };
        // A hold's transfer is this command's only if it is the one it asked
        // for: a hold refused as `exists_with_different_fields` made nothing.
        let theirs = match (&found, HoldInput::deserialize(&command.payload)) {
            (Some(t), Ok(hold)) if command.action != "post" => {
                !hold.to_transfer().differences(t).is_empty()
            }
            _ => false,
        };
        if theirs {
            found = None;
        }
        let state = match (&found, command.action.as_str()) {
            (None, _) => EffectState::None,
            (Some(t), "post") => {
                if t.state == TransferState::Posted {
                    EffectState::InForce
                } else {
                    EffectState::None
                }
            }
            (Some(t), _) => match t.state {
                TransferState::Pending | TransferState::Posted => EffectState::InForce,
                TransferState::Voided => EffectState::Undone,
            },
        };
        let detail = found.map_or_else(
            || {
                if theirs {
                    json!("a transfer with this id made by other fields")
                } else {
                    Value::Null
                }
            },
            |t| {
                json!({
                    "debit_account": t.debit_account_id,
                    "credit_account": t.credit_account_id,
                    "amount": t.amount,
                    "currency": t.currency,
                    "state": t.state.as_str(),
                })
            },
        );
        let effect = Effect { state, what: "transfer".into(), id: Some(id.to_owned()), detail };
        effects.of.insert(command.command_id.clone(), effect);
    }
    Ok(effects)
}

/// Reserve the amount as a pending transfer.
async fn hold(ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: HoldInput = ctx.input()?;
    let new = input.to_transfer();
    new.validate().map_err(refused)?;
    let tx = ctx.tx().await?;
    let result = ops::create_transfer(tx, &new, now_ms()).await.map_err(answer)?;
    if result == CreateResult::Exists {
        // Made before by another command with the same id and fields. It
        // holds nothing any more if it was voided: say so rather than `ok`.
        let existing = ops::transfer(tx, &new.id).await.map_err(answer)?;
        if existing.is_some_and(|t| t.state == TransferState::Voided) {
            return Err(refused(Refusal::TransferVoided { transfer_id: new.id }));
        }
    }
    Ok(json!({ "transfer_id": new.id, "result": result.as_str() }))
}

/// Release the hold. Nothing held (no such transfer) or already released is
/// `ok`; a hold already posted cannot be released (`failed transfer_posted`).
async fn void(ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: HoldInput = ctx.input()?;
    let expected = input.to_transfer();
    let tx = ctx.tx().await?;
    match ops::void_transfer(tx, &expected.id, Some(&expected), now_ms()).await {
        Ok(result) => Ok(json!({ "transfer_id": expected.id, "result": result.as_str() })),
        Err(OpError::Refused(Refusal::TransferNotFound { .. })) => {
            Ok(json!({ "transfer_id": expected.id, "result": "not_found" }))
        }
        Err(e) => Err(answer(e)),
    }
}

/// Make the hold final. Already posted is `ok`; voided or unknown is `failed`.
async fn post(ctx: HandlerCtx<'_>) -> HandlerResult {
    let input: PostInput = ctx.input()?;
    let tx = ctx.tx().await?;
    let result = ops::post_transfer(tx, &input.transfer_id, now_ms()).await.map_err(answer)?;
    Ok(json!({ "transfer_id": input.transfer_id, "result": result.as_str() }))
}

fn refused(refusal: Refusal) -> HandlerError {
    HandlerError::failed(refusal.code(), refusal.to_string())
}

/// A refusal is final; anything else may pass, so the orchestrator retries.
fn answer(e: OpError) -> HandlerError {
    match e {
        OpError::Refused(refusal) => refused(refusal),
        OpError::Db(e) => {
            warn!(error = %e, "database error; answering retry");
            HandlerError::retry("database_error", e.to_string())
        }
        OpError::Conflict { .. } => HandlerError::retry("conflict", e.to_string()),
        OpError::Corrupt(_) => {
            // Retried until the step's budget is spent, then the saga parks
            // for an operator: a broken ledger must not be worked around.
            error!(error = %e, "the stored ledger is inconsistent");
            HandlerError::retry("ledger_inconsistent", e.to_string())
        }
    }
}

/// The time now, Unix milliseconds (the shell's clock; `model` takes time as input).
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
