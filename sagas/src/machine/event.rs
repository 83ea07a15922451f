//! The events that make up a saga's history.
//!
//! Events are facts, never commands: each says what happened and carries
//! everything [`super::evolve`] needs, so replay never consults a clock or the
//! outside world. They are stored as JSON with a format version beside the
//! `type` tag (`{"v":2,"type":"step_succeeded",...}`); [`SagaEvent::decode`]
//! reads every version ever written, so old histories replay after an upgrade.

use crate::UnixMillis;
use crate::protocol::Kind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The event format written today. Version 2 added `step_skipped_by_condition`,
/// `signal_received` and `wait_started`; every version 1 event reads as it did.
pub const EVENT_VERSION: u16 = 2;

/// Why a saga turned back and began compensating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum CompensationCause {
    /// A step answered `failed` (or its input could not be rendered).
    StepFailed { step: String, code: String, message: String },
    /// A step's retries were spent without a definite answer.
    StepUnknown { step: String },
    /// The saga deadline passed before the pivot was sent.
    DeadlineExceeded,
    /// An operator aborted the saga.
    Aborted { by: String, reason: String },
}

/// Why a saga stopped and waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkReason {
    /// A compensation's retries were spent without success.
    CompensationStuck,
    /// A compensation was refused by its participant (`failed`).
    CompensationFailed,
    /// A step at or after the pivot failed or its outcome is unknown, so the
    /// saga can go neither forward nor back by itself.
    ForwardStuck,
}

impl ParkReason {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CompensationStuck => "compensation_stuck",
            Self::CompensationFailed => "compensation_failed",
            Self::ForwardStuck => "forward_stuck",
        }
    }
}

/// The end state an operator records when resolving a saga by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedAs {
    Completed,
    Compensated,
    Failed,
}

/// One fact in a saga's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaEvent {
    SagaStarted {
        saga_id: String,
        saga_type: String,
        definition_hash: String,
        input: Value,
        deadline_at: Option<UnixMillis>,
        at: UnixMillis,
    },
    /// An attempt of a command was handed to the outbox.
    CommandSent {
        step: String,
        kind: Kind,
        attempt: u32,
        command_id: String,
        payload: Value,
        timeout_at: UnixMillis,
        at: UnixMillis,
    },
    /// The step's action took effect.
    StepSucceeded {
        step: String,
        attempt: u32,
        output: Value,
        at: UnixMillis,
    },
    /// The step's action was refused for good; it had no effect.
    StepFailed {
        step: String,
        attempt: u32,
        code: String,
        message: String,
        at: UnixMillis,
    },
    /// One attempt ended without a definite answer (a `retry` reply or a timeout).
    /// `retry_at` is when the next attempt goes out, `None` when the policy is spent.
    AttemptFailed {
        step: String,
        kind: Kind,
        attempt: u32,
        code: String,
        message: String,
        timed_out: bool,
        /// The participant said nothing left it: the attempt is not counted
        /// against the retry budget. (Absent in histories before it existed.)
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unsent: bool,
        retry_at: Option<UnixMillis>,
        at: UnixMillis,
    },
    /// The step may or may not have taken effect; it will be compensated.
    StepOutcomeUnknown {
        step: String,
        at: UnixMillis,
    },
    /// The step was stopped before any attempt could have taken effect.
    StepAbandoned {
        step: String,
        at: UnixMillis,
    },
    CompensationStarted {
        cause: CompensationCause,
        at: UnixMillis,
    },
    /// The step's compensation took effect.
    StepCompensated {
        step: String,
        attempt: u32,
        at: UnixMillis,
    },
    /// A success arrived for a step already given up on; it is now compensated too.
    LateSuccessRecorded {
        step: String,
        attempt: u32,
        output: Value,
        at: UnixMillis,
    },
    /// An operator sent the current command again without waiting.
    OperatorRetried {
        step: String,
        kind: Kind,
        by: String,
        reason: String,
        at: UnixMillis,
    },
    /// An operator skipped a step (`do`: treated as done, never compensated) or
    /// a compensation (`undo`: treated as undone).
    StepSkipped {
        step: String,
        kind: Kind,
        by: String,
        reason: String,
        at: UnixMillis,
    },
    /// The step's `when:` condition was false when the step was reached: it
    /// is skipped, never sent and never compensated.
    StepSkippedByCondition {
        step: String,
        /// The condition as written.
        condition: String,
        at: UnixMillis,
    },
    /// An event from outside arrived for the saga; a waiting step takes the
    /// first one that fits it, in the order they arrived.
    SignalReceived {
        name: String,
        event_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        payload: Value,
        at: UnixMillis,
    },
    /// A waiting step began waiting for `event` (with `key`, when it asks
    /// for one) until `timeout_at`.
    WaitStarted {
        step: String,
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        timeout_at: UnixMillis,
        at: UnixMillis,
    },
    /// An operator moved the running saga to another version of its
    /// definition (one its history is valid under); from here on the whole
    /// history is replayed under `to_hash`.
    DefinitionChanged {
        from_hash: String,
        from_version: u32,
        to_hash: String,
        to_version: u32,
        by: String,
        reason: String,
        at: UnixMillis,
    },
    /// An operator resumed a parked saga with a fresh retry budget.
    SagaResumed {
        step: String,
        kind: Kind,
        by: String,
        reason: String,
        at: UnixMillis,
    },
    SagaParked {
        step: String,
        kind: Kind,
        reason: ParkReason,
        message: String,
        at: UnixMillis,
    },
    SagaCompleted {
        at: UnixMillis,
        /// The definition's `output:`, rendered when the saga completed.
        /// (Absent when it declares none, and in histories before it existed.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// Why `output:` could not be rendered (a path absent at run time);
        /// the saga completed all the same.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_error: Option<String>,
    },
    SagaCompensated {
        at: UnixMillis,
    },
    /// Nothing took effect, so nothing needed undoing.
    SagaFailed {
        cause: CompensationCause,
        at: UnixMillis,
    },
    /// An operator ended the saga by hand, with evidence.
    SagaResolved {
        outcome: ResolvedAs,
        by: String,
        evidence: String,
        at: UnixMillis,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u16,
    #[serde(flatten)]
    event: &'a SagaEvent,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u16,
    #[serde(flatten)]
    body: serde_json::Map<String, Value>,
}

/// A stored event that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event is not a JSON object with a version `v`: {0}")]
    Envelope(serde_json::Error),
    #[error(
        "event version {found} is newer than this build understands ({EVENT_VERSION}); upgrade Skald"
    )]
    TooNew { found: u16 },
    #[error("event of version {version} does not match its schema: {source}")]
    Body { version: u16, source: serde_json::Error },
}

impl SagaEvent {
    /// The stored form: JSON with the format version.
    pub fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&EnvelopeOut { v: EVENT_VERSION, event: self })
    }

    /// Read a stored event of any version.
    pub fn decode(json: &str) -> Result<Self, DecodeError> {
        let env: EnvelopeIn = serde_json::from_str(json).map_err(DecodeError::Envelope)?;
        match env.v {
            // Version 2 only added event types, so a version 1 body reads as
            // it is. A version that changes a body adds an arm that upcasts
            // the older bodies before deserializing.
            version @ (1 | 2) => serde_json::from_value(Value::Object(env.body))
                .map_err(|source| DecodeError::Body { version, source }),
            found => Err(DecodeError::TooNew { found }),
        }
    }

    /// When the event happened.
    #[must_use]
    pub fn at(&self) -> UnixMillis {
        match self {
            Self::SagaStarted { at, .. }
            | Self::CommandSent { at, .. }
            | Self::StepSucceeded { at, .. }
            | Self::StepFailed { at, .. }
            | Self::AttemptFailed { at, .. }
            | Self::StepOutcomeUnknown { at, .. }
            | Self::StepAbandoned { at, .. }
            | Self::CompensationStarted { at, .. }
            | Self::StepCompensated { at, .. }
            | Self::LateSuccessRecorded { at, .. }
            | Self::OperatorRetried { at, .. }
            | Self::StepSkipped { at, .. }
            | Self::StepSkippedByCondition { at, .. }
            | Self::SignalReceived { at, .. }
            | Self::WaitStarted { at, .. }
            | Self::DefinitionChanged { at, .. }
            | Self::SagaResumed { at, .. }
            | Self::SagaParked { at, .. }
            | Self::SagaCompleted { at, .. }
            | Self::SagaCompensated { at }
            | Self::SagaFailed { at, .. }
            | Self::SagaResolved { at, .. } => *at,
        }
    }

    /// True for the events after which nothing may follow.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::SagaCompleted { .. }
                | Self::SagaCompensated { .. }
                | Self::SagaFailed { .. }
                | Self::SagaResolved { .. }
        )
    }

    /// The tag name, e.g. `step_succeeded`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::SagaStarted { .. } => "saga_started",
            Self::CommandSent { .. } => "command_sent",
            Self::StepSucceeded { .. } => "step_succeeded",
            Self::StepFailed { .. } => "step_failed",
            Self::AttemptFailed { .. } => "attempt_failed",
            Self::StepOutcomeUnknown { .. } => "step_outcome_unknown",
            Self::StepAbandoned { .. } => "step_abandoned",
            Self::CompensationStarted { .. } => "compensation_started",
            Self::StepCompensated { .. } => "step_compensated",
            Self::LateSuccessRecorded { .. } => "late_success_recorded",
            Self::OperatorRetried { .. } => "operator_retried",
            Self::StepSkipped { .. } => "step_skipped",
            Self::StepSkippedByCondition { .. } => "step_skipped_by_condition",
            Self::SignalReceived { .. } => "signal_received",
            Self::WaitStarted { .. } => "wait_started",
            Self::SagaResumed { .. } => "saga_resumed",
            Self::SagaParked { .. } => "saga_parked",
            Self::SagaCompleted { .. } => "saga_completed",
            Self::SagaCompensated { .. } => "saga_compensated",
            Self::SagaFailed { .. } => "saga_failed",
            Self::SagaResolved { .. } => "saga_resolved",
            Self::DefinitionChanged { .. } => "definition_changed",
        }
    }
}
