//! What a saga's history adds up to, and the one function that folds it: `apply`.
//!
//! `apply` never fails and never looks at anything but the event: that makes
//! replay after a crash, takeover by another orchestrator, and the live path the
//! same code. Everything `decide` needs to know is derivable from this state.

use super::event::{CompensationCause, ParkReason, ResolvedAs, SagaEvent};
use crate::UnixMillis;
use crate::definition::{Definition, RetryPolicy, StepDef};
use crate::protocol::{Kind, SagaOutcome};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// No event yet.
    NotStarted,
    /// Steps run forward.
    Running,
    /// Compensations run, newest step first.
    Compensating,
    /// Stopped until an operator acts (the reason is in [`SagaState::park`]).
    Parked,
    /// Every step took effect.
    Completed,
    /// Every step that may have taken effect was undone.
    Compensated,
    /// Nothing took effect, so nothing needed undoing.
    Failed,
}

impl SagaStatus {
    /// Completed, compensated or failed: nothing may follow.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// A state in which the saga waits for nothing but an operator: terminal or parked.
    #[must_use]
    pub fn is_end(self) -> bool {
        self.is_terminal() || self == Self::Parked
    }

    /// The status `as_str` names.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::NotStarted,
            Self::Running,
            Self::Compensating,
            Self::Parked,
            Self::Completed,
            Self::Compensated,
            Self::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Parked => "parked",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one kind (`do` or `undo`) of one step is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "wait", rename_all = "snake_case")]
pub enum Wait {
    /// Nothing in flight.
    Idle,
    /// An attempt was sent; it times out at `timeout_at`.
    Reply { attempt: u32, timeout_at: UnixMillis },
    /// The next attempt goes out at `retry_at`.
    Backoff { retry_at: UnixMillis },
}

/// The attempts of one kind of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The highest attempt number sent (0: never sent).
    pub attempts: u32,
    /// Attempts sent before the current retry budget began (an operator resume starts a new one).
    pub budget_base: u32,
    pub wait: Wait,
    /// The most recent `retry` answer or timeout: (code, message).
    pub last_error: Option<(String, String)>,
    /// Some attempt timed out, so it may have taken effect unseen.
    pub timed_out: bool,
    /// Attempts answered `retry` as unsent (nothing left the participant):
    /// outside the budget, bounded by `UNSENT_RETRIES_MAX` on their own.
    pub unsent: u32,
}

impl Progress {
    const NEW: Self = Self {
        attempts: 0,
        budget_base: 0,
        wait: Wait::Idle,
        last_error: None,
        timed_out: false,
        unsent: 0,
    };

    /// Attempts sent within the current budget.
    #[must_use]
    pub fn attempts_in_budget(&self) -> u32 {
        self.attempts.saturating_sub(self.budget_base)
    }

    /// When this kind next needs attention, if it waits for anything.
    #[must_use]
    pub fn due_at(&self) -> Option<UnixMillis> {
        match self.wait {
            Wait::Idle => None,
            Wait::Reply { timeout_at, .. } => Some(timeout_at),
            Wait::Backoff { retry_at } => Some(retry_at),
        }
    }
}

/// What is known about a step's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Forward {
    /// Not finished (maybe not yet sent).
    Pending,
    Succeeded {
        late: bool,
    },
    /// Refused for good: no effect.
    Failed {
        code: String,
        message: String,
    },
    /// May have taken effect: it is compensated like a success.
    Unknown,
    /// Stopped before any attempt could have taken effect.
    Abandoned,
    /// An operator skipped it: treated as done, never compensated.
    Skipped,
    /// Its `when:` condition was false: never sent, nothing to undo.
    SkippedByCondition,
}

/// What is known about a step's compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backward {
    Open,
    Done,
    /// An operator skipped it: treated as undone.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepState {
    pub forward: Forward,
    pub backward: Backward,
    pub output: Option<Value>,
    /// The rendered input, sent with `do` and again with `undo`.
    pub payload: Option<Value>,
    pub do_progress: Progress,
    pub undo_progress: Progress,
    /// A waiting step that began waiting: the event and key it waits for.
    pub waits_for: Option<(String, Option<String>)>,
    /// The seq of the event that first recorded the action's outcome: steps
    /// are compensated newest outcome first (in a parallel group, the order
    /// the branches' outcomes were recorded in).
    #[serde(skip)]
    pub settled_at_seq: Option<u64>,
}

impl StepState {
    const NEW: Self = Self {
        forward: Forward::Pending,
        backward: Backward::Open,
        output: None,
        payload: None,
        do_progress: Progress::NEW,
        undo_progress: Progress::NEW,
        waits_for: None,
        settled_at_seq: None,
    };

    #[must_use]
    pub fn progress(&self, kind: Kind) -> &Progress {
        match kind {
            Kind::Do => &self.do_progress,
            Kind::Undo => &self.undo_progress,
        }
    }

    fn progress_mut(&mut self, kind: Kind) -> &mut Progress {
        match kind {
            Kind::Do => &mut self.do_progress,
            Kind::Undo => &mut self.undo_progress,
        }
    }

    /// The action may have taken effect and its undo has not been settled.
    ///
    /// A step an operator skipped counts as done, so it is undone too if it was
    /// ever sent (an attempt may have landed; an undo of nothing is harmless).
    #[must_use]
    pub fn needs_undo(&self) -> bool {
        let maybe_done = match self.forward {
            Forward::Succeeded { .. } => true,
            #[cfg(feature = "planted")]
            Forward::Unknown
                if crate::planted::is_planted(crate::planted::Mistake::UnknownNotUndone) =>
            {
                false
            }
            Forward::Unknown => true,
            // A waiting step sent nothing, even while it waited.
            Forward::Skipped => self.do_progress.attempts > 0 && self.waits_for.is_none(),
            Forward::Pending
            | Forward::Failed { .. }
            | Forward::Abandoned
            | Forward::SkippedByCondition => false,
        };
        maybe_done && self.backward == Backward::Open
    }
}

/// An event from outside the saga holds, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedSignal {
    pub name: String,
    pub event_id: String,
    pub key: Option<String>,
    pub payload: Value,
    pub at: UnixMillis,
    /// The waiting step that took it, once one has.
    pub taken_by: Option<usize>,
}

impl ReceivedSignal {
    /// Whether it is what a step waiting for `event` (and `key`) waits for.
    #[must_use]
    pub fn fits(&self, event: &str, key: Option<&str>) -> bool {
        self.taken_by.is_none()
            && self.name == event
            && key.is_none_or(|k| self.key.as_deref() == Some(k))
    }
}

/// Why and where a saga is parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Park {
    pub step: usize,
    pub kind: Kind,
    pub reason: ParkReason,
    pub message: String,
}

/// A saga as its history describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaState {
    #[serde(skip)]
    pub definition: Arc<Definition>,
    pub saga_id: String,
    pub input: Value,
    pub status: SagaStatus,
    pub started_at: Option<UnixMillis>,
    pub deadline_at: Option<UnixMillis>,
    pub ended_at: Option<UnixMillis>,
    pub steps: Vec<StepState>,
    /// Why the saga turned back (set when compensation starts or the saga fails).
    pub cause: Option<CompensationCause>,
    pub park: Option<Park>,
    /// Set when an operator resolved the saga by hand: (outcome, by, evidence).
    pub resolved: Option<(ResolvedAs, String, String)>,
    /// What the completed saga answers its caller (the definition's `output:`).
    pub output: Option<Value>,
    /// Why the output could not be rendered, when it could not.
    pub output_error: Option<String>,
    /// The events from outside it holds (at most `SIGNALS_MAX`).
    pub signals: Vec<ReceivedSignal>,
    /// Number of events applied: the seq of the last one.
    pub seq: u64,
}

impl SagaState {
    /// Where the saga stands, as a caller waiting for its end sees it: its
    /// status, its `output:` once completed, and why it turned back, failed,
    /// was resolved by hand or is parked.
    #[must_use]
    pub fn outcome(&self) -> SagaOutcome {
        let cause =
            if let Some(park) = self.park.as_ref().filter(|_| self.status == SagaStatus::Parked) {
                Some(serde_json::json!({
                    "cause": "parked",
                    "reason": park.reason.as_str(),
                    "step": self.definition.steps.get(park.step).map(|s| s.name.as_str()),
                    "message": park.message,
                }))
            } else if let Some((resolved_as, by, evidence)) = &self.resolved {
                Some(serde_json::json!({
                    "cause": "resolved",
                    "resolved_as": resolved_as,
                    "by": by,
                    "evidence": evidence,
                }))
            } else if let Some(error) = &self.output_error {
                Some(serde_json::json!({ "cause": "output_unrenderable", "message": error }))
            } else if self.status == SagaStatus::Completed {
                None
            } else {
                self.cause.as_ref().and_then(|c| serde_json::to_value(c).ok())
            };
        SagaOutcome {
            status: self.status.as_str().to_owned(),
            ended: self.status.is_terminal(),
            output: self.output.clone(),
            cause,
        }
    }

    /// The state before any event.
    #[must_use]
    pub fn new(definition: Arc<Definition>) -> Self {
        let steps = vec![StepState::NEW; definition.steps.len()];
        Self {
            definition,
            saga_id: String::new(),
            input: Value::Null,
            status: SagaStatus::NotStarted,
            started_at: None,
            deadline_at: None,
            ended_at: None,
            steps,
            cause: None,
            park: None,
            resolved: None,
            output: None,
            output_error: None,
            signals: Vec::new(),
            seq: 0,
        }
    }

    #[must_use]
    pub fn step_def(&self, index: usize) -> &StepDef {
        &self.definition.steps[index]
    }

    /// The retry policy for one kind of one step.
    #[must_use]
    pub fn policy(&self, index: usize, kind: Kind) -> RetryPolicy {
        let def = self.step_def(index);
        match kind {
            Kind::Do => def.retry,
            Kind::Undo => def.compensation_retry,
        }
    }

    /// The step running forward now: the first whose result is pending (in a
    /// parallel group, the first of those its branches run).
    #[must_use]
    pub fn current_forward(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.forward == Forward::Pending)
    }

    /// The compensation in flight or waiting to retry, if any.
    #[must_use]
    pub fn undo_in_flight(&self) -> Option<usize> {
        self.steps.iter().rposition(|s| s.undo_progress.wait != Wait::Idle)
    }

    /// The next step to compensate: of those that may have taken effect, the
    /// one whose outcome was recorded last.
    #[must_use]
    pub fn next_undo(&self) -> Option<usize> {
        let open = self
            .steps
            .iter()
            .zip(&self.definition.steps)
            .enumerate()
            .filter(|(_, (s, def))| s.needs_undo() && def.compensation.is_some());
        #[cfg(feature = "planted")]
        if crate::planted::is_planted(crate::planted::Mistake::UndoOldestFirst) {
            return open.min_by_key(|(i, (s, _))| (s.settled_at_seq, *i)).map(|(i, _)| i);
        }
        open.max_by_key(|(i, (s, _))| (s.settled_at_seq, *i)).map(|(i, _)| i)
    }

    /// Turning back while actions sent before it still await their answer
    /// (branches of a parallel group): no compensation starts until they
    /// have one, or have timed out.
    #[must_use]
    pub fn draining(&self) -> bool {
        self.status == SagaStatus::Compensating
            && self.steps.iter().any(|s| s.do_progress.wait != Wait::Idle)
    }

    /// Every (step, kind) the saga is busy with now, in step order: one
    /// step, or in a parallel group each branch's current step; while
    /// turning back, the actions still in flight, else the compensation.
    #[must_use]
    pub fn working(&self) -> Vec<(usize, Kind)> {
        match self.status {
            SagaStatus::Running => {
                let Some(i) = self.current_forward() else { return Vec::new() };
                match self.definition.group_of(i) {
                    None => vec![(i, Kind::Do)],
                    Some(group) => group
                        .branches
                        .iter()
                        .filter_map(|b| {
                            b.steps.clone().find(|&j| self.steps[j].forward == Forward::Pending)
                        })
                        .map(|j| (j, Kind::Do))
                        .collect(),
                }
            }
            SagaStatus::Compensating => {
                let draining: Vec<(usize, Kind)> = self
                    .steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.do_progress.wait != Wait::Idle)
                    .map(|(i, _)| (i, Kind::Do))
                    .collect();
                if !draining.is_empty() {
                    return draining;
                }
                self.undo_in_flight()
                    .or_else(|| self.next_undo())
                    .map(|i| vec![(i, Kind::Undo)])
                    .unwrap_or_default()
            }
            SagaStatus::Parked => {
                self.park.as_ref().map(|p| vec![(p.step, p.kind)]).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The (step, kind) the saga is busy with now, if any: the first of
    /// [`Self::working`].
    #[must_use]
    pub fn current(&self) -> Option<(usize, Kind)> {
        self.working().into_iter().next()
    }

    /// True while the saga may still be aborted: running, and the pivot never sent.
    #[must_use]
    pub fn abortable(&self) -> bool {
        self.status == SagaStatus::Running
            && self.definition.pivot.is_none_or(|p| self.steps[p].do_progress.attempts == 0)
    }

    /// When the saga next needs a `Timeout` input, if ever.
    #[must_use]
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        let work = if self.status.is_end() {
            None
        } else {
            self.working()
                .into_iter()
                .filter_map(|(i, kind)| self.steps[i].progress(kind).due_at())
                .min()
        };
        let deadline = self.deadline_at.filter(|_| self.abortable());
        match (work, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first signal a waiting step `index` would take now, if any.
    #[must_use]
    pub fn signal_for(&self, index: usize) -> Option<&ReceivedSignal> {
        let (event, key) = self.steps.get(index)?.waits_for.as_ref()?;
        self.signals.iter().find(|s| s.fits(event, key.as_deref()))
    }

    /// A waiting step succeeded: it took the first signal that fits it.
    fn take_signal(&mut self, step: &str) {
        let Some(index) = self.index(step) else { return };
        if let Some(pos) = self.steps[index].waits_for.as_ref().and_then(|(event, key)| {
            self.signals.iter().position(|s| s.fits(event, key.as_deref()))
        }) {
            self.signals[pos].taken_by = Some(index);
        }
    }

    /// Whether step `index` is a waiting step.
    #[must_use]
    pub fn is_waiting_step(&self, index: usize) -> bool {
        self.definition.steps.get(index).is_some_and(|d| d.wait.is_some())
    }

    fn index(&self, step: &str) -> Option<usize> {
        self.definition.step_index(step)
    }

    /// Fold one event into the state. Never fails: an event naming a step this
    /// definition does not have (impossible for a history written against it)
    /// changes nothing but the seq.
    pub fn apply(&mut self, event: &SagaEvent) {
        self.seq += 1;
        match event {
            SagaEvent::SagaStarted { saga_id, input, deadline_at, at, .. } => {
                self.saga_id.clone_from(saga_id);
                self.input = input.clone();
                self.status = SagaStatus::Running;
                self.started_at = Some(*at);
                self.deadline_at = *deadline_at;
            }
            SagaEvent::CommandSent { step, kind, attempt, payload, timeout_at, .. } => {
                if let Some(s) = self.step_mut(step) {
                    // A waiting step's undo is its first command: what it carries
                    // is what a takeover re-sends.
                    if *kind == Kind::Do || s.payload.is_none() {
                        s.payload = Some(payload.clone());
                    }
                    let p = s.progress_mut(*kind);
                    p.attempts = *attempt;
                    p.wait = Wait::Reply { attempt: *attempt, timeout_at: *timeout_at };
                }
            }
            SagaEvent::StepSucceeded { step, output, .. } => {
                self.unpark(step, Kind::Do);
                self.take_signal(step);
                self.settle(step);
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::Succeeded { late: false };
                    s.output = Some(output.clone());
                    s.do_progress.wait = Wait::Idle;
                }
            }
            SagaEvent::StepFailed { step, code, message, .. } => {
                // A waiting step that failed on an event took it (`fail_when`).
                if self.step(step).is_some_and(|s| {
                    s.waits_for.is_some() && matches!(s.do_progress.wait, Wait::Reply { .. })
                }) {
                    self.take_signal(step);
                }
                self.unpark(step, Kind::Do);
                self.settle(step);
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::Failed { code: code.clone(), message: message.clone() };
                    s.do_progress.wait = Wait::Idle;
                }
            }
            SagaEvent::AttemptFailed {
                step,
                kind,
                code,
                message,
                timed_out,
                unsent,
                retry_at,
                ..
            } => {
                if let Some(s) = self.step_mut(step) {
                    let p = s.progress_mut(*kind);
                    p.last_error = Some((code.clone(), message.clone()));
                    p.timed_out |= *timed_out;
                    if *unsent {
                        // Outside the budget: the next attempt is not one more of it.
                        p.budget_base += 1;
                        p.unsent += 1;
                    }
                    p.wait = retry_at.map_or(Wait::Idle, |retry_at| Wait::Backoff { retry_at });
                }
            }
            SagaEvent::StepOutcomeUnknown { step, .. } => {
                self.settle(step);
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::Unknown;
                    s.do_progress.wait = Wait::Idle;
                }
            }
            SagaEvent::StepAbandoned { step, .. } => {
                self.settle(step);
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::Abandoned;
                    s.do_progress.wait = Wait::Idle;
                }
            }
            SagaEvent::CompensationStarted { cause, .. } => {
                self.park = None;
                self.status = SagaStatus::Compensating;
                self.cause = Some(cause.clone());
            }
            SagaEvent::StepCompensated { step, .. } => {
                self.unpark(step, Kind::Undo);
                if let Some(s) = self.step_mut(step) {
                    s.backward = Backward::Done;
                    s.undo_progress.wait = Wait::Idle;
                }
            }
            SagaEvent::LateSuccessRecorded { step, output, .. } => {
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::Succeeded { late: true };
                    s.output = Some(output.clone());
                }
            }
            SagaEvent::OperatorRetried { .. } => {}
            SagaEvent::StepSkipped { step, kind, .. } => {
                self.unpark(step, *kind);
                if *kind == Kind::Do {
                    self.settle(step);
                }
                if let Some(s) = self.step_mut(step) {
                    match kind {
                        Kind::Do => s.forward = Forward::Skipped,
                        Kind::Undo => s.backward = Backward::Skipped,
                    }
                    s.progress_mut(*kind).wait = Wait::Idle;
                }
            }
            SagaEvent::SignalReceived { name, event_id, key, payload, at } => {
                self.signals.push(ReceivedSignal {
                    name: name.clone(),
                    event_id: event_id.clone(),
                    key: key.clone(),
                    payload: payload.clone(),
                    at: *at,
                    taken_by: None,
                });
            }
            SagaEvent::WaitStarted { step, event, key, timeout_at, .. } => {
                if let Some(s) = self.step_mut(step) {
                    s.waits_for = Some((event.clone(), key.clone()));
                    s.do_progress.attempts = 1;
                    s.do_progress.wait = Wait::Reply { attempt: 1, timeout_at: *timeout_at };
                }
            }
            SagaEvent::StepSkippedByCondition { step, .. } => {
                self.settle(step);
                if let Some(s) = self.step_mut(step) {
                    s.forward = Forward::SkippedByCondition;
                }
            }
            SagaEvent::SagaResumed { step, kind, .. } => {
                self.unpark(step, *kind);
                if let Some(s) = self.step_mut(step) {
                    if *kind == Kind::Do {
                        s.forward = Forward::Pending;
                        s.settled_at_seq = None;
                    }
                    let p = s.progress_mut(*kind);
                    p.budget_base = p.attempts;
                    // A fresh budget, and a fresh bound for unsent attempts.
                    p.unsent = 0;
                    p.wait = Wait::Idle;
                }
            }
            SagaEvent::SagaParked { step, kind, reason, message, .. } => {
                if let Some(index) = self.index(step) {
                    self.steps[index].progress_mut(*kind).wait = Wait::Idle;
                    self.status = SagaStatus::Parked;
                    self.park = Some(Park {
                        step: index,
                        kind: *kind,
                        reason: *reason,
                        message: message.clone(),
                    });
                }
            }
            SagaEvent::SagaCompleted { at, output, output_error } => {
                self.output.clone_from(output);
                self.output_error.clone_from(output_error);
                self.end(SagaStatus::Completed, *at);
            }
            SagaEvent::SagaCompensated { at } => self.end(SagaStatus::Compensated, *at),
            SagaEvent::SagaFailed { cause, at } => {
                self.cause = Some(cause.clone());
                self.end(SagaStatus::Failed, *at);
            }
            // The shell replays the history under the new version: nothing
            // in the state itself changes.
            SagaEvent::DefinitionChanged { .. } => {}
            SagaEvent::SagaResolved { outcome, by, evidence, at } => {
                self.resolved = Some((*outcome, by.clone(), evidence.clone()));
                self.park = None;
                let status = match outcome {
                    ResolvedAs::Completed => SagaStatus::Completed,
                    ResolvedAs::Compensated => SagaStatus::Compensated,
                    ResolvedAs::Failed => SagaStatus::Failed,
                };
                self.end(status, *at);
            }
        }
    }

    fn step(&self, step: &str) -> Option<&StepState> {
        let i = self.index(step)?;
        self.steps.get(i)
    }

    fn step_mut(&mut self, step: &str) -> Option<&mut StepState> {
        let index = self.index(step)?;
        self.steps.get_mut(index)
    }

    fn end(&mut self, status: SagaStatus, at: UnixMillis) {
        self.status = status;
        self.ended_at = Some(at);
        for s in &mut self.steps {
            s.do_progress.wait = Wait::Idle;
            s.undo_progress.wait = Wait::Idle;
        }
    }

    /// Record when a step's action first got its outcome (the event being
    /// applied); a later word on it (a late success) keeps that place.
    fn settle(&mut self, step: &str) {
        let seq = self.seq;
        if let Some(s) = self.step_mut(step)
            && s.forward == Forward::Pending
        {
            s.settled_at_seq = Some(seq);
        }
    }

    /// Leave `Parked` when the parked command itself settles or is resumed or skipped.
    fn unpark(&mut self, step: &str, kind: Kind) {
        let Some(index) = self.index(step) else { return };
        if self.status == SagaStatus::Parked
            && self.park.as_ref().is_some_and(|p| p.step == index && p.kind == kind)
        {
            self.park = None;
            self.status = match kind {
                Kind::Do => SagaStatus::Running,
                Kind::Undo => SagaStatus::Compensating,
            };
        }
    }
}
