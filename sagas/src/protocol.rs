//! The wire protocol between the orchestrator and participants.
//!
//! Participants in any language code against these shapes, so they are pinned
//! by golden files (`sagas/src/snapshots/`). All bodies are JSON.
//!
//! - A [`Command`] is published to the `<prefix>_COMMANDS` stream on subject
//!   `<prefix>.cmd.<participant>.<action>` with header `Nats-Msg-Id:
//!   <command id>/<attempt>`; a re-publish of the same attempt is dropped by
//!   JetStream's dedupe window, a deliberate retry (next attempt) is not.
//! - A [`Reply`] is published to the `<prefix>_REPLIES` stream on the command's
//!   `reply_subject`, `<prefix>.reply.<partition>.<participant>`: the subject
//!   names who answers, so the bus's permissions can let each participant
//!   publish only replies that name it, and the orchestrator takes a reply
//!   only from the participant its command went to.
//! - A saga is started by a NATS request on `<prefix>.start.<saga type>` with a
//!   [`StartRequest`]; the answer is a [`StartResponse`].
//! - What a participant recorded for a saga's commands is asked by a core NATS
//!   request on `<prefix>.inspect.<participant>` ([`inspect`]).
//! - Trace context travels in the W3C `traceparent` header.
//!
//! Readers ignore fields they do not know in commands and replies, so optional
//! fields can be added without breaking older participants.
//!
//! The prefix is `skald` in production; tests use their own so they never see
//! each other's messages.

mod inspect;

pub use inspect::{
    CommandRecord, Effect, EffectState, INSPECT_COMMANDS_MAX, INSPECT_EXTRA_MAX, INSPECT_SAGAS_MAX,
    InspectRequest, InspectResponse, InspectSaga, InspectedCommand, Recorded, SagaRecords,
};

use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Header carrying JetStream's dedupe id.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The subject prefix and stream prefix used outside tests.
pub const DEFAULT_PREFIX: &str = "skald";
/// Largest command or reply body accepted, in bytes (NATS' default max payload is 1 MiB).
pub const BODY_BYTES_MAX: usize = 512 * 1024;

/// Whether a command does a step's action or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Do,
    Undo,
}

impl Kind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Do => "do",
            Self::Undo => "undo",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The participant's idempotency key for one step and kind of one saga:
/// `<saga id>.<step>.<kind>`. Stable across attempts.
#[must_use]
pub fn command_id(saga_id: &str, step: &str, kind: Kind) -> String {
    format!("{saga_id}.{step}.{kind}")
}

/// The JetStream dedupe id of one attempt: `<command id>/<attempt>`.
#[must_use]
pub fn msg_id(command_id: &str, attempt: u32) -> String {
    format!("{command_id}/{attempt}")
}

/// A command to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Stable across attempts of the same step and kind; the idempotency key.
    pub command_id: String,
    pub saga_id: String,
    pub saga_type: String,
    pub step: String,
    pub kind: Kind,
    /// The participant's action (for `undo`, the compensation's name).
    pub action: String,
    /// 1 for the first send, incremented by each retry.
    pub attempt: u32,
    /// The step's rendered input; the same for `do` and `undo`.
    pub payload: Value,
    /// After this instant the orchestrator no longer waits for this attempt.
    pub deadline_unix_ms: UnixMillis,
    /// Where to publish the [`Reply`].
    pub reply_subject: String,
}

/// A participant's answer to one command attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub command_id: String,
    pub attempt: u32,
    pub outcome: Outcome,
}

/// What happened when a participant handled a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The effect happened (or had already happened); `output` feeds later steps.
    Ok {
        #[serde(default)]
        output: Value,
    },
    /// A business refusal: the effect did not happen and never will. Not retried.
    Failed { code: String, message: String },
    /// A transient problem: try again later. The effect did not happen here,
    /// but what a participant asked of others may have (a call that timed
    /// out), so once the retries are spent the outcome is unknown.
    Retry {
        code: String,
        message: String,
        /// The participant knows nothing left it: the request never reached
        /// what it calls (connection refused, no route, name not found). Such
        /// attempts do not count against the retry budget (see
        /// `machine::UNSENT_RETRIES_MAX` for their own bound).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unsent: bool,
    },
}

impl Outcome {
    /// A `retry` answer that counts against the budget.
    pub fn retry(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retry { code: code.into(), message: message.into(), unsent: false }
    }
}

/// Body of a request on `<prefix>.signal.<event>`: an event for one saga
/// (what a waiting step waits for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The saga; empty: the one running saga whose step waits for this
    /// event with `key` (an event sent by its key alone).
    #[serde(default)]
    pub saga_id: String,
    /// The sender's id for this event: the same id again is a duplicate.
    pub event_id: String,
    /// The correlation key, when the waiting step asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The event's body: the waiting step's output.
    #[serde(default)]
    pub payload: Value,
}

/// The answer to a [`SignalRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignalResponse {
    /// Kept in the saga's history; `taken` when a waiting step took it now.
    Accepted { saga_id: String, taken: bool },
    /// This event id was taken before: nothing changed.
    Duplicate { saga_id: String },
    /// `unknown_saga`, `ended`, `invalid`, `too_many_events`, `unavailable`, `bad_request`.
    Refused { code: String, message: String },
}

/// Body of a start request on `<prefix>.start.<saga type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The caller's key: the same key and input always name the same saga.
    pub idempotency_key: String,
    pub input: Value,
    /// Answer only once the saga has ended (or this many milliseconds have
    /// passed, at most [`START_WAIT_MS_MAX`]), with its [`SagaOutcome`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The longest a start request (over NATS or HTTP) may wait for its saga's end.
pub const START_WAIT_MS_MAX: u64 = 60_000;

/// Where a saga stands, for a caller that waited for its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaOutcome {
    /// `completed`, `compensated`, `failed`, `parked` (an operator must act),
    /// or a state still under way when the wait ran out.
    pub status: String,
    /// True once the saga has ended (completed, compensated or failed).
    pub ended: bool,
    /// The definition's `output:` of a completed saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why the saga turned back, failed or is parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Value>,
}

/// What `<prefix>.ended.<saga type>` carries, once per saga that ended
/// (completed, compensated, failed, or resolved by an operator). Published
/// through the outbox, so it is never lost and may repeat: dedupe by `saga_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEnded {
    pub saga_id: String,
    pub saga_type: String,
    pub version: u32,
    pub definition_hash: String,
    #[serde(flatten)]
    pub outcome: SagaOutcome,
    /// The saga's business tags (the definition's `tags:`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    pub ended_at_unix_ms: UnixMillis,
}

/// Answer to a start request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum StartResponse {
    /// A new saga was started.
    Started {
        saga_id: String,
        /// Present when the request asked to wait.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<SagaOutcome>,
    },
    /// The key was seen before with the same input: the same saga.
    Existing {
        saga_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<SagaOutcome>,
    },
    /// The request was refused; `code` is one of `unknown_type`, `invalid_input`,
    /// `conflict` (same key, other input), `bad_request`, `unavailable`.
    Refused { code: String, message: String, errors: Vec<String> },
}

/// Whether `s` is a safe NATS subject token: non-empty ASCII letters, digits,
/// `_` and `-` (no dots, spaces or wildcards). Prefixes, participant and
/// action names, identities and inbox prefixes' tokens all are.
#[must_use]
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Subject and stream names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

impl Namespace {
    /// A namespace; `prefix` must be a safe subject token (letters, digits, `_`, `-`).
    pub fn new(prefix: &str) -> Result<Self, String> {
        if prefix.len() > 32 || !is_subject_token(prefix) {
            return Err(format!(
                "prefix `{prefix}` must be 1-32 ASCII letters, digits, `_` or `-`"
            ));
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    #[must_use]
    pub fn command_subject(&self, participant: &str, action: &str) -> String {
        format!("{}.cmd.{participant}.{action}", self.prefix)
    }

    /// Whether `subject` is one of this namespace's command subjects
    /// (`<prefix>.cmd.…`).
    #[must_use]
    pub fn is_command_subject(&self, subject: &str) -> bool {
        subject.strip_prefix(self.prefix.as_str()).is_some_and(|rest| rest.starts_with(".cmd."))
    }

    /// All commands for one participant: what its durable consumer filters on.
    #[must_use]
    pub fn participant_filter(&self, participant: &str) -> String {
        format!("{}.cmd.{participant}.>", self.prefix)
    }

    /// Where `participant` answers commands of a saga on `partition`.
    #[must_use]
    pub fn reply_subject(&self, partition: u32, participant: &str) -> String {
        format!("{}.reply.{partition}.{participant}", self.prefix)
    }

    /// Every reply of one partition, whoever answers: what the partition's
    /// reply consumer filters on.
    #[must_use]
    pub fn partition_replies(&self, partition: u32) -> String {
        format!("{}.reply.{partition}.*", self.prefix)
    }

    /// Every reply `participant` may publish: what the bus lets its identity
    /// publish to.
    #[must_use]
    pub fn replies_of(&self, participant: &str) -> String {
        format!("{}.reply.*.{participant}", self.prefix)
    }

    /// The participant a reply subject names, when it is one of this
    /// namespace's reply subjects (`<prefix>.reply.<partition>.<participant>`).
    #[must_use]
    pub fn reply_sender<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix(".reply.")?;
        let (partition, participant) = rest.split_once('.')?;
        let valid = partition.parse::<u32>().is_ok()
            && !participant.is_empty()
            && !participant.contains(['.', '*', '>']);
        valid.then_some(participant)
    }

    /// The subject a command or reply of `subject` travels on when it is
    /// delivered directly (core NATS to whoever listens, outside the streams):
    /// `<prefix>.direct.<rest>`. No stream captures it.
    #[must_use]
    pub fn direct(&self, subject: &str) -> String {
        match subject.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('.')) {
            Some(rest) => format!("{}.direct.{rest}", self.prefix),
            None => format!("{}.direct.{subject}", self.prefix),
        }
    }

    /// The stream subject a direct one stands for (the inverse of
    /// [`Namespace::direct`]), when it is one of this namespace's.
    #[must_use]
    pub fn undirect(&self, subject: &str) -> Option<String> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix(".direct.")?;
        Some(format!("{}.{rest}", self.prefix))
    }

    #[must_use]
    pub fn start_subject(&self, saga_type: &str) -> String {
        format!("{}.start.{saga_type}", self.prefix)
    }

    /// Where a saga's end is announced: `<prefix>.ended.<saga type>`.
    #[must_use]
    pub fn ended_subject(&self, saga_type: &str) -> String {
        format!("{}.ended.{saga_type}", self.prefix)
    }

    /// Where an event for a waiting saga is sent: `<prefix>.signal.<event>`
    /// (a NATS request with a [`SignalRequest`]).
    #[must_use]
    pub fn signal_subject(&self, event: &str) -> String {
        format!("{}.signal.{event}", self.prefix)
    }

    /// Where `participant` answers what it recorded for commands
    /// ([`InspectRequest`]); its replicas share one queue group named after it.
    #[must_use]
    pub fn inspect_subject(&self, participant: &str) -> String {
        format!("{}.inspect.{participant}", self.prefix)
    }

    #[must_use]
    pub fn ended_stream(&self) -> String {
        format!("{}_ENDED", self.stream_prefix())
    }

    #[must_use]
    pub fn commands_stream(&self) -> String {
        format!("{}_COMMANDS", self.stream_prefix())
    }

    #[must_use]
    pub fn replies_stream(&self) -> String {
        format!("{}_REPLIES", self.stream_prefix())
    }

    fn stream_prefix(&self) -> String {
        self.prefix.to_ascii_uppercase().replace('-', "_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command() -> Command {
        Command {
            command_id: command_id("0193c3a2-7b1e-7000-8000-000000000001", "charge", Kind::Do),
            saga_id: "0193c3a2-7b1e-7000-8000-000000000001".into(),
            saga_type: "topup".into(),
            step: "charge".into(),
            kind: Kind::Do,
            action: "charge".into(),
            attempt: 2,
            payload: json!({"amount": 1250, "currency": "EUR", "card_token": "tok_visa"}),
            deadline_unix_ms: UnixMillis(1_764_201_600_000),
            reply_subject: Namespace::default().reply_subject(7, "payment"),
        }
    }

    #[test]
    fn golden_command() {
        insta::assert_json_snapshot!("command", command());
    }

    #[test]
    fn golden_replies() {
        let id = command().command_id;
        let replies = vec![
            Reply {
                command_id: id.clone(),
                attempt: 1,
                outcome: Outcome::Ok { output: json!({"charge_id": "ch_1"}) },
            },
            Reply {
                command_id: id.clone(),
                attempt: 1,
                outcome: Outcome::Failed {
                    code: "card_declined".into(),
                    message: "insufficient funds".into(),
                },
            },
            Reply {
                command_id: id,
                attempt: 2,
                outcome: Outcome::retry("provider_unavailable", "HTTP 503"),
            },
        ];
        insta::assert_json_snapshot!("replies", replies);
    }

    #[test]
    fn golden_start() {
        let req = StartRequest {
            idempotency_key: "order-42".into(),
            input: json!({"amount": 100}),
            wait_ms: None,
        };
        let answers = vec![
            StartResponse::Started { saga_id: "s-1".into(), outcome: None },
            StartResponse::Existing { saga_id: "s-1".into(), outcome: None },
            StartResponse::Refused {
                code: "invalid_input".into(),
                message: "input does not match the schema of `topup`".into(),
                errors: vec!["/amount: -1 is less than the minimum of 1".into()],
            },
        ];
        insta::assert_json_snapshot!("start", (req, answers));
    }

    #[test]
    fn golden_subjects() {
        let ns = Namespace::default();
        let names = json!({
            "command_subject": ns.command_subject("ledger", "hold"),
            "participant_filter": ns.participant_filter("ledger"),
            "reply_subject": ns.reply_subject(3, "ledger"),
            "start_subject": ns.start_subject("topup"),
            "inspect_subject": ns.inspect_subject("ledger"),
            "signal_subject": ns.signal_subject("psp_result"),
            "commands_stream": ns.commands_stream(),
            "replies_stream": ns.replies_stream(),
            "msg_id": msg_id(&command_id("s-1", "hold", Kind::Undo), 4),
            "headers": [HEADER_MSG_ID, HEADER_TRACEPARENT],
        });
        insta::assert_json_snapshot!("subjects", names);
    }

    #[test]
    fn ok_output_defaults_to_null_and_unknown_fields_are_refused() {
        let r: Reply =
            serde_json::from_str(r#"{"command_id":"c","attempt":1,"outcome":{"status":"ok"}}"#)
                .unwrap();
        assert_eq!(r.outcome, Outcome::Ok { output: Value::Null });
        assert!(
            serde_json::from_str::<Reply>(
                r#"{"command_id":"c","attempt":1,"outcome":{"status":"maybe"}}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<Reply>(
                r#"{"command_id":"c","attempt":1,"outcom":{"status":"ok"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn direct_subjects_stand_apart_from_the_streams_and_map_back() {
        let ns = Namespace::new("t1").unwrap();
        let command = ns.command_subject("ledger", "hold");
        assert_eq!(ns.direct(&command), "t1.direct.cmd.ledger.hold");
        assert_eq!(ns.direct(&ns.participant_filter("ledger")), "t1.direct.cmd.ledger.>");
        assert_eq!(ns.direct(&ns.partition_replies(3)), "t1.direct.reply.3.*");
        assert_eq!(ns.undirect(&ns.direct(&command)).as_deref(), Some(command.as_str()));
        assert!(ns.is_command_subject(&command));
        assert!(!ns.is_command_subject(&ns.ended_subject("bench")));
        assert!(!ns.is_command_subject("t2.cmd.ledger.hold"));
        let reply = ns.reply_subject(3, "ledger");
        let back = ns.undirect(&ns.direct(&reply)).unwrap();
        assert_eq!(ns.reply_sender(&back), Some("ledger"));
        assert_eq!(ns.undirect(&reply), None, "a stream subject is not a direct one");
        assert_eq!(ns.undirect("t2.direct.reply.3.ledger"), None, "another namespace's");
    }

    #[test]
    fn a_reply_subject_names_its_sender() {
        let ns = Namespace::new("t1").unwrap();
        assert_eq!(ns.reply_sender(&ns.reply_subject(3, "ledger")), Some("ledger"));
        assert_eq!(ns.partition_replies(3), "t1.reply.3.*");
        assert_eq!(ns.replies_of("ledger"), "t1.reply.*.ledger");
        for not_one in [
            "t1.reply.3",
            "t1.reply.x.ledger",
            "t1.reply.3.",
            "t2.reply.3.ledger",
            "t1.reply.3.a.b",
        ] {
            assert_eq!(ns.reply_sender(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn namespace_refuses_unsafe_prefixes() {
        assert!(Namespace::new("t-1_a").is_ok());
        assert_eq!(Namespace::new("t-1_a").unwrap().commands_stream(), "T_1_A_COMMANDS");
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(33)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }
}
