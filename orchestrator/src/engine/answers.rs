//! What the driver answers: its errors (a refused start, an input the saga
//! cannot take, a store fault), an accepted start, a repair's outcome, and the
//! limits it checks before anything is written.

use crate::store::StoreError;
use sagas::machine::TransitionError;

/// How often one input is re-decided after concurrent appends before giving up.
pub const CONFLICT_RETRIES_MAX: u32 = 16;
/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("saga {saga_id} does not exist")]
    UnknownSaga { saga_id: String },
    #[error("saga {saga_id} uses definition {hash}, which this orchestrator does not know")]
    UnknownDefinition { saga_id: String, hash: String },
    #[error("`{saga_type}` has no version {version} here; register it first")]
    UnknownVersion { saga_type: String, version: u32 },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("saga {saga_id} kept changing under {CONFLICT_RETRIES_MAX} attempts to update it")]
    Contended { saga_id: String },
    #[error("this instance does not own partition {partition}; its owner handles the saga")]
    NotOwner { partition: i32 },
    #[error("a reply to {command_id} came from `{sender}`, but that command went to `{addressee}`")]
    WrongSender { command_id: String, sender: String, addressee: String },
    #[error("the request id must be 1-{REQUEST_ID_LEN_MAX} characters, without NUL")]
    BadRequestId,
    #[error(
        "request id `{request_id}` was already used for `{action}` on saga {saga_id}; use a new request id"
    )]
    RequestReused { request_id: String, saga_id: String, action: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest repair request id accepted.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// What an operator's repair did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RepairOutcome {
    pub saga_id: String,
    /// `retry`, `skip`, `abort`, `resume` or `resolve`.
    pub action: String,
    /// The saga's status after the repair.
    pub status: String,
    /// The events the repair appended (their `type`).
    pub events: Vec<String>,
    /// True when this is the recorded answer to an earlier, identical request.
    #[serde(default)]
    pub replayed: bool,
}

/// Why a start was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown saga type `{saga_type}`; known types: {known}")]
    UnknownType { saga_type: String, known: String },
    #[error("the idempotency key must be 1-{IDEMPOTENCY_KEY_LEN_MAX} characters, without NUL")]
    BadKey,
    #[error("the input does not match the schema of `{saga_type}`")]
    InvalidInput { saga_type: String, errors: Vec<String> },
    #[error(
        "idempotency key `{key}` was already used for saga {saga_id} with a different input; use a new key for a new saga"
    )]
    Conflict { key: String, saga_id: String },
    #[error(transparent)]
    Drive(#[from] DriveError),
}

impl StartError {
    /// The protocol's refusal code for this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownType { .. } => "unknown_type",
            Self::BadKey => "bad_request",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Conflict { .. } => "conflict",
            Self::Drive(_) => "unavailable",
        }
    }
}

/// A start that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    New { saga_id: String },
    Existing { saga_id: String },
}

impl Started {
    #[must_use]
    pub fn saga_id(&self) -> &str {
        match self {
            Self::New { saga_id } | Self::Existing { saga_id } => saga_id,
        }
    }
}
