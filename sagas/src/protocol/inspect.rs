//! Asking a participant what it recorded for a saga's commands: the other
//! half of the audit across services.
//!
//! The orchestrator sends a core NATS request (not JetStream: an answer is
//! wanted now, and nothing is lost if the request is) with an
//! [`InspectRequest`] to `<prefix>.inspect.<participant>`; the participant's
//! replicas listen in one queue group, so one of them answers with an
//! [`InspectResponse`]. The request names each command as the orchestrator
//! sent it (payload included), so a participant can find the effect a command
//! had even when its own record of the command is gone.
//!
//! A participant answers, per command: its inbox entry (the outcome it gave
//! for good, or nothing), and, when it knows how, the [`Effect`] the command
//! left: what it is (a ledger transfer, a charge at the provider), its state,
//! and a summary. Per saga it also lists what it recorded that nobody asked
//! about: inbox entries of other commands, and effects it finds for the saga
//! that no command explains (a charge at the provider with the saga's
//! reference and no recorded call).

use super::{Kind, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most sagas in one request.
pub const INSPECT_SAGAS_MAX: usize = 64;
/// Most commands in one request, over all its sagas.
pub const INSPECT_COMMANDS_MAX: usize = 256;
/// Most entries a participant lists per saga beyond the ones asked about.
pub const INSPECT_EXTRA_MAX: usize = 32;

/// Body of a request on `<prefix>.inspect.<participant>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectRequest {
    pub sagas: Vec<InspectSaga>,
}

impl InspectRequest {
    /// Why the request is too large to answer, if it is.
    #[must_use]
    pub fn too_large(&self) -> Option<String> {
        let commands: usize = self.sagas.iter().map(|s| s.commands.len()).sum();
        if self.sagas.len() > INSPECT_SAGAS_MAX {
            Some(format!("{} sagas asked about; at most {INSPECT_SAGAS_MAX}", self.sagas.len()))
        } else if commands > INSPECT_COMMANDS_MAX {
            Some(format!("{commands} commands asked about; at most {INSPECT_COMMANDS_MAX}"))
        } else {
            None
        }
    }
}

/// One saga and the commands the orchestrator sent this participant for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectSaga {
    pub saga_id: String,
    pub commands: Vec<InspectedCommand>,
}

/// A command as the orchestrator sent it (its last attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectedCommand {
    pub command_id: String,
    pub step: String,
    pub kind: Kind,
    /// The action (for `undo`, the compensation's name).
    pub action: String,
    pub payload: Value,
}

/// A participant's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum InspectResponse {
    Inspected {
        participant: String,
        sagas: Vec<SagaRecords>,
    },
    /// The request could not be read or was too large.
    Refused {
        code: String,
        message: String,
    },
}

/// What a participant recorded for one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecords {
    pub saga_id: String,
    /// One per command asked about, in the order asked.
    pub commands: Vec<CommandRecord>,
    /// Inbox entries of this saga for commands nobody asked about.
    #[serde(default)]
    pub unasked: Vec<Recorded>,
    /// Effects found for this saga that no recorded command explains.
    #[serde(default)]
    pub others: Vec<Effect>,
    /// Why part of the answer is missing (the participant's database or a
    /// system it asks failed); what is there is still true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a participant recorded for one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub command_id: String,
    /// Its inbox entry: the answer it gave for good. `None`: it never did.
    pub recorded: Option<Recorded>,
    /// The effect the command left, when the participant reports effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
}

/// An inbox entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub command_id: String,
    pub step: String,
    pub kind: Kind,
    /// The outcome stored: `ok` or `failed`.
    pub outcome: Outcome,
    /// The attempt that produced it (0 for a `do` refused in advance by a tombstone).
    pub attempt: u32,
    pub recorded_at_ms: i64,
    /// Written by an `undo` that came before its `do`: the `do` is refused in
    /// advance, the `undo` answered `ok` without running.
    #[serde(default)]
    pub tombstone: bool,
}

/// Whether an effect is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectState {
    /// Nothing happened (or nothing is left of it).
    None,
    /// The effect holds: money held, moved or charged.
    InForce,
    /// The effect was undone: a hold voided, a charge refunded.
    Undone,
    /// The participant cannot tell (a call whose answer never came).
    Unknown,
}

impl EffectState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::InForce => "in_force",
            Self::Undone => "undone",
            Self::Unknown => "unknown",
        }
    }
}

/// An effect a participant made, described by the participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub state: EffectState,
    /// What it is: `transfer`, `charge`, `payout`, ...
    pub what: String,
    /// Its id where it has one (a transfer id, the provider's charge id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The participant's summary (amounts, states, what a provider said).
    #[serde(default)]
    pub detail: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_keep_their_shape() {
        let request = InspectRequest {
            sagas: vec![InspectSaga {
                saga_id: "s1".into(),
                commands: vec![InspectedCommand {
                    command_id: "s1.charge.do".into(),
                    step: "charge".into(),
                    kind: Kind::Do,
                    action: "charge".into(),
                    payload: json!({"amount": 5}),
                }],
            }],
        };
        insta::assert_json_snapshot!("inspect_request", request);
        let response = InspectResponse::Inspected {
            participant: "payment".into(),
            sagas: vec![SagaRecords {
                saga_id: "s1".into(),
                commands: vec![CommandRecord {
                    command_id: "s1.charge.do".into(),
                    recorded: Some(Recorded {
                        command_id: "s1.charge.do".into(),
                        step: "charge".into(),
                        kind: Kind::Do,
                        outcome: Outcome::Ok { output: json!({"charge_id": "ch_1"}) },
                        attempt: 1,
                        recorded_at_ms: 1_700_000_000_000,
                        tombstone: false,
                    }),
                    effect: Some(Effect {
                        state: EffectState::InForce,
                        what: "charge".into(),
                        id: Some("ch_1".into()),
                        detail: json!({"amount": 5}),
                    }),
                }],
                unasked: vec![],
                others: vec![],
                error: None,
            }],
        };
        insta::assert_json_snapshot!("inspect_response", response);
    }

    #[test]
    fn oversized_requests_are_named() {
        let saga = |i: usize, n: usize| InspectSaga {
            saga_id: format!("s{i}"),
            commands: (0..n)
                .map(|c| InspectedCommand {
                    command_id: format!("s{i}.c{c}.do"),
                    step: format!("c{c}"),
                    kind: Kind::Do,
                    action: "a".into(),
                    payload: Value::Null,
                })
                .collect(),
        };
        let fits = InspectRequest { sagas: (0..INSPECT_SAGAS_MAX).map(|i| saga(i, 4)).collect() };
        assert_eq!(fits.too_large(), None);
        let many = InspectRequest { sagas: (0..=INSPECT_SAGAS_MAX).map(|i| saga(i, 1)).collect() };
        assert!(many.too_large().unwrap().contains("sagas"));
        let long = InspectRequest { sagas: vec![saga(0, INSPECT_COMMANDS_MAX + 1)] };
        assert!(long.too_large().unwrap().contains("commands"));
    }
}
