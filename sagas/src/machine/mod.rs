//! The saga state machine: pure functions from (state, input, now) to decisions.
//!
//! - [`decide`] looks at a state and one [`Input`] and returns a [`Decision`]:
//!   the events to append, the commands to publish and the next deadline. It may
//!   refuse an input that is illegal in this state ([`TransitionError`]).
//! - [`evolve`] folds one event into a state; it cannot fail.
//! - [`replay`] folds a whole history; recovery is replay.
//! - [`SagaState::in_flight`] lists the commands a saga waits on, exactly as
//!   they were sent: what a new owner re-sends after a takeover.
//!   [`command_sent`] finds any attempt's record in a history (metrics time
//!   answers from it). [`OutgoingCommand::encode`] is the outbox row of one.
//!
//! The shell (the orchestrator) persists the events, publishes the commands
//! through its outbox, and calls `decide` again with `Input::Timeout` once the
//! next deadline has passed.

mod command;
mod decide;
pub mod event;
mod in_flight;
pub mod migrate;
pub mod state;

pub use command::{EncodedCommand, OutgoingCommand};
pub use decide::decide;
pub use event::{CompensationCause, DecodeError, EVENT_VERSION, ParkReason, ResolvedAs, SagaEvent};
pub use in_flight::{SentAttempt, command_sent};
pub use state::{Backward, Forward, Park, Progress, SagaState, SagaStatus, StepState, Wait};

use crate::UnixMillis;
use crate::definition::Definition;
use crate::protocol::{Kind, Reply};
use serde_json::Value;
use std::sync::Arc;

/// Longest saga id accepted (it is part of every command id and message id).
pub const SAGA_ID_LEN_MAX: usize = 128;
/// Longest operator name, reason or evidence accepted, in bytes.
pub const OPERATOR_TEXT_LEN_MAX: usize = 4_096;
/// Most `retry` answers marked unsent (nothing left the participant) one
/// step's `do` or `undo` may get, outside its retry budget: a dependency that
/// is down is waited for, with the step's backoff (so about this many times
/// its `max_backoff`). Past the bound the step is given up as when its budget
/// is spent (an unknown outcome, or a compensation parked); a resume starts a
/// fresh bound. The saga's deadline, when it has one, still ends the wait.
pub const UNSENT_RETRIES_MAX: u32 = 100;

/// Something that happens to a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Begin a new saga with this id and input.
    Start { saga_id: String, input: Value },
    /// A participant answered a command attempt.
    Reply(Reply),
    /// The next deadline the state reported has passed.
    Timeout,
    /// An operator acted.
    Operator(OperatorInput),
    /// An operator moves the running saga to another version of its definition.
    Migrate { to: Arc<Definition>, by: String, reason: String },
    /// An event from outside arrived for the saga (what a waiting step waits for).
    Signal(Signal),
}

/// An event from outside, sent to one saga.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// What happened (`psp_result`): the `wait_for.event` of the step it is for.
    pub name: String,
    /// The sender's id for this event: the same id again is a duplicate.
    pub event_id: String,
    /// The correlation key it carries, if the waiting step asks for one.
    pub key: Option<String>,
    /// Its body: the waiting step's output.
    pub payload: Value,
}

/// Longest event id or key of a signal.
pub const SIGNAL_ID_LEN_MAX: usize = 128;
/// Largest signal body, in bytes.
pub const SIGNAL_BYTES_MAX: usize = 64 * 1024;
/// Most signals one saga keeps (each is in its history).
pub const SIGNALS_MAX: usize = 64;

/// An operator's action, who took it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInput {
    pub action: OperatorAction,
    pub by: String,
    /// Why (required for skip, abort and resolve, where it is the evidence).
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Send the current command again now instead of waiting.
    RetryNow,
    /// Skip the current step (treated as done) or compensation (treated as undone).
    Skip,
    /// Stop going forward and compensate now (only before the pivot is sent).
    Abort,
    /// Retry the command a parked saga is stuck on, with a fresh retry budget.
    Resume,
    /// End the saga by hand in the given state.
    Resolve(ResolvedAs),
}

impl OperatorAction {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryNow => "retry",
            Self::Skip => "skip",
            Self::Abort => "abort",
            Self::Resume => "resume",
            Self::Resolve(_) => "resolve",
        }
    }
}

/// Why an input was accepted but changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// The same answer was already recorded.
    Duplicate,
    /// An answer to an attempt that was already given up on.
    Stale,
    /// The saga has ended; late input is ignored by design.
    Ended,
}

/// What the shell must do: append `events`, publish `commands`, and come back
/// with `Input::Timeout` at `next_deadline`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub events: Vec<SagaEvent>,
    pub commands: Vec<OutgoingCommand>,
    pub next_deadline: Option<UnixMillis>,
    /// Set when the input was legal but changed nothing.
    pub absorbed: Option<Absorbed>,
}

/// An input that is not legal in the saga's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("the saga has not started")]
    NotStarted,
    #[error("the saga has already started")]
    AlreadyStarted,
    #[error("saga id `{saga_id}` must be 1-{SAGA_ID_LEN_MAX} ASCII letters, digits, `_` or `-`")]
    InvalidSagaId { saga_id: String },
    #[error("the input does not match the schema of `{saga_type}`: {}", errors.join("; "))]
    InvalidInput { saga_type: String, errors: Vec<String> },
    #[error("command `{command_id}` does not belong to this saga")]
    UnknownCommand { command_id: String },
    #[error("attempt {attempt} of command `{command_id}` was never sent (latest: {sent})")]
    UnknownAttempt { command_id: String, attempt: u32, sent: u32 },
    #[error("nothing is due yet (next deadline: {next:?})")]
    NotDue { next: Option<UnixMillis> },
    #[error("the saga has ended ({status}); nothing can change it")]
    Ended { status: SagaStatus },
    #[error("`{action}` is not possible while the saga is {status}: {hint}")]
    NotNow { action: &'static str, status: SagaStatus, hint: &'static str },
    #[error(
        "step `{step}` ({kind}) has used all {attempts} attempts of its retry budget; wait for it to park, then resume"
    )]
    RetryBudgetSpent { step: String, kind: Kind, attempts: u32 },
    #[error(
        "the saga can no longer be aborted: its pivot step `{pivot}` has been sent and cannot be undone"
    )]
    PastPivot { pivot: String },
    #[error("`{action}` needs a reason")]
    ReasonRequired { action: &'static str },
    #[error("the operator's name is missing")]
    OperatorMissing,
    #[error("`{field}` is {len} bytes, over the limit of {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("the saga cannot move to that version: {0}")]
    Incompatible(migrate::Incompatible),
    #[error("the event cannot be taken: {problem}")]
    InvalidSignal { problem: String },
    #[error("the saga already holds {SIGNALS_MAX} events, the most it keeps")]
    TooManySignals,
}

/// Fold one event into a state. Never fails.
#[must_use]
pub fn evolve(mut state: SagaState, event: &SagaEvent) -> SagaState {
    state.apply(event);
    state
}

/// Rebuild a saga from its history.
#[must_use]
pub fn replay<'a>(
    definition: Arc<Definition>,
    events: impl IntoIterator<Item = &'a SagaEvent>,
) -> SagaState {
    events.into_iter().fold(SagaState::new(definition), evolve)
}

#[cfg(test)]
mod tests;
