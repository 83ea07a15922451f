//! Comparing the orchestrator's record of a saga with what each participant
//! recorded: pure (a history, a definition and the participants' answers in;
//! the audit out), so every rule is tested without a bus.
//!
//! Per step, the orchestrator's side is where its `do` and `undo` ended
//! ([`DoHere`], [`UndoHere`]); the participant's is its inbox entries and the
//! effect it reports. They must agree:
//!
//! | here | there must be | else |
//! |---|---|---|
//! | compensated | an `undo` entry; the effect not in force | `missing_record`, `not_undone` |
//! | succeeded (not compensated) | a `do` entry `ok`; the effect in force | `missing_record`, `outcome_differs`, `no_effect`, `undone_there` |
//! | failed | a `do` entry `failed`; no effect in force | `missing_record`, `outcome_differs`, `unexpected_effect` |
//! | not sent | no entry | `unexpected_record` |
//!
//! A step in flight, given up with its outcome unknown and not yet
//! compensated, or skipped by an operator is not compared. Beside the steps, a
//! participant may report effects no command explains; one in force is
//! `unexplained_effect` (a charge at the provider with no saga step). A
//! participant that did not answer leaves its steps unchecked, which is not
//! a disagreement but is counted.

use sagas::definition::Definition;
use sagas::machine::SagaEvent;
use sagas::protocol::{
    CommandRecord, Effect, EffectState, InspectSaga, InspectedCommand, Kind, Outcome, Recorded,
    SagaRecords,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a step's action stands in the orchestrator's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DoHere {
    NotSent,
    InFlight,
    Succeeded,
    Failed,
    /// Given up without a definite answer.
    Unknown,
    /// Stopped before any attempt could have taken effect.
    Abandoned,
    /// Skipped by an operator.
    Skipped,
    /// Its `when:` condition was false: never sent.
    SkippedByCondition,
}

/// Where a step's compensation stands in the orchestrator's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UndoHere {
    NotSent,
    InFlight,
    Compensated,
    Skipped,
}

/// A kind of disagreement between the orchestrator and a participant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DisagreementKind {
    /// The participant has no record of a command the orchestrator has an answer to.
    MissingRecord,
    /// The participant recorded another outcome than the orchestrator did.
    OutcomeDiffers,
    /// The step succeeded here; the participant reports no effect.
    NoEffect,
    /// The step succeeded and was not compensated here; the participant reports its effect undone.
    UndoneThere,
    /// The step was compensated here; its effect is still in force there.
    NotUndone,
    /// The step failed here; an effect of it is in force there.
    UnexpectedEffect,
    /// The participant recorded a command the orchestrator never sent.
    UnexpectedRecord,
    /// The participant holds an effect for the saga that no command explains.
    UnexplainedEffect,
}

impl DisagreementKind {
    pub const ALL: [Self; 8] = [
        Self::MissingRecord,
        Self::OutcomeDiffers,
        Self::NoEffect,
        Self::UndoneThere,
        Self::NotUndone,
        Self::UnexpectedEffect,
        Self::UnexpectedRecord,
        Self::UnexplainedEffect,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingRecord => "missing_record",
            Self::OutcomeDiffers => "outcome_differs",
            Self::NoEffect => "no_effect",
            Self::UndoneThere => "undone_there",
            Self::NotUndone => "not_undone",
            Self::UnexpectedEffect => "unexpected_effect",
            Self::UnexpectedRecord => "unexpected_record",
            Self::UnexplainedEffect => "unexplained_effect",
        }
    }
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disagreement {
    pub kind: DisagreementKind,
    pub participant: String,
    /// The step it concerns, when it concerns one.
    pub step: Option<String>,
    /// For people: what differs.
    pub message: String,
}

/// How a step's two sides compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Agrees,
    Disagrees,
    /// Not compared (see `note`).
    NotCompared,
    /// The participant did not answer.
    Unchecked,
}

/// One step, both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepAudit {
    pub step: String,
    pub participant: String,
    /// The orchestrator's record.
    #[serde(rename = "do")]
    pub do_here: DoHere,
    pub undo: UndoHere,
    /// The participant's inbox entry for the step's `do`.
    #[schema(value_type = Option<Object>)]
    pub recorded_do: Option<Recorded>,
    /// The participant's inbox entry for the step's `undo`.
    #[schema(value_type = Option<Object>)]
    pub recorded_undo: Option<Recorded>,
    /// The effect the participant reports (state, what, id, detail).
    #[schema(value_type = Option<Object>)]
    pub effect: Option<Effect>,
    pub verdict: Verdict,
    /// Why the step was not compared, or what is worth knowing.
    pub note: Option<String>,
}

/// The columns of [`StepAudit::cells`].
pub const STEP_COLUMNS: [&str; 8] = [
    "step",
    "participant",
    "do here",
    "undo here",
    "do there",
    "undo there",
    "effect there",
    "verdict",
];

impl StepAudit {
    /// The step as one row of text under [`STEP_COLUMNS`] (the CLI's table
    /// and the console's panel).
    #[must_use]
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.step.clone(),
            self.participant.clone(),
            word(&self.do_here),
            word(&self.undo),
            recorded_text(self.recorded_do.as_ref()),
            recorded_text(self.recorded_undo.as_ref()),
            effect_text(self.effect.as_ref()),
            word(&self.verdict),
        ]
    }
}

impl Unexplained {
    /// What it is, as text.
    #[must_use]
    pub fn text(&self) -> String {
        match (&self.recorded, &self.effect) {
            (Some(r), _) => format!("{} {}", r.command_id, recorded_text(Some(r))),
            (None, Some(e)) => effect_text(Some(e)),
            (None, None) => "-".into(),
        }
    }
}

/// A unit enum's name as it is on the wire (`not_sent`, `in_flight`).
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// An inbox entry as text: `ok`, `failed card_declined`, `ok (tombstone)`, `-`.
#[must_use]
pub fn recorded_text(r: Option<&Recorded>) -> String {
    let Some(r) = r else { return "-".into() };
    let what = outcome_text(&r.outcome);
    if r.tombstone { format!("{what} (tombstone)") } else { what }
}

/// An effect as text: `transfer t-1: in_force`, `-`.
#[must_use]
pub fn effect_text(e: Option<&Effect>) -> String {
    let Some(e) = e else { return "-".into() };
    let id = e.id.as_deref().map(|id| format!(" {id}")).unwrap_or_default();
    format!("{}{id}: {}", e.what, e.state.as_str())
}

/// Something a participant recorded for the saga that no step explains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unexplained {
    pub participant: String,
    /// An inbox entry of a command the orchestrator never sent.
    #[schema(value_type = Option<Object>)]
    pub recorded: Option<Recorded>,
    /// An effect no command explains.
    #[schema(value_type = Option<Object>)]
    pub effect: Option<Effect>,
}

/// A participant that could not be asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unchecked {
    pub participant: String,
    pub reason: String,
}

/// One saga across services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaAudit {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    pub steps: Vec<StepAudit>,
    pub unexplained: Vec<Unexplained>,
    pub unchecked: Vec<Unchecked>,
    pub disagreements: Vec<Disagreement>,
}

/// A step as the orchestrator recorded it: the last command of each kind and
/// where each kind ended.
#[derive(Debug, Clone)]
struct Here {
    participant: String,
    do_here: DoHere,
    undo: UndoHere,
    sent_do: Option<InspectedCommand>,
    sent_undo: Option<InspectedCommand>,
}

/// What to ask and how to judge the answers, for one saga.
#[derive(Debug, Clone)]
pub struct Plan {
    pub saga_id: String,
    pub saga_type: String,
    pub status: String,
    /// An operator resolved the saga by hand (what was in flight stays unanswered).
    resolved: bool,
    steps: Vec<(String, Here)>,
}

impl Plan {
    /// Read the orchestrator's side from the saga's history.
    #[must_use]
    pub fn new(saga_id: &str, status: &str, definition: &Definition, events: &[SagaEvent]) -> Self {
        let mut steps: Vec<(String, Here)> = definition
            .steps
            .iter()
            .map(|s| {
                let here = Here {
                    // A waiting step is not compared (its compensation, if it
                    // has one, undoes what the event confirmed, not an effect
                    // a `do` recorded): nobody is asked about it.
                    participant: if s.wait.is_some() {
                        String::new()
                    } else {
                        s.participant.clone()
                    },
                    do_here: DoHere::NotSent,
                    undo: UndoHere::NotSent,
                    sent_do: None,
                    sent_undo: None,
                };
                (s.name.clone(), here)
            })
            .collect();
        let index: BTreeMap<String, usize> =
            steps.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
        let set_do = |steps: &mut Vec<(String, Here)>, name: &str, to: DoHere| {
            if let Some(&i) = index.get(name) {
                steps[i].1.do_here = to;
            }
        };
        for event in events {
            let step_of = |name: &str| index.get(name).copied();
            match event {
                SagaEvent::CommandSent { step, kind, command_id, payload, .. } => {
                    let Some(i) = step_of(step) else { continue };
                    let def = &definition.steps[i];
                    let action = match kind {
                        Kind::Do => def.action.clone(),
                        Kind::Undo => def.compensation.clone().unwrap_or_default(),
                    };
                    let sent = InspectedCommand {
                        command_id: command_id.clone(),
                        step: step.clone(),
                        kind: *kind,
                        action,
                        payload: payload.clone(),
                    };
                    let here = &mut steps[i].1;
                    match kind {
                        Kind::Do => {
                            here.do_here = DoHere::InFlight;
                            here.sent_do = Some(sent);
                        }
                        Kind::Undo => {
                            here.undo = UndoHere::InFlight;
                            here.sent_undo = Some(sent);
                        }
                    }
                }
                SagaEvent::StepSucceeded { step, .. }
                | SagaEvent::LateSuccessRecorded { step, .. } => {
                    set_do(&mut steps, step, DoHere::Succeeded);
                }
                SagaEvent::StepFailed { step, .. } => set_do(&mut steps, step, DoHere::Failed),
                SagaEvent::StepOutcomeUnknown { step, .. } => {
                    set_do(&mut steps, step, DoHere::Unknown);
                }
                SagaEvent::StepAbandoned { step, .. } => {
                    set_do(&mut steps, step, DoHere::Abandoned)
                }
                SagaEvent::StepSkippedByCondition { step, .. } => {
                    set_do(&mut steps, step, DoHere::SkippedByCondition);
                }
                SagaEvent::StepCompensated { step, .. } => {
                    if let Some(i) = step_of(step) {
                        steps[i].1.undo = UndoHere::Compensated;
                    }
                }
                SagaEvent::StepSkipped { step, kind, .. } => {
                    if let Some(i) = step_of(step) {
                        match kind {
                            Kind::Do => steps[i].1.do_here = DoHere::Skipped,
                            Kind::Undo => steps[i].1.undo = UndoHere::Skipped,
                        }
                    }
                }
                _ => {}
            }
        }
        let resolved = events.iter().any(|e| matches!(e, SagaEvent::SagaResolved { .. }));
        Self {
            saga_id: saga_id.to_owned(),
            saga_type: definition.name.clone(),
            status: status.to_owned(),
            resolved,
            steps,
        }
    }

    /// What to ask each participant the saga's definition names: the
    /// commands sent to it (none, for one never sent anything: it is asked
    /// all the same, for what it recorded that nobody sent).
    #[must_use]
    pub fn asks(&self) -> BTreeMap<String, InspectSaga> {
        let mut asks: BTreeMap<String, InspectSaga> = BTreeMap::new();
        // A waiting step involves no participant.
        for (_, here) in self.steps.iter().filter(|(_, h)| !h.participant.is_empty()) {
            let ask = asks
                .entry(here.participant.clone())
                .or_insert_with(|| InspectSaga { saga_id: self.saga_id.clone(), commands: vec![] });
            ask.commands.extend(here.sent_do.iter().cloned());
            ask.commands.extend(here.sent_undo.iter().cloned());
        }
        asks
    }

    /// The audit, given each participant's answer for this saga (or why
    /// there is none).
    #[must_use]
    pub fn judge(&self, answers: &BTreeMap<String, Result<SagaRecords, String>>) -> SagaAudit {
        let mut audit = SagaAudit {
            saga_id: self.saga_id.clone(),
            saga_type: self.saga_type.clone(),
            status: self.status.clone(),
            steps: Vec::with_capacity(self.steps.len()),
            unexplained: Vec::new(),
            unchecked: Vec::new(),
            disagreements: Vec::new(),
        };
        for (participant, answer) in answers {
            match answer {
                Err(reason) => audit
                    .unchecked
                    .push(Unchecked { participant: participant.clone(), reason: reason.clone() }),
                Ok(records) => {
                    if let Some(error) = &records.error {
                        audit.unchecked.push(Unchecked {
                            participant: participant.clone(),
                            reason: format!("answered in part: {error}"),
                        });
                    }
                }
            }
        }
        for (name, here) in &self.steps {
            if here.participant.is_empty() {
                audit.steps.push(StepAudit {
                    step: name.clone(),
                    participant: "-".into(),
                    do_here: here.do_here,
                    undo: here.undo,
                    recorded_do: None,
                    recorded_undo: None,
                    effect: None,
                    verdict: Verdict::NotCompared,
                    note: Some("waits for an event from outside: no participant to ask".into()),
                });
                continue;
            }
            let answer = answers.get(&here.participant);
            let Some(Ok(records)) = answer else {
                audit.steps.push(StepAudit {
                    step: name.clone(),
                    participant: here.participant.clone(),
                    do_here: here.do_here,
                    undo: here.undo,
                    recorded_do: None,
                    recorded_undo: None,
                    effect: None,
                    verdict: Verdict::Unchecked,
                    note: Some("the participant did not answer".into()),
                });
                continue;
            };
            let find = |sent: &Option<InspectedCommand>| -> Option<&CommandRecord> {
                let id = &sent.as_ref()?.command_id;
                records.commands.iter().find(|c| &c.command_id == id)
            };
            let (do_record, undo_record) = (find(&here.sent_do), find(&here.sent_undo));
            let recorded_do = do_record.and_then(|c| c.recorded.clone());
            let recorded_undo = undo_record.and_then(|c| c.recorded.clone());
            // The step's effect: as reported for its `do`, else for its `undo`.
            let effect = do_record
                .and_then(|c| c.effect.clone())
                .or_else(|| undo_record.and_then(|c| c.effect.clone()));
            let mut found = Vec::new();
            let (compared, note) = if let Some(error) = &records.error {
                // What the participant could tell is shown; nothing is judged on half an answer.
                (false, Some(format!("the participant answered in part ({error}): not compared")))
            } else {
                compare(
                    name,
                    here,
                    self.resolved,
                    recorded_do.as_ref(),
                    recorded_undo.as_ref(),
                    effect.as_ref(),
                    &mut found,
                )
            };
            let verdict = if !found.is_empty() {
                Verdict::Disagrees
            } else if records.error.is_some() {
                Verdict::Unchecked
            } else if compared {
                Verdict::Agrees
            } else {
                Verdict::NotCompared
            };
            audit.disagreements.extend(found.into_iter().map(|(kind, message)| Disagreement {
                kind,
                participant: here.participant.clone(),
                step: Some(name.clone()),
                message,
            }));
            audit.steps.push(StepAudit {
                step: name.clone(),
                participant: here.participant.clone(),
                do_here: here.do_here,
                undo: here.undo,
                recorded_do,
                recorded_undo,
                effect,
                verdict,
                note,
            });
        }
        for (participant, answer) in answers {
            let Ok(records) = answer else { continue };
            for recorded in &records.unasked {
                audit.disagreements.push(Disagreement {
                    kind: DisagreementKind::UnexpectedRecord,
                    participant: participant.clone(),
                    step: Some(recorded.step.clone()),
                    message: format!(
                        "{participant} recorded `{}` ({}), which this saga never sent",
                        recorded.command_id,
                        outcome_text(&recorded.outcome)
                    ),
                });
                audit.unexplained.push(Unexplained {
                    participant: participant.clone(),
                    recorded: Some(recorded.clone()),
                    effect: None,
                });
            }
            for effect in &records.others {
                if effect.state == EffectState::InForce {
                    audit.disagreements.push(Disagreement {
                        kind: DisagreementKind::UnexplainedEffect,
                        participant: participant.clone(),
                        step: None,
                        message: format!(
                            "{participant} holds a {}{} for this saga that no step of it made",
                            effect.what,
                            effect.id.as_deref().map(|id| format!(" `{id}`")).unwrap_or_default()
                        ),
                    });
                }
                audit.unexplained.push(Unexplained {
                    participant: participant.clone(),
                    recorded: None,
                    effect: Some(effect.clone()),
                });
            }
        }
        audit
    }
}

/// An outcome as text: `ok`, `failed card_declined`.
fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { .. } => "ok".into(),
        Outcome::Failed { code, .. } => format!("failed {code}"),
        Outcome::Retry { code, .. } => format!("retry {code}"),
    }
}

fn is_ok(recorded: &Recorded) -> bool {
    matches!(recorded.outcome, Outcome::Ok { .. })
}

/// Compare one step; disagreements go to `found`. Whether it was compared,
/// and a note: why not, or what is worth knowing.
fn compare(
    step: &str,
    here: &Here,
    resolved: bool,
    recorded_do: Option<&Recorded>,
    recorded_undo: Option<&Recorded>,
    effect: Option<&Effect>,
    found: &mut Vec<(DisagreementKind, String)>,
) -> (bool, Option<String>) {
    let not_compared = |why: &str| (false, Some(format!("{why}: not compared")));
    let unanswered =
        if resolved { "unanswered when an operator resolved the saga" } else { "in flight" };
    let p = &here.participant;
    let state = effect.map(|e| e.state);
    let what = effect.map_or("effect", |e| e.what.as_str());
    // A compensated step is judged even when its `do` was skipped by an
    // operator (a skipped step that was sent is undone like a done one).
    if here.undo == UndoHere::Skipped
        || (here.do_here == DoHere::Skipped && here.undo != UndoHere::Compensated)
    {
        return not_compared("skipped by an operator");
    }
    match here.undo {
        UndoHere::Compensated => {
            if recorded_undo.is_none() {
                found.push((
                    DisagreementKind::MissingRecord,
                    format!("`{step}` was compensated here; {p} has no record of its undo"),
                ));
            }
            if state == Some(EffectState::InForce) {
                found.push((
                    DisagreementKind::NotUndone,
                    format!("`{step}` was compensated here; the {what} is still in force at {p}"),
                ));
            }
            return (true, unknown_note(state));
        }
        UndoHere::InFlight => {
            let why = if resolved {
                "its compensation was unanswered when an operator resolved the saga"
            } else {
                "its compensation is in flight"
            };
            return not_compared(why);
        }
        UndoHere::NotSent | UndoHere::Skipped => {}
    }
    match here.do_here {
        DoHere::Succeeded => {
            match recorded_do {
                None => found.push((
                    DisagreementKind::MissingRecord,
                    format!("`{step}` succeeded here; {p} has no record of it"),
                )),
                Some(r) if !is_ok(r) => found.push((
                    DisagreementKind::OutcomeDiffers,
                    format!("`{step}` succeeded here; {p} recorded {}", outcome_text(&r.outcome)),
                )),
                Some(_) => {}
            }
            match state {
                Some(EffectState::None) => found.push((
                    DisagreementKind::NoEffect,
                    format!("`{step}` succeeded here; {p} has no {what} for it"),
                )),
                Some(EffectState::Undone) => found.push((
                    DisagreementKind::UndoneThere,
                    format!(
                        "`{step}` succeeded and was not compensated here; {p} undid the {what}"
                    ),
                )),
                _ => {}
            }
            (true, unknown_note(state))
        }
        DoHere::Failed => {
            match recorded_do {
                None => found.push((
                    DisagreementKind::MissingRecord,
                    format!("`{step}` failed here; {p} has no record of it"),
                )),
                Some(r) if is_ok(r) => found.push((
                    DisagreementKind::OutcomeDiffers,
                    format!("`{step}` failed here; {p} recorded it ok"),
                )),
                Some(_) => {}
            }
            if state == Some(EffectState::InForce) {
                found.push((
                    DisagreementKind::UnexpectedEffect,
                    format!("`{step}` failed here; a {what} of it is in force at {p}"),
                ));
            }
            (true, unknown_note(state))
        }
        // Whatever the participant recorded of it came back as unasked.
        DoHere::NotSent | DoHere::SkippedByCondition => (true, None),
        DoHere::InFlight => not_compared(unanswered),
        DoHere::Unknown => not_compared("given up with its outcome unknown and not compensated"),
        DoHere::Abandoned => not_compared("abandoned before it could take effect"),
        DoHere::Skipped => not_compared("skipped by an operator"),
    }
}

fn unknown_note(state: Option<EffectState>) -> Option<String> {
    match state {
        Some(EffectState::Unknown) => Some("the participant cannot tell the effect's state".into()),
        None => Some("the participant reports no effects; its records were compared".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sagas::protocol::command_id;
    use serde_json::json;

    const SAGA: &str = "s1";
    const T0: sagas::UnixMillis = sagas::UnixMillis(0);

    fn definition() -> Definition {
        sagas::definition::load(
            "t.yaml",
            "name: t\nversion: 1\ninput_schema: {type: object}\nsteps:\n  \
             - { name: hold, participant: ledger, action: hold, compensation: void }\n  \
             - { name: charge, participant: payment, action: charge, compensation: refund }\n  \
             - { name: post, participant: ledger, action: post, retriable: true }\n",
        )
        .unwrap()
    }

    fn sent(step: &str, kind: Kind) -> SagaEvent {
        SagaEvent::CommandSent {
            step: step.into(),
            kind,
            attempt: 1,
            command_id: command_id(SAGA, step, kind),
            payload: json!({"transfer_id": "t-1"}),
            timeout_at: T0,
            at: T0,
        }
    }

    fn ok(step: &str) -> SagaEvent {
        SagaEvent::StepSucceeded { step: step.into(), attempt: 1, output: json!({}), at: T0 }
    }

    fn compensated(step: &str) -> SagaEvent {
        SagaEvent::StepCompensated { step: step.into(), attempt: 1, at: T0 }
    }

    fn failed(step: &str) -> SagaEvent {
        SagaEvent::StepFailed {
            step: step.into(),
            attempt: 1,
            code: "card_declined".into(),
            message: "no".into(),
            at: T0,
        }
    }

    fn entry(step: &str, kind: Kind, outcome: Outcome) -> Recorded {
        Recorded {
            command_id: command_id(SAGA, step, kind),
            step: step.into(),
            kind,
            outcome,
            attempt: 1,
            recorded_at_ms: 0,
            tombstone: false,
        }
    }

    fn ok_entry(step: &str, kind: Kind) -> Recorded {
        entry(step, kind, Outcome::Ok { output: json!({}) })
    }

    fn effect(state: EffectState) -> Effect {
        Effect { state, what: "transfer".into(), id: Some("t-1".into()), detail: json!({}) }
    }

    /// A participant's answer: per command asked, an inbox entry and effect.
    fn answer(
        plan: &Plan,
        participant: &str,
        records: &[(Option<Recorded>, Option<Effect>)],
    ) -> Result<SagaRecords, String> {
        let asked = plan.asks().remove(participant).unwrap();
        assert_eq!(asked.commands.len(), records.len(), "one record per command asked");
        Ok(SagaRecords {
            saga_id: SAGA.into(),
            commands: asked
                .commands
                .iter()
                .zip(records)
                .map(|(c, (recorded, effect))| CommandRecord {
                    command_id: c.command_id.clone(),
                    recorded: recorded.clone(),
                    effect: effect.clone(),
                })
                .collect(),
            unasked: vec![],
            others: vec![],
            error: None,
        })
    }

    fn kinds(audit: &SagaAudit) -> Vec<DisagreementKind> {
        audit.disagreements.iter().map(|d| d.kind).collect()
    }

    /// A completed top-up: every step ok here.
    fn completed() -> Plan {
        let events = [
            sent("hold", Kind::Do),
            ok("hold"),
            sent("charge", Kind::Do),
            ok("charge"),
            sent("post", Kind::Do),
            ok("post"),
        ];
        Plan::new(SAGA, "completed", &definition(), &events)
    }

    #[test]
    fn a_completed_saga_that_every_participant_confirms_agrees() {
        let plan = completed();
        let asks = plan.asks();
        assert_eq!(asks["ledger"].commands.len(), 2);
        assert_eq!(asks["ledger"].commands[0].action, "hold");
        assert_eq!(asks["payment"].commands[0].action, "charge");
        let answers = BTreeMap::from([
            (
                "ledger".to_owned(),
                answer(
                    &plan,
                    "ledger",
                    &[
                        (Some(ok_entry("hold", Kind::Do)), Some(effect(EffectState::InForce))),
                        (Some(ok_entry("post", Kind::Do)), Some(effect(EffectState::InForce))),
                    ],
                ),
            ),
            (
                "payment".to_owned(),
                answer(&plan, "payment", &[(Some(ok_entry("charge", Kind::Do)), None)]),
            ),
        ]);
        let audit = plan.judge(&answers);
        assert!(audit.disagreements.is_empty(), "{:?}", audit.disagreements);
        assert!(audit.steps.iter().all(|s| s.verdict == Verdict::Agrees), "{:?}", audit.steps);
        assert!(audit.steps[1].note.is_some(), "no effect reported is noted");
    }

    #[test]
    fn a_step_ok_here_with_no_effect_or_record_there_disagrees() {
        let plan = completed();
        let answers = BTreeMap::from([
            (
                "ledger".to_owned(),
                answer(
                    &plan,
                    "ledger",
                    &[
                        (Some(ok_entry("hold", Kind::Do)), Some(effect(EffectState::None))),
                        (None, Some(effect(EffectState::Undone))),
                    ],
                ),
            ),
            (
                "payment".to_owned(),
                answer(
                    &plan,
                    "payment",
                    &[(
                        Some(entry(
                            "charge",
                            Kind::Do,
                            Outcome::Failed { code: "x".into(), message: "y".into() },
                        )),
                        None,
                    )],
                ),
            ),
        ]);
        let audit = plan.judge(&answers);
        assert_eq!(
            kinds(&audit),
            [
                DisagreementKind::NoEffect,
                DisagreementKind::OutcomeDiffers,
                DisagreementKind::MissingRecord,
                DisagreementKind::UndoneThere
            ]
        );
        assert_eq!(audit.disagreements[0].step.as_deref(), Some("hold"));
        assert_eq!(audit.steps[0].verdict, Verdict::Disagrees);
    }

    #[test]
    fn a_compensated_step_whose_effect_is_still_in_force_disagrees() {
        let events = [
            sent("hold", Kind::Do),
            ok("hold"),
            sent("charge", Kind::Do),
            failed("charge"),
            sent("hold", Kind::Undo),
            compensated("hold"),
        ];
        let plan = Plan::new(SAGA, "compensated", &definition(), &events);
        let hold_asked = &plan.asks()["ledger"];
        assert_eq!(hold_asked.commands[1].action, "void");
        let answers = BTreeMap::from([
            (
                "ledger".to_owned(),
                answer(
                    &plan,
                    "ledger",
                    &[
                        (Some(ok_entry("hold", Kind::Do)), Some(effect(EffectState::InForce))),
                        (Some(ok_entry("hold", Kind::Undo)), Some(effect(EffectState::InForce))),
                    ],
                ),
            ),
            (
                "payment".to_owned(),
                answer(
                    &plan,
                    "payment",
                    &[(
                        Some(entry(
                            "charge",
                            Kind::Do,
                            Outcome::Failed { code: "card_declined".into(), message: "".into() },
                        )),
                        Some(effect(EffectState::InForce)),
                    )],
                ),
            ),
        ]);
        let audit = plan.judge(&answers);
        assert_eq!(
            kinds(&audit),
            [DisagreementKind::NotUndone, DisagreementKind::UnexpectedEffect],
            "{:?}",
            audit.disagreements
        );
        // The never-sent `post` agrees: nothing was recorded for it.
        assert_eq!(audit.steps[2].do_here, DoHere::NotSent);
        assert_eq!(audit.steps[2].verdict, Verdict::Agrees);
    }

    #[test]
    fn unsent_records_unexplained_effects_and_silent_participants_are_reported() {
        let events = [sent("hold", Kind::Do), failed("hold")];
        let plan = Plan::new(SAGA, "failed", &definition(), &events);
        assert!(plan.asks()["payment"].commands.is_empty(), "asked for what nobody sent");
        let mut payment = answer(&plan, "payment", &[]).unwrap();
        payment.unasked.push(ok_entry("charge", Kind::Do));
        payment.others.push(Effect {
            state: EffectState::InForce,
            what: "charge".into(),
            id: Some("ch_9".into()),
            detail: json!({}),
        });
        payment.others.push(effect(EffectState::Undone));
        let answers = BTreeMap::from([
            ("ledger".to_owned(), Err("`ledger` did not answer within 5s".to_owned())),
            ("payment".to_owned(), Ok(payment)),
        ]);
        let audit = plan.judge(&answers);
        assert_eq!(
            kinds(&audit),
            [DisagreementKind::UnexpectedRecord, DisagreementKind::UnexplainedEffect]
        );
        assert!(audit.disagreements[1].message.contains("ch_9"));
        assert_eq!(audit.unexplained.len(), 3, "the undone one is listed, not flagged");
        assert_eq!(audit.unchecked.len(), 1);
        assert_eq!(audit.steps[0].verdict, Verdict::Unchecked);
    }

    #[test]
    fn what_the_orchestrator_cannot_know_is_not_compared() {
        let events = [
            sent("hold", Kind::Do),
            ok("hold"),
            sent("charge", Kind::Do),
            SagaEvent::StepOutcomeUnknown { step: "charge".into(), at: T0 },
            sent("hold", Kind::Undo),
        ];
        let plan = Plan::new(SAGA, "compensating", &definition(), &events);
        let answers = BTreeMap::from([
            (
                "ledger".to_owned(),
                answer(
                    &plan,
                    "ledger",
                    &[
                        (Some(ok_entry("hold", Kind::Do)), Some(effect(EffectState::InForce))),
                        (None, None),
                    ],
                ),
            ),
            (
                "payment".to_owned(),
                answer(&plan, "payment", &[(None, Some(effect(EffectState::InForce)))]),
            ),
        ]);
        let audit = plan.judge(&answers);
        assert!(audit.disagreements.is_empty(), "{:?}", audit.disagreements);
        assert_eq!(audit.steps[0].verdict, Verdict::NotCompared, "its undo is in flight");
        assert_eq!(audit.steps[1].verdict, Verdict::NotCompared, "its outcome is unknown");
    }

    #[test]
    fn a_skipped_step_that_was_undone_is_judged_and_a_partial_answer_is_not() {
        let skip = |kind| SagaEvent::StepSkipped {
            step: "hold".into(),
            kind,
            by: "ann".into(),
            reason: "by hand".into(),
            at: T0,
        };
        let events = [
            sent("hold", Kind::Do),
            skip(Kind::Do),
            sent("charge", Kind::Do),
            failed("charge"),
            sent("hold", Kind::Undo),
            compensated("hold"),
        ];
        let plan = Plan::new(SAGA, "compensated", &definition(), &events);
        let ledger = answer(
            &plan,
            "ledger",
            &[
                (Some(ok_entry("hold", Kind::Do)), Some(effect(EffectState::InForce))),
                (Some(ok_entry("hold", Kind::Undo)), Some(effect(EffectState::InForce))),
            ],
        );
        let mut payment = answer(
            &plan,
            "payment",
            &[(Some(ok_entry("charge", Kind::Do)), Some(effect(EffectState::InForce)))],
        )
        .unwrap();
        payment.error = Some("the provider cannot be asked".into());
        let answers =
            BTreeMap::from([("ledger".to_owned(), ledger), ("payment".to_owned(), Ok(payment))]);
        let audit = plan.judge(&answers);
        assert_eq!(kinds(&audit), [DisagreementKind::NotUndone], "{:?}", audit.disagreements);
        assert_eq!(audit.steps[1].verdict, Verdict::Unchecked, "judged on half an answer");
        assert_eq!(audit.unchecked.len(), 1);
    }

    #[test]
    fn what_was_in_flight_when_an_operator_resolved_the_saga_is_said_so() {
        let events = [
            sent("hold", Kind::Do),
            SagaEvent::SagaResolved {
                outcome: sagas::machine::ResolvedAs::Failed,
                by: "ann".into(),
                evidence: "checked by hand".into(),
                at: T0,
            },
        ];
        let plan = Plan::new(SAGA, "failed", &definition(), &events);
        let answers = BTreeMap::from([
            (
                "ledger".to_owned(),
                answer(&plan, "ledger", &[(None, Some(effect(EffectState::None)))]),
            ),
            ("payment".to_owned(), answer(&plan, "payment", &[])),
        ]);
        let audit = plan.judge(&answers);
        assert!(audit.disagreements.is_empty());
        assert_eq!(audit.steps[0].verdict, Verdict::NotCompared);
        assert!(
            audit.steps[0].note.as_deref().unwrap().contains("resolved"),
            "{:?}",
            audit.steps[0]
        );
    }
}
