//! What the payment participant tells an audit: for each command, the call it
//! recorded and what the provider says of it now.
//!
//! A `charge` (and its `refund`) is one charge at the provider: in force
//! while the provider holds the money, undone once it is refunded in full,
//! none when the provider has no such charge. The provider is asked for the
//! charges under the saga's references, so an audit sees the provider's
//! books, not only this service's record of its calls; when the provider
//! cannot be asked, the state comes from the recorded calls (a call whose
//! answer never came is `unknown`) and the answer says it is partial, so the
//! audit judges none of it. A `payout` is in force once made.
//!
//! Beside the commands asked about, the answer lists calls recorded for the
//! saga that no asked command explains, and charges the provider holds under
//! the saga's reference that no recorded call made.

use crate::api::Charge;
use crate::handlers::Payments;
use crate::store::{self, Kind, Model, Status};
use sagas::protocol::{Effect, EffectState, Kind as CommandKind, command_id};
use serde_json::{Value, json};
use skald_participant::{Effects, InspectCtx};
use std::collections::{HashMap, HashSet};

/// Most references of one saga looked up at the provider.
const REFERENCES_MAX: usize = 4;

/// The effects of one saga's commands.
///
/// # Errors
/// When the recorded calls cannot be read.
pub async fn inspect(payments: &Payments, ctx: InspectCtx<'_>) -> Result<Effects, String> {
    let rows = store::of_saga(ctx.db, ctx.saga_id)
        .await
        .map_err(|e| format!("reading the calls of saga {}: {e}", ctx.saga_id))?;
    let by_key: HashMap<&str, &Model> = rows.iter().map(|r| (r.command_id.as_str(), r)).collect();

    // The provider's charges under every reference this saga used.
    // The saga id (the reference the shipped definitions give a charge)
    // first, then any other reference this saga's calls used.
    let mut references: Vec<&str> = vec![ctx.saga_id];
    let used = rows
        .iter()
        .filter(|r| r.kind == Kind::Charge.as_str())
        .map(|r| r.reference.as_str())
        .chain(ctx.asked.iter().filter_map(|a| a.command.payload.get("reference")?.as_str()));
    for reference in used {
        if !references.contains(&reference) {
            references.push(reference);
        }
    }
    let mut at_provider: Vec<Charge> = Vec::new();
    let mut provider_error = None;
    if references.len() > REFERENCES_MAX {
        provider_error = Some(format!(
            "the saga's calls use {} references; at most {REFERENCES_MAX} are looked up",
            references.len()
        ));
    }
    for reference in references.iter().take(REFERENCES_MAX) {
        match payments.provider.charges_of(reference).await {
            Ok(charges) => at_provider.extend(charges),
            Err(e) => provider_error = Some(e),
        }
    }
    let provider_known = provider_error.is_none();

    // Which provider charge each recorded charge made: by the id the provider
    // gave, or, for a call whose answer never came, by its reference.
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut made: HashMap<&str, &Charge> = HashMap::new();
    let charges = rows.iter().filter(|r| r.kind == Kind::Charge.as_str());
    for row in charges.clone() {
        if let Some(id) = &row.provider_id
            && let Some(c) = at_provider.iter().find(|c| &c.id == id)
        {
            claimed.insert(c.id.as_str());
            made.insert(row.command_id.as_str(), c);
        }
    }
    for row in charges.filter(|r| r.provider_id.is_none()) {
        if let Some(c) = at_provider
            .iter()
            .find(|c| c.reference == row.reference && !claimed.contains(c.id.as_str()))
        {
            claimed.insert(c.id.as_str());
            made.insert(row.command_id.as_str(), c);
        }
    }

    let mut effects = Effects::default();
    // The recorded calls the asked commands account for.
    let mut explained: HashSet<String> = HashSet::new();
    for asked in ctx.asked {
        let command = &asked.command;
        explained.insert(command.command_id.clone());
        let effect = match command.action.as_str() {
            "charge" | "refund" => {
                let charge_key = command_id(ctx.saga_id, &command.step, CommandKind::Do);
                let refund_key = command_id(ctx.saga_id, &command.step, CommandKind::Undo);
                let (charge_row, refund_row) =
                    (by_key.get(charge_key.as_str()), by_key.get(refund_key.as_str()));
                let at = charge_row.and_then(|r| made.get(r.command_id.as_str()).copied());
                let state = if provider_known {
                    at.map_or(EffectState::None, provider_state)
                } else {
                    recorded_charge_state(charge_row.copied(), refund_row.copied())
                };
                let detail = json!({
                    "charge": charge_row.map(|r| call(r)),
                    "refund": refund_row.map(|r| call(r)),
                    "provider": match (&provider_error, at) {
                        (Some(e), _) => json!({ "error": e }),
                        (None, Some(c)) => json!(c),
                        (None, None) => json!("no such charge"),
                    },
                });
                let id = at
                    .map(|c| c.id.clone())
                    .or_else(|| charge_row.and_then(|r| r.provider_id.clone()));
                Effect { state, what: "charge".into(), id, detail }
            }
            "payout" => {
                let row = by_key.get(command.command_id.as_str());
                Effect {
                    state: row.map_or(EffectState::None, |r| recorded_state(r)),
                    what: "payout".into(),
                    id: row.and_then(|r| r.provider_id.clone()),
                    detail: json!({ "payout": row.map(|r| call(r)) }),
                }
            }
            _ => continue,
        };
        if matches!(command.action.as_str(), "charge" | "refund") {
            for kind in [CommandKind::Do, CommandKind::Undo] {
                explained.insert(command_id(ctx.saga_id, &command.step, kind));
            }
        }
        effects.of.insert(command.command_id.clone(), effect);
    }

    for row in rows.iter().filter(|r| !explained.contains(r.command_id.as_str())) {
        effects.others.push(Effect {
            state: recorded_state(row),
            what: row.kind.clone(),
            id: row.provider_id.clone(),
            detail: json!({ "call": call(row), "why": "a recorded call no asked command explains" }),
        });
    }
    for c in at_provider.iter().filter(|c| !claimed.contains(c.id.as_str())) {
        effects.others.push(Effect {
            state: provider_state(c),
            what: "charge".into(),
            id: Some(c.id.clone()),
            detail: json!({ "provider": c, "why": "a charge at the provider that no recorded call made" }),
        });
    }
    // The recorded calls alone cannot tell what the provider holds: the
    // audit shows them, and judges none of this saga's payment steps.
    effects.partial = provider_error.map(|e| format!("the provider could not be asked: {e}"));
    Ok(effects)
}

/// A charge as the provider shows it: refunded in full is undone; a charge
/// the provider lists as anything but made (declined, failed) holds nothing.
fn provider_state(charge: &Charge) -> EffectState {
    if charge.status == "refunded" || charge.amount_refunded >= charge.amount {
        EffectState::Undone
    } else if charge.status == "succeeded" {
        EffectState::InForce
    } else {
        EffectState::None
    }
}

/// A recorded call as the audit shows it.
fn call(row: &Model) -> Value {
    json!({
        "key": row.command_id,
        "kind": row.kind,
        "amount": row.amount,
        "currency": row.currency,
        "reference": row.reference,
        "status": row.status,
        "provider_id": row.provider_id,
        "error_code": row.error_code,
        "attempts": row.attempts,
    })
}

/// What a recorded call alone says of its effect.
fn recorded_state(row: &Model) -> EffectState {
    match row.status.as_str() {
        s if s == Status::Succeeded.as_str() => EffectState::InForce,
        s if s == Status::Refunded.as_str() => EffectState::Undone,
        s if s == Status::Refused.as_str()
            || s == Status::NotCharged.as_str()
            || s == Status::NothingToRefund.as_str() =>
        {
            EffectState::None
        }
        _ => EffectState::Unknown,
    }
}

/// A charge's state from the recorded calls alone (the provider could not be asked).
fn recorded_charge_state(charge: Option<&Model>, refund: Option<&Model>) -> EffectState {
    let Some(charge) = charge else { return EffectState::None };
    match recorded_state(charge) {
        EffectState::InForce if refund.is_some_and(|r| r.status == Status::Succeeded.as_str()) => {
            EffectState::Undone
        }
        state => state,
    }
}
