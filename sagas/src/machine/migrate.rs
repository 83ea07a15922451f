//! Moving a running saga to another version of its definition.
//!
//! A saga may move when its recorded history is a valid history of the new
//! version up to where it is: the same type, every step it has reached at the
//! same place with the same name, participant, action and compensation, its
//! input valid under the new schema, and the history replayed under the new
//! version giving the same saga. What it has not reached yet may differ: that
//! is the point of moving it. The move is recorded as an event
//! ([`SagaEvent::DefinitionChanged`]); from then on the saga's history is
//! replayed under the new version.

use super::{SagaEvent, SagaState, SagaStatus, replay};
use crate::definition::Definition;
use std::sync::Arc;

/// Why a saga cannot move to a version: a stable `code` to count by, and
/// what differs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Incompatible {
    /// `other_type`, `ended`, `same_version`, `step_removed`, `step_changed`,
    /// `input_invalid` or `history_differs`.
    pub code: &'static str,
    pub detail: String,
}

fn incompatible(code: &'static str, detail: impl Into<String>) -> Incompatible {
    Incompatible { code, detail: detail.into() }
}

/// The steps a saga has reached: sent (either way), or settled without
/// being sent (skipped by an operator, abandoned).
fn reached(state: &SagaState) -> usize {
    state
        .steps
        .iter()
        .rposition(|s| {
            s.do_progress.attempts > 0
                || s.undo_progress.attempts > 0
                || s.forward != super::Forward::Pending
        })
        .map_or(0, |i| i + 1)
}

/// Whether two steps sit alike: both in line, or both in a parallel group
/// of the same steps, in the same branch of the same steps.
fn same_place(
    from: &Definition,
    old: &crate::definition::StepDef,
    to: &Definition,
    new: &crate::definition::StepDef,
) -> bool {
    match (old.place, new.place) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let (ga, gb) = (&from.groups[a.group], &to.groups[b.group]);
            a.branch == b.branch
                && ga.steps == gb.steps
                && ga.branches.iter().map(|x| &x.steps).eq(gb.branches.iter().map(|x| &x.steps))
        }
        _ => false,
    }
}

/// Whether `state` (a saga replayed from `history`) may move to `to`: the
/// checks of [`check_state`], and its history replayed under `to` gives the
/// same saga.
///
/// # Errors
/// The first reason it may not.
pub fn check(
    state: &SagaState,
    history: &[SagaEvent],
    to: &Arc<Definition>,
) -> Result<(), Incompatible> {
    check_state(state, to)?;
    let moved = replay(to.clone(), history);
    // Steps past those reached are untouched on both sides (checked above);
    // one version may have more of them than the other.
    let common = moved.steps.len().min(state.steps.len());
    if moved.status != state.status
        || moved.steps[..common] != state.steps[..common]
        || moved.cause != state.cause
    {
        return Err(incompatible(
            "history_differs",
            format!("the saga's history replays differently under v{}", to.version),
        ));
    }
    Ok(())
}

/// Whether `state` may move to `to` as far as its state tells: same type,
/// not ended, another version, every step reached unchanged, input valid.
///
/// # Errors
/// The first reason it may not.
pub fn check_state(state: &SagaState, to: &Arc<Definition>) -> Result<(), Incompatible> {
    let from = &state.definition;
    if to.name != from.name {
        return Err(incompatible(
            "other_type",
            format!("the saga is a `{}`, not a `{}`", from.name, to.name),
        ));
    }
    if state.status.is_terminal() || state.status == SagaStatus::NotStarted {
        return Err(incompatible("ended", format!("the saga is {}", state.status)));
    }
    if to.hash == from.hash {
        return Err(incompatible(
            "same_version",
            format!("the saga already runs {} v{}", from.name, from.version),
        ));
    }
    for (index, old) in from.steps.iter().enumerate().take(reached(state)) {
        let Some(new) = to.steps.get(index) else {
            return Err(incompatible(
                "step_removed",
                format!(
                    "step #{} `{}` was reached, and v{} has no step #{}",
                    index + 1,
                    old.name,
                    to.version,
                    index + 1
                ),
            ));
        };
        // The input mapping too: a retry renders it again, and the
        // compensation is sent with what the action was sent with.
        let same = new.name == old.name
            && new.participant == old.participant
            && new.action == old.action
            && new.compensation == old.compensation
            && new.input == old.input
            && new.wait == old.wait
            && same_place(from, old, to, new);
        if !same {
            return Err(incompatible(
                "step_changed",
                format!(
                    "step #{} was reached as `{}` ({}.{}, undo {}) and is `{}` ({}.{}, undo {}, its input mapping, what it waits for and its place in a parallel group compared too) in v{}",
                    index + 1,
                    old.name,
                    old.participant,
                    old.action,
                    old.compensation.as_deref().unwrap_or("none"),
                    new.name,
                    new.participant,
                    new.action,
                    new.compensation.as_deref().unwrap_or("none"),
                    to.version
                ),
            ));
        }
    }
    if let Err(errors) = to.input_schema.check(&state.input) {
        return Err(incompatible(
            "input_invalid",
            format!(
                "the saga's input does not match v{}'s schema: {}",
                to.version,
                errors.join("; ")
            ),
        ));
    }
    Ok(())
}
