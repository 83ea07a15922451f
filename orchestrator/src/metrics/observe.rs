//! Pure observation: which command attempts a decision settled, and how long
//! each took, read from the state, history and decision the driver already has.

use super::StepOutcome;
use sagas::UnixMillis;
use sagas::machine::{Decision, Input, SagaEvent, SagaState, command_sent};
use sagas::protocol::{Kind, Outcome, command_id};
use std::time::Duration;

/// One command attempt that a decision settled: answered or timed out.
#[derive(Debug, Clone, PartialEq)]
pub struct StepObservation {
    pub participant: String,
    pub action: String,
    pub kind: Kind,
    pub outcome: StepOutcome,
    /// From the attempt's `command_sent` to the event that recorded its answer;
    /// none for a timeout.
    pub latency: Option<Duration>,
}

/// The command attempts `decision` settled, given the state and history it
/// was decided on: the attempt a reply answered (if the machine recorded it:
/// duplicates and stale answers are absorbed and not counted), or every
/// attempt a timeout gave up on.
#[must_use]
pub fn step_observations(
    before: &SagaState,
    history: &[SagaEvent],
    input: &Input,
    decision: &Decision,
) -> Vec<StepObservation> {
    match input {
        Input::Reply(reply) => {
            let outcome = match reply.outcome {
                Outcome::Ok { .. } => StepOutcome::Ok,
                Outcome::Failed { .. } => StepOutcome::Failed,
                Outcome::Retry { .. } => StepOutcome::Retry,
            };
            decision
                .events
                .iter()
                .filter_map(answered)
                .find(|a| {
                    a.attempt == reply.attempt
                        && command_id(&before.saga_id, a.step, a.kind) == reply.command_id
                })
                .and_then(|a| observe(before, history, &a, outcome))
                .into_iter()
                .collect()
        }
        Input::Timeout => decision
            .events
            .iter()
            .filter_map(|e| match e {
                SagaEvent::AttemptFailed { timed_out: true, .. } => answered(e),
                _ => None,
            })
            .filter_map(|a| observe(before, history, &a, StepOutcome::Timeout))
            .collect(),
        Input::Start { .. } | Input::Operator(_) | Input::Migrate { .. } | Input::Signal(_) => {
            Vec::new()
        }
    }
}

/// The attempt an answer event is about.
struct Answered<'a> {
    step: &'a str,
    kind: Kind,
    attempt: u32,
    at: UnixMillis,
}

fn answered(event: &SagaEvent) -> Option<Answered<'_>> {
    let (step, kind, attempt, at) = match event {
        SagaEvent::StepSucceeded { step, attempt, at, .. }
        | SagaEvent::LateSuccessRecorded { step, attempt, at, .. }
        | SagaEvent::StepFailed { step, attempt, at, .. } => (step, Kind::Do, *attempt, *at),
        SagaEvent::StepCompensated { step, attempt, at } => (step, Kind::Undo, *attempt, *at),
        SagaEvent::AttemptFailed { step, kind, attempt, at, .. } => (step, *kind, *attempt, *at),
        _ => return None,
    };
    Some(Answered { step, kind, attempt, at })
}

fn observe(
    before: &SagaState,
    history: &[SagaEvent],
    a: &Answered<'_>,
    outcome: StepOutcome,
) -> Option<StepObservation> {
    let def = &before.definition.steps[before.definition.step_index(a.step)?];
    let action = def.action_for(a.kind)?.to_owned();
    let sent_at = command_sent(history, a.step, a.kind, a.attempt).map(|sent| sent.sent_at);
    let latency = sent_at
        .filter(|_| outcome != StepOutcome::Timeout)
        .map(|sent| Duration::from_millis(a.at.0.saturating_sub(sent.0)));
    Some(StepObservation {
        participant: def.participant.clone(),
        action,
        kind: a.kind,
        outcome,
        latency,
    })
}
