//! The ledger's events: the record. Balances and transfers are projections
//! of them.
//!
//! Stored as JSON text `{"v":1,"type":"<name>",...}` in `ledger_events`.
//! [`decode`] reads every version ever written; a new field must be optional
//! (`#[serde(default)]`) or come with a new version, so that an old log still
//! replays after an upgrade. A golden file (`snapshots/`) pins the format.

use crate::model::AccountFlags;
use serde::{Deserialize, Serialize};

/// The format version written today.
pub const EVENT_VERSION: u64 = 1;
/// Largest stored event accepted by [`decode`], in bytes (real ones are < 1 KiB).
pub const EVENT_BYTES_MAX: usize = 16 * 1024;

/// One change to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LedgerEvent {
    AccountCreated {
        account_id: String,
        currency: String,
        flags: AccountFlags,
    },
    /// A transfer: posted at once (`pending: false`) or held (`pending: true`).
    TransferCreated {
        transfer_id: String,
        debit_account_id: String,
        credit_account_id: String,
        amount: i64,
        currency: String,
        pending: bool,
    },
    /// A pending transfer made final.
    TransferPosted {
        transfer_id: String,
    },
    /// A pending transfer released.
    TransferVoided {
        transfer_id: String,
    },
}

impl LedgerEvent {
    /// The account the event is about (the `account_id` column).
    #[must_use]
    pub fn account_id(&self) -> Option<&str> {
        match self {
            Self::AccountCreated { account_id, .. } => Some(account_id),
            _ => None,
        }
    }

    /// The transfer the event is about (the `transfer_id` column).
    #[must_use]
    pub fn transfer_id(&self) -> Option<&str> {
        match self {
            Self::AccountCreated { .. } => None,
            Self::TransferCreated { transfer_id, .. }
            | Self::TransferPosted { transfer_id }
            | Self::TransferVoided { transfer_id } => Some(transfer_id),
        }
    }
}

/// Why a stored event cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("it is {bytes} bytes long, over the limit of {EVENT_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("it is not a JSON object: {0}")]
    NotJson(String),
    #[error("it has no version `v`")]
    NoVersion,
    #[error("its version {0} is newer than this program knows ({EVENT_VERSION}); upgrade it")]
    UnknownVersion(u64),
    #[error("it does not fit version 1: {0}")]
    Invalid(String),
}

/// The stored form of `event`.
#[must_use]
pub fn encode(event: &LedgerEvent) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("v".into(), EVENT_VERSION.into());
    }
    value.to_string()
}

/// Read a stored event of any version.
///
/// # Errors
/// When `text` is not an event this program can read.
pub fn decode(text: &str) -> Result<LedgerEvent, DecodeError> {
    if text.len() > EVENT_BYTES_MAX {
        return Err(DecodeError::TooLarge { bytes: text.len() });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::NotJson("not an object".into()));
    }
    match value.get("v").and_then(serde_json::Value::as_u64) {
        None => Err(DecodeError::NoVersion),
        Some(1) => LedgerEvent::deserialize(value).map_err(|e| DecodeError::Invalid(e.to_string())),
        Some(v) => Err(DecodeError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn examples() -> Vec<LedgerEvent> {
        vec![
            LedgerEvent::AccountCreated {
                account_id: "alice".into(),
                currency: "EUR".into(),
                flags: AccountFlags {
                    debits_must_not_exceed_credits: true,
                    credits_must_not_exceed_debits: false,
                },
            },
            LedgerEvent::TransferCreated {
                transfer_id: "0197a1b2-topup".into(),
                debit_account_id: "psp-clearing".into(),
                credit_account_id: "alice".into(),
                amount: 2500,
                currency: "EUR".into(),
                pending: true,
            },
            LedgerEvent::TransferPosted { transfer_id: "0197a1b2-topup".into() },
            LedgerEvent::TransferVoided { transfer_id: "0197a1b2-topup".into() },
        ]
    }

    #[test]
    fn the_stored_format_is_pinned() {
        let stored: Vec<serde_json::Value> =
            examples().iter().map(|e| serde_json::from_str(&encode(e)).unwrap()).collect();
        insta::assert_json_snapshot!("ledger_events_v1", stored);
    }

    #[test]
    fn every_event_round_trips() {
        for event in examples() {
            assert_eq!(decode(&encode(&event)), Ok(event));
        }
    }

    #[test]
    fn unreadable_events_say_why() {
        assert_eq!(decode("[]"), Err(DecodeError::NotJson("not an object".into())));
        assert_eq!(
            decode(r#"{"type":"transfer_posted","transfer_id":"t"}"#),
            Err(DecodeError::NoVersion)
        );
        assert_eq!(
            decode(r#"{"v":2,"type":"transfer_posted","transfer_id":"t"}"#),
            Err(DecodeError::UnknownVersion(2))
        );
        assert!(matches!(
            decode(r#"{"v":1,"type":"transfer_exploded"}"#),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(&"x".repeat(EVENT_BYTES_MAX + 1)),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_v1_event_without_flags_still_reads() {
        let old =
            r#"{"v":1,"type":"account_created","account_id":"a","currency":"EUR","flags":{}}"#;
        assert!(matches!(decode(old), Ok(LedgerEvent::AccountCreated { .. })));
    }
}
