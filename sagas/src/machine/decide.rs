//! `decide`: one match on (status, input); every other pair is an explicit error.
//!
//! A [`Draft`] applies each event to a scratch copy of the state as it is
//! emitted, so every later choice in the same decision sees its effect. The
//! copy is thrown away: the shell applies the returned events itself, through
//! the same `apply` used by replay.

use super::event::{CompensationCause, ParkReason, SagaEvent};
use super::state::{Backward, Forward, SagaState, SagaStatus, Wait};
use super::{
    Absorbed, Decision, Input, OPERATOR_TEXT_LEN_MAX, OperatorAction, OperatorInput,
    OutgoingCommand, SAGA_ID_LEN_MAX, TransitionError, UNSENT_RETRIES_MAX,
};
use crate::UnixMillis;
use crate::backoff;
use crate::definition::{Condition, ConditionContext, PayloadTemplate, RenderContext};
use crate::protocol::{self, Kind, Outcome, Reply};
use serde_json::Value;

/// An attempt that did not succeed: a `retry` answer or a timeout.
struct Failure {
    code: String,
    message: String,
    timed_out: bool,
    unsent: bool,
}

/// Decide what an input means for a saga at `now`.
pub fn decide(
    state: &SagaState,
    input: &Input,
    now: UnixMillis,
) -> Result<Decision, TransitionError> {
    use SagaStatus as S;
    let mut d = Draft {
        state: state.clone(),
        now,
        events: Vec::new(),
        commands: Vec::new(),
        absorbed: None,
    };
    match (state.status, input) {
        (S::NotStarted, Input::Start { saga_id, input }) => d.start(saga_id, input)?,
        (S::NotStarted, _) => return Err(TransitionError::NotStarted),
        (_, Input::Start { .. }) => return Err(TransitionError::AlreadyStarted),
        (status, Input::Reply(reply)) if status.is_terminal() => {
            d.locate(reply)?;
            d.absorbed = Some(Absorbed::Ended);
        }
        (_, Input::Reply(reply)) => d.reply(reply)?,
        (S::Running | S::Compensating, Input::Timeout) => d.timeout()?,
        (_, Input::Timeout) => return Err(TransitionError::NotDue { next: None }),
        (status, Input::Operator(_)) if status.is_terminal() => {
            return Err(TransitionError::Ended { status });
        }
        (_, Input::Operator(op)) => d.operator(op)?,
        (status, Input::Migrate { .. }) if status.is_terminal() => {
            return Err(TransitionError::Ended { status });
        }
        (_, Input::Migrate { to, by, reason }) => d.migrate(to, by, reason)?,
        // Sent again after the answer was lost (it may have ended the saga):
        // a duplicate, not a refusal.
        (status, Input::Signal(signal))
            if status.is_terminal()
                && state.signals.iter().any(|s| s.event_id == signal.event_id) =>
        {
            d.absorbed = Some(Absorbed::Duplicate);
        }
        (status, Input::Signal(_)) if status.is_terminal() => {
            return Err(TransitionError::Ended { status });
        }
        (_, Input::Signal(signal)) => d.signal(signal)?,
    }
    Ok(d.finish())
}

struct Draft {
    state: SagaState,
    now: UnixMillis,
    events: Vec<SagaEvent>,
    commands: Vec<OutgoingCommand>,
    absorbed: Option<Absorbed>,
}

/// How a step's action ended when it did not succeed.
enum Setback {
    /// Refused for good: no effect.
    Failed { code: String, message: String },
    /// May have taken effect.
    Unknown,
}

impl Draft {
    fn finish(self) -> Decision {
        let next_deadline = self.state.next_deadline();
        Decision {
            events: self.events,
            commands: self.commands,
            next_deadline,
            absorbed: self.absorbed,
        }
    }

    fn emit(&mut self, event: SagaEvent) {
        self.state.apply(&event);
        self.events.push(event);
    }

    fn name(&self, index: usize) -> String {
        self.state.step_def(index).name.clone()
    }

    // ---- start -----------------------------------------------------------------

    fn start(&mut self, saga_id: &str, input: &Value) -> Result<(), TransitionError> {
        if saga_id.is_empty()
            || saga_id.len() > SAGA_ID_LEN_MAX
            || !saga_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TransitionError::InvalidSagaId { saga_id: saga_id.to_owned() });
        }
        let def = self.state.definition.clone();
        def.input_schema.check(input).map_err(|errors| TransitionError::InvalidInput {
            saga_type: def.name.clone(),
            errors,
        })?;
        self.emit(SagaEvent::SagaStarted {
            saga_id: saga_id.to_owned(),
            saga_type: def.name.clone(),
            definition_hash: def.hash.clone(),
            input: input.clone(),
            deadline_at: def.deadline.map(|d| self.now.plus_ms(d.as_millis())),
            at: self.now,
        });
        self.advance();
        Ok(())
    }

    // ---- driving ---------------------------------------------------------------

    /// Take the next step the state calls for: send the next command (in a
    /// parallel group, each branch's), or end.
    fn advance(&mut self) {
        match self.state.status {
            SagaStatus::Running => match self.state.current_forward() {
                Some(i) if self.state.definition.group_of(i).is_some() => self.advance_group(i),
                Some(i) if self.state.steps[i].do_progress.wait == Wait::Idle => self.reach(i),
                Some(_) => {}
                None => {
                    let (output, output_error) =
                        match self.render(self.state.definition.output.as_ref()) {
                            None => (None, None),
                            Some(Ok(v)) => (Some(v), None),
                            Some(Err(e)) => (None, Some(e)),
                        };
                    self.emit(SagaEvent::SagaCompleted { at: self.now, output, output_error });
                }
            },
            SagaStatus::Compensating => {
                // Actions still in flight answer (or time out) first: what
                // they did decides what is undone, and in which order.
                if self.state.draining() || self.state.undo_in_flight().is_some() {
                    return;
                }
                match self.state.next_undo() {
                    Some(i) => self.send(i, Kind::Undo),
                    // Every branch's action that was in flight failed: nothing
                    // took effect after all.
                    None if self.state.steps.iter().all(|s| s.backward == Backward::Open) => {
                        if let Some(cause) = self.state.cause.clone() {
                            self.emit(SagaEvent::SagaFailed { cause, at: self.now });
                        }
                    }
                    None => self.emit(SagaEvent::SagaCompensated { at: self.now }),
                }
            }
            _ => {}
        }
    }

    /// A step is reached: decide its condition (once), then wait for its
    /// event or send its command.
    fn reach(&mut self, i: usize) {
        if self.state.steps[i].do_progress.attempts == 0
            && let Some(condition) = self.state.step_def(i).when.clone()
        {
            match self.condition(i, &condition) {
                Ok(true) => {}
                Ok(false) => {
                    self.emit(SagaEvent::StepSkippedByCondition {
                        step: self.name(i),
                        condition: condition.source().to_owned(),
                        at: self.now,
                    });
                    return self.advance();
                }
                Err(message) => return self.fail_step(i, 0, "condition_failed", message),
            }
        }
        if self.state.is_waiting_step(i) {
            self.start_wait(i);
        } else {
            self.send(i, Kind::Do);
        }
    }

    /// In a parallel group: decide its condition when it is reached, then
    /// reach each branch's next step that is not yet under way. A branch
    /// that ends moves on within its own range; once every branch has run
    /// its steps, `current_forward` leaves the group.
    fn advance_group(&mut self, i: usize) {
        let Some(group) = self.state.definition.group_of(i).cloned() else { return };
        let untouched = group.steps.clone().all(|j| {
            let s = &self.state.steps[j];
            s.forward == Forward::Pending
                && s.do_progress.attempts == 0
                && s.do_progress.wait == Wait::Idle
        });
        if untouched && let Some(condition) = &group.when {
            match self.condition(group.steps.start, condition) {
                Ok(true) => {}
                Ok(false) => {
                    for j in group.steps.clone() {
                        self.emit(SagaEvent::StepSkippedByCondition {
                            step: self.name(j),
                            condition: condition.source().to_owned(),
                            at: self.now,
                        });
                    }
                    return self.advance();
                }
                Err(message) => {
                    let message = format!("the condition of group `{}`: {message}", group.name);
                    return self.fail_step(group.steps.start, 0, "condition_failed", message);
                }
            }
        }
        for branch in &group.branches {
            if self.state.status != SagaStatus::Running {
                return;
            }
            if let Some(j) =
                branch.steps.clone().find(|&j| self.state.steps[j].forward == Forward::Pending)
                && self.state.steps[j].do_progress.wait == Wait::Idle
            {
                self.reach(j);
            }
        }
    }

    // ---- waiting steps and signals ---------------------------------------------

    /// A waiting step is reached: wait for its event (with its key, rendered
    /// now), and take at once one that came early.
    fn start_wait(&mut self, index: usize) {
        let def = self.state.step_def(index).clone();
        let Some(wait) = def.wait else { return };
        let key = match wait.key.as_ref().map(|k| self.render(Some(k)).unwrap_or(Ok(Value::Null))) {
            None => None,
            Some(Ok(Value::String(k)))
                if !k.is_empty()
                    && k.len() <= super::SIGNAL_ID_LEN_MAX
                    && !k.chars().any(char::is_control) =>
            {
                Some(k)
            }
            Some(Ok(v @ Value::Number(_))) => Some(v.to_string()),
            Some(rendered) => {
                let message = match rendered {
                    Err(e) => format!("the key cannot be rendered: {e}"),
                    Ok(v) => format!(
                        "the key rendered as {v}, not a text of 1-{} bytes or a number",
                        super::SIGNAL_ID_LEN_MAX
                    ),
                };
                return self.fail_step(index, 0, "input_unrenderable", message);
            }
        };
        self.emit(SagaEvent::WaitStarted {
            step: def.name.clone(),
            event: wait.event.clone(),
            key,
            timeout_at: self.now.plus_ms(wait.timeout.as_millis()),
            at: self.now,
        });
        self.take_waited(index);
    }

    /// If the waiting step `index` is waiting and an event fits it, it
    /// succeeds with the event's body as its output.
    fn take_waited(&mut self, index: usize) {
        let waiting = self.state.status == SagaStatus::Running
            && self.state.working().contains(&(index, Kind::Do))
            && matches!(self.state.steps[index].do_progress.wait, Wait::Reply { .. });
        if !waiting {
            return;
        }
        let Some(signal) = self.state.signal_for(index) else { return };
        let output = signal.payload.clone();
        // The event may say that what was waited for did not happen.
        let refused =
            match self.state.step_def(index).wait.as_ref().and_then(|w| w.fail_when.clone()) {
                None => Ok(false),
                Some(condition) => self.condition_with(index, &condition, Some(&output)),
            };
        let failure = match refused {
            Ok(false) => None,
            Ok(true) => Some((
                "event_refused".to_owned(),
                format!("the event it took says it did not happen: {output}"),
            )),
            Err(message) => Some(("condition_failed".to_owned(), message)),
        };
        if let Some((code, message)) = failure {
            return self.fail_step(index, 1, &code, message);
        }
        self.emit(SagaEvent::StepSucceeded {
            step: self.name(index),
            attempt: 1,
            output,
            at: self.now,
        });
        self.advance();
    }

    /// An event from outside: kept in the history (so one that comes before
    /// its step is reached is used when it is), and taken by the step waiting
    /// for it now, if any. The same event id again changes nothing.
    fn signal(&mut self, signal: &super::Signal) -> Result<(), TransitionError> {
        let invalid = |problem: String| TransitionError::InvalidSignal { problem };
        if !crate::protocol::is_subject_token(&signal.name) || signal.name.len() > 64 {
            return Err(invalid(format!(
                "`{}` is not an event name (1-64 ASCII letters, digits, `_` or `-`)",
                signal.name
            )));
        }
        for (field, value) in [("event_id", Some(&signal.event_id)), ("key", signal.key.as_ref())] {
            if let Some(v) = value
                && (v.is_empty()
                    || v.len() > super::SIGNAL_ID_LEN_MAX
                    || v.chars().any(char::is_control))
            {
                return Err(invalid(format!(
                    "`{field}` must be 1-{} bytes without control characters",
                    super::SIGNAL_ID_LEN_MAX
                )));
            }
        }
        let size = serde_json::to_vec(&signal.payload).map_or(usize::MAX, |b| b.len());
        if size > super::SIGNAL_BYTES_MAX {
            return Err(invalid(format!(
                "its body is {size} bytes, over the limit of {}",
                super::SIGNAL_BYTES_MAX
            )));
        }
        if self.state.signals.iter().any(|s| s.event_id == signal.event_id) {
            self.absorbed = Some(Absorbed::Duplicate);
            return Ok(());
        }
        let waiting: Vec<&crate::definition::WaitFor> = self
            .state
            .definition
            .steps
            .iter()
            .filter_map(|d| d.wait.as_ref().filter(|w| w.event == signal.name))
            .collect();
        if waiting.is_empty() {
            return Err(invalid(format!(
                "no step of `{}` waits for an event `{}`",
                self.state.definition.name, signal.name
            )));
        }
        for wait in &waiting {
            if let Some(schema) = &wait.schema
                && let Err(errors) = schema.check(&signal.payload)
            {
                return Err(invalid(format!(
                    "its body does not match the schema of `{}`: {}",
                    signal.name,
                    errors.join("; ")
                )));
            }
        }
        if self.state.signals.len() >= super::SIGNALS_MAX {
            return Err(TransitionError::TooManySignals);
        }
        self.emit(SagaEvent::SignalReceived {
            name: signal.name.clone(),
            event_id: signal.event_id.clone(),
            key: signal.key.clone(),
            payload: signal.payload.clone(),
            at: self.now,
        });
        for (i, _) in self.state.working() {
            if self.state.is_waiting_step(i) {
                self.take_waited(i);
            }
        }
        Ok(())
    }

    /// Decide a step's `when:` against the input and the outputs so far.
    fn condition(&self, index: usize, condition: &Condition) -> Result<bool, String> {
        self.condition_with(index, condition, None)
    }

    /// Decide a condition of step `index` (for a group, its first step),
    /// with the event a waiting step took as `event`. It sees only the
    /// outputs of steps surely ended before it: never a branch beside it,
    /// whose answer may or may not have come yet.
    fn condition_with(
        &self,
        index: usize,
        condition: &Condition,
        event: Option<&Value>,
    ) -> Result<bool, String> {
        let def = &self.state.definition;
        let outputs: Vec<(&str, Option<&Value>)> = self
            .state
            .steps
            .iter()
            .zip(&def.steps)
            .enumerate()
            .map(|(j, (s, d))| (d.name.as_str(), s.output.as_ref().filter(|_| def.sees(index, j))))
            .collect();
        condition.evaluate(&ConditionContext {
            input: &self.state.input,
            saga_id: &self.state.saga_id,
            saga_type: &self.state.definition.name,
            outputs: &outputs,
            event,
        })
    }

    /// Render a template (a step's input, the saga's output) against the
    /// input and the outputs so far, within half a message; `None` for no
    /// template, the error as text when it cannot be rendered.
    fn render(&self, template: Option<&PayloadTemplate>) -> Option<Result<Value, String>> {
        let template = template?;
        let outputs: Vec<Option<Value>> =
            self.state.steps.iter().map(|s| s.output.clone()).collect();
        let ctx = RenderContext {
            input: &self.state.input,
            saga_id: &self.state.saga_id,
            saga_type: &self.state.definition.name,
            outputs: &outputs,
        };
        Some(template.render(&ctx).map_err(|e| e.to_string()).and_then(|p| {
            let size = serde_json::to_vec(&p).map_or(usize::MAX, |b| b.len());
            if size > protocol::BODY_BYTES_MAX / 2 {
                Err(format!(
                    "the rendered value is {size} bytes, over the limit of {} bytes",
                    protocol::BODY_BYTES_MAX / 2
                ))
            } else {
                Ok(p)
            }
        }))
    }

    /// Send the next attempt of one kind of one step.
    fn send(&mut self, index: usize, kind: Kind) {
        let def = self.state.step_def(index).clone();
        let payload = match kind {
            Kind::Do => match self.render(Some(&def.input)).unwrap_or(Ok(Value::Null)) {
                Ok(p) => p,
                Err(message) => {
                    let attempt = self.state.steps[index].do_progress.attempts;
                    return self.fail_step(index, attempt, "input_unrenderable", message);
                }
            },
            // A waiting step sent no `do`: its undo carries the event it took.
            Kind::Undo => {
                let step = &self.state.steps[index];
                step.payload.clone().or_else(|| step.output.clone()).unwrap_or(Value::Null)
            }
        };
        let attempt = self.state.steps[index].progress(kind).attempts + 1;
        let timeout_at = self.now.plus_ms(def.timeout.as_millis());
        let command =
            OutgoingCommand::for_step(&self.state, index, kind, attempt, payload, timeout_at);
        self.emit(SagaEvent::CommandSent {
            step: def.name,
            kind,
            attempt,
            command_id: command.command_id.clone(),
            payload: command.payload.clone(),
            timeout_at,
            at: self.now,
        });
        self.commands.push(command);
    }

    /// Step `index`'s action failed for good (`code`): record it, then turn
    /// back, or park if it cannot be undone.
    fn fail_step(&mut self, index: usize, attempt: u32, code: &str, message: String) {
        self.emit(SagaEvent::StepFailed {
            step: self.name(index),
            attempt,
            code: code.to_owned(),
            message: message.clone(),
            at: self.now,
        });
        self.setback(index, Setback::Failed { code: code.to_owned(), message });
    }

    /// A step's action did not succeed: turn back, or park if it cannot be undone.
    fn setback(&mut self, index: usize, setback: Setback) {
        let def = self.state.step_def(index);
        let name = def.name.clone();
        let after_pivot = !self.state.definition.is_before_or_at_pivot(index);
        match setback {
            Setback::Failed { code, message } if after_pivot => self.park(
                index,
                Kind::Do,
                ParkReason::ForwardStuck,
                format!("step `{name}` follows the pivot and failed ({code}: {message})"),
            ),
            Setback::Failed { code, message } => {
                self.turn_back(CompensationCause::StepFailed { step: name, code, message });
            }
            Setback::Unknown if after_pivot || def.compensation.is_none() => self.park(
                index,
                Kind::Do,
                ParkReason::ForwardStuck,
                format!("step `{name}` cannot be compensated and its outcome is unknown"),
            ),
            Setback::Unknown => self.turn_back(CompensationCause::StepUnknown { step: name }),
        }
    }

    /// Start compensating; if nothing may have taken effect, the saga simply failed.
    fn turn_back(&mut self, cause: CompensationCause) {
        if self.state.status == SagaStatus::Compensating {
            // Already turning back (another branch failed first): its cause stands.
            return self.advance();
        }
        self.stop_branches();
        let in_flight = self.state.steps.iter().any(|s| s.do_progress.wait != Wait::Idle);
        if self.state.next_undo().is_some() || in_flight {
            self.emit(SagaEvent::CompensationStarted { cause, at: self.now });
            self.advance();
        } else {
            self.emit(SagaEvent::SagaFailed { cause, at: self.now });
        }
    }

    /// Send nothing new: the branches of a group that are not awaiting an
    /// answer stop. One waiting to retry may have taken effect with an
    /// earlier attempt (its outcome is unknown, so it is undone); a waiting
    /// step simply stops waiting. One awaiting an answer keeps waiting for it.
    fn stop_branches(&mut self) {
        let stopping: Vec<(usize, Wait)> = self
            .state
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.forward == Forward::Pending && s.do_progress.wait != Wait::Idle)
            .map(|(i, s)| (i, s.do_progress.wait))
            .collect();
        for (i, wait) in stopping {
            let step = self.name(i);
            if self.state.is_waiting_step(i) {
                self.emit(SagaEvent::StepAbandoned { step, at: self.now });
            } else if matches!(wait, Wait::Backoff { .. }) {
                self.emit(SagaEvent::StepOutcomeUnknown { step, at: self.now });
            }
        }
    }

    fn park(&mut self, index: usize, kind: Kind, reason: ParkReason, message: String) {
        self.emit(SagaEvent::SagaParked {
            step: self.name(index),
            kind,
            reason,
            message,
            at: self.now,
        });
    }

    /// One attempt ended without a definite answer: retry later, or give up.
    fn attempt_failed(&mut self, index: usize, kind: Kind, failure: Failure) {
        let Failure { code, message, timed_out, unsent } = failure;
        let policy = self.state.policy(index, kind);
        let progress = self.state.steps[index].progress(kind);
        let attempt = progress.attempts;
        // An unsent attempt is outside the budget, under a bound of its own.
        let again = if kind == Kind::Do && self.state.status == SagaStatus::Compensating {
            // Turning back sends nothing new: this action's outcome is unknown.
            false
        } else if unsent {
            progress.unsent < UNSENT_RETRIES_MAX
        } else {
            progress.attempts_in_budget() < policy.attempts
        };
        let retry_at = again.then(|| {
            let id =
                protocol::command_id(&self.state.saga_id, &self.state.step_def(index).name, kind);
            self.now.plus_ms(backoff::delay_ms(&policy, &id, attempt))
        });
        self.emit(SagaEvent::AttemptFailed {
            step: self.name(index),
            kind,
            attempt,
            code: code.clone(),
            message: message.clone(),
            timed_out,
            unsent,
            retry_at,
            at: self.now,
        });
        if retry_at.is_some() {
            return;
        }
        match kind {
            Kind::Do => {
                self.emit(SagaEvent::StepOutcomeUnknown { step: self.name(index), at: self.now });
                self.setback(index, Setback::Unknown);
            }
            Kind::Undo => self.park(
                index,
                kind,
                ParkReason::CompensationStuck,
                format!(
                    "compensation of `{}` spent {} attempts; last error {code}: {message}",
                    self.name(index),
                    policy.attempts
                ),
            ),
        }
    }

    // ---- replies ---------------------------------------------------------------

    /// Which step and kind a reply answers, and that its attempt was sent.
    fn locate(&self, reply: &Reply) -> Result<(usize, Kind), TransitionError> {
        let unknown = || TransitionError::UnknownCommand { command_id: reply.command_id.clone() };
        let (index, kind) = self.state.command_step(&reply.command_id).ok_or_else(unknown)?;
        // A waiting step's `do` is no command: nobody can answer it.
        if kind == Kind::Do && self.state.is_waiting_step(index) {
            return Err(unknown());
        }
        let sent = self.state.steps[index].progress(kind).attempts;
        if reply.attempt == 0 || reply.attempt > sent {
            return Err(TransitionError::UnknownAttempt {
                command_id: reply.command_id.clone(),
                attempt: reply.attempt,
                sent,
            });
        }
        Ok((index, kind))
    }

    fn reply(&mut self, reply: &Reply) -> Result<(), TransitionError> {
        let (index, kind) = self.locate(reply)?;
        let step = &self.state.steps[index];
        let progress = step.progress(kind);
        let in_flight = progress.wait != Wait::Idle;
        let is_current_attempt =
            matches!(progress.wait, Wait::Reply { attempt, .. } if attempt == reply.attempt);
        let parked_here = self.state.status == SagaStatus::Parked
            && self.state.park.as_ref().is_some_and(|p| p.step == index && p.kind == kind);
        let name = self.name(index);
        let (at, attempt) = (self.now, reply.attempt);

        match (kind, &reply.outcome) {
            // The awaited answer, or an earlier attempt's definite one (same command id).
            (Kind::Do, Outcome::Ok { output }) if in_flight || parked_here => {
                self.emit(SagaEvent::StepSucceeded {
                    step: name,
                    attempt,
                    output: output.clone(),
                    at,
                });
                self.advance();
            }
            (Kind::Do, Outcome::Failed { code, message })
                if in_flight
                    || (parked_here
                        && step.forward
                            != Forward::Failed {
                                code: code.clone(),
                                message: message.clone(),
                            }) =>
            {
                self.fail_step(index, attempt, code, message.clone());
            }
            (Kind::Undo, Outcome::Ok { .. }) if in_flight || parked_here => {
                self.emit(SagaEvent::StepCompensated { step: name, attempt, at });
                self.advance();
            }
            (Kind::Undo, Outcome::Failed { code, message }) if in_flight => {
                self.emit(SagaEvent::AttemptFailed {
                    step: name.clone(),
                    kind,
                    attempt,
                    code: code.clone(),
                    message: message.clone(),
                    timed_out: false,
                    unsent: false,
                    retry_at: None,
                    at,
                });
                self.park(
                    index,
                    kind,
                    ParkReason::CompensationFailed,
                    format!("compensation of `{name}` was refused ({code}: {message})"),
                );
            }
            (_, Outcome::Retry { code, message, unsent }) if is_current_attempt => {
                let failure = Failure {
                    code: code.clone(),
                    message: message.clone(),
                    timed_out: false,
                    unsent: *unsent,
                };
                self.attempt_failed(index, kind, failure);
            }
            // A success for a step already given up on: it took effect after all.
            (Kind::Do, Outcome::Ok { output })
                if matches!(
                    step.forward,
                    Forward::Unknown | Forward::Failed { .. } | Forward::Abandoned
                ) =>
            {
                self.emit(SagaEvent::LateSuccessRecorded {
                    step: name,
                    attempt,
                    output: output.clone(),
                    at,
                });
                if self.state.status == SagaStatus::Compensating {
                    self.advance();
                }
            }
            (Kind::Do, Outcome::Ok { .. }) if matches!(step.forward, Forward::Succeeded { .. }) => {
                self.absorbed = Some(Absorbed::Duplicate);
            }
            (Kind::Undo, Outcome::Ok { .. }) if step.backward == Backward::Done => {
                self.absorbed = Some(Absorbed::Duplicate);
            }
            (Kind::Do, Outcome::Failed { code, message })
                if step.forward
                    == Forward::Failed { code: code.clone(), message: message.clone() } =>
            {
                self.absorbed = Some(Absorbed::Duplicate);
            }
            _ => self.absorbed = Some(Absorbed::Stale),
        }
        Ok(())
    }

    // ---- timers ----------------------------------------------------------------

    fn timeout(&mut self) -> Result<(), TransitionError> {
        let now = self.now;
        if self.state.abortable() && self.state.deadline_at.is_some_and(|d| d <= now) {
            self.abort(CompensationCause::DeadlineExceeded);
            return Ok(());
        }
        let mut due: Vec<(UnixMillis, usize, Kind)> = self
            .state
            .working()
            .into_iter()
            .filter_map(|(i, kind)| {
                let at = self.state.steps[i].progress(kind).due_at()?;
                (at <= now).then_some((at, i, kind))
            })
            .collect();
        if due.is_empty() {
            return Err(TransitionError::NotDue { next: self.state.next_deadline() });
        }
        due.sort_unstable();
        for (_, index, kind) in due {
            // One handled before may have changed what this one waits for
            // (a branch that failed stops the others).
            if self.state.working().contains(&(index, kind)) {
                self.timeout_one(index, kind);
            }
        }
        Ok(())
    }

    /// What was awaited of one kind of one step did not come in time (or its
    /// backoff is over): handle it, if it is still due.
    fn timeout_one(&mut self, index: usize, kind: Kind) {
        let now = self.now;
        match self.state.steps[index].progress(kind).wait {
            Wait::Reply { timeout_at, .. }
                if timeout_at <= now && kind == Kind::Do && self.state.is_waiting_step(index) =>
            {
                // Nothing was asked of anyone: the event not coming is a definite failure.
                let (event, _) = self.state.steps[index].waits_for.clone().unwrap_or_default();
                let message = format!("no `{event}` event came within the wait");
                self.fail_step(index, 1, "wait_timed_out", message);
            }
            Wait::Reply { attempt, timeout_at } if timeout_at <= now => {
                let message = format!("no reply to attempt {attempt} within the step timeout");
                let failure =
                    Failure { code: "timeout".into(), message, timed_out: true, unsent: false };
                self.attempt_failed(index, kind, failure);
            }
            Wait::Backoff { retry_at } if retry_at <= now => self.send(index, kind),
            _ => {}
        }
    }

    /// Stop the current step and compensate (the caller checked `abortable`).
    fn abort(&mut self, cause: CompensationCause) {
        // In a parallel group, `turn_back` stops the branches: an action in
        // flight is waited for, so what it did is known before undoing.
        if let Some(index) =
            self.state.current_forward().filter(|&i| self.state.definition.group_of(i).is_none())
        {
            // Any attempt sent may yet take effect (a redelivered command, a lost
            // reply), so it is compensated; the participant's tombstone then refuses
            // a late `do`. Only a step never sent is simply abandoned.
            let sent = self.state.steps[index].do_progress.attempts > 0
                && !self.state.is_waiting_step(index);
            let step = self.name(index);
            let event = if sent {
                SagaEvent::StepOutcomeUnknown { step, at: self.now }
            } else {
                SagaEvent::StepAbandoned { step, at: self.now }
            };
            self.emit(event);
        }
        self.turn_back(cause);
    }

    // ---- operators -------------------------------------------------------------

    /// Move the saga to `to` when its state allows (see [`super::migrate`]);
    /// the shell replays the history under `to` from here on.
    fn migrate(
        &mut self,
        to: &std::sync::Arc<crate::definition::Definition>,
        by: &str,
        reason: &str,
    ) -> Result<(), TransitionError> {
        check_text("by", by)?;
        check_text("reason", reason)?;
        if by.trim().is_empty() {
            return Err(TransitionError::OperatorMissing);
        }
        if reason.trim().is_empty() {
            return Err(TransitionError::ReasonRequired { action: "migrate" });
        }
        super::migrate::check_state(&self.state, to).map_err(TransitionError::Incompatible)?;
        let from = &self.state.definition;
        self.emit(SagaEvent::DefinitionChanged {
            from_hash: from.hash.clone(),
            from_version: from.version,
            to_hash: to.hash.clone(),
            to_version: to.version,
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: self.now,
        });
        Ok(())
    }

    fn operator(&mut self, op: &OperatorInput) -> Result<(), TransitionError> {
        use OperatorAction as A;
        use SagaStatus as S;
        check_text("by", &op.by)?;
        check_text("reason", &op.reason)?;
        if op.by.trim().is_empty() {
            return Err(TransitionError::OperatorMissing);
        }
        let needs_reason = matches!(op.action, A::Skip | A::Abort | A::Resolve(_));
        if needs_reason && op.reason.trim().is_empty() {
            return Err(TransitionError::ReasonRequired { action: op.action.as_str() });
        }
        let (by, reason, at) = (op.by.clone(), op.reason.clone(), self.now);
        let status = self.state.status;
        let not_now = |hint| TransitionError::NotNow { action: op.action.as_str(), status, hint };
        match (status, op.action) {
            (S::Running | S::Compensating, A::RetryNow) => {
                let waiting: Vec<(usize, Kind)> = self
                    .state
                    .working()
                    .into_iter()
                    .filter(|(i, k)| self.state.steps[*i].progress(*k).wait != Wait::Idle)
                    .collect();
                if status == S::Compensating && waiting.iter().any(|(_, k)| *k == Kind::Do) {
                    return Err(not_now(
                        "the saga is turning back: the actions still in flight are waited for, not sent again",
                    ));
                }
                // In a parallel group: the first branch whose step sends a
                // command and has budget left (else the first, to say why not).
                let retriable = |(i, k): &(usize, Kind)| {
                    !(*k == Kind::Do && self.state.is_waiting_step(*i))
                        && self.state.steps[*i].progress(*k).attempts_in_budget()
                            < self.state.policy(*i, *k).attempts
                };
                let (index, kind) = waiting
                    .iter()
                    .copied()
                    .find(retriable)
                    .or_else(|| waiting.first().copied())
                    .ok_or_else(|| not_now("nothing is waiting to be retried"))?;
                if kind == Kind::Do && self.state.is_waiting_step(index) {
                    return Err(not_now(
                        "a waiting step sends nothing: send it its event, skip it, or let it time out",
                    ));
                }
                let progress = self.state.steps[index].progress(kind);
                let policy = self.state.policy(index, kind);
                if progress.attempts_in_budget() >= policy.attempts {
                    return Err(TransitionError::RetryBudgetSpent {
                        step: self.name(index),
                        kind,
                        attempts: policy.attempts,
                    });
                }
                self.emit(SagaEvent::OperatorRetried {
                    step: self.name(index),
                    kind,
                    by,
                    reason,
                    at,
                });
                self.send(index, kind);
            }
            (S::Parked, A::RetryNow) => return Err(not_now("use resume to retry a parked saga")),
            (S::Running | S::Compensating | S::Parked, A::Skip) => {
                // In a parallel group: the first branch whose step can be skipped.
                let working = self.state.working();
                let skippable = |(i, k): &(usize, Kind)| {
                    (*k == Kind::Do && self.state.is_waiting_step(*i))
                        || !matches!(self.state.steps[*i].progress(*k).wait, Wait::Reply { .. })
                };
                let (index, kind) = working
                    .iter()
                    .copied()
                    .find(skippable)
                    .or_else(|| working.first().copied())
                    .ok_or_else(|| not_now("there is no current step"))?;
                let waiting_step = kind == Kind::Do && self.state.is_waiting_step(index);
                if !waiting_step
                    && matches!(self.state.steps[index].progress(kind).wait, Wait::Reply { .. })
                {
                    return Err(not_now(
                        "an answer is awaited; retry now, or skip once the attempt has timed out",
                    ));
                }
                self.emit(SagaEvent::StepSkipped { step: self.name(index), kind, by, reason, at });
                self.advance();
            }
            (S::Running, A::Abort) if self.state.abortable() => {
                self.abort(CompensationCause::Aborted { by, reason });
            }
            (S::Running, A::Abort) => {
                let pivot = self.state.definition.pivot.map(|p| self.name(p)).unwrap_or_default();
                return Err(TransitionError::PastPivot { pivot });
            }
            (S::Parked, A::Abort) => {
                return Err(not_now("a parked saga is resumed, skipped past or resolved"));
            }
            (S::Compensating, A::Abort) => return Err(not_now("the saga is already compensating")),
            (S::Parked, A::Resume) => {
                let (index, kind) =
                    self.state.current().ok_or_else(|| not_now("the park names no step"))?;
                let refused = match kind {
                    Kind::Do => matches!(self.state.steps[index].forward, Forward::Failed { .. }),
                    Kind::Undo => self
                        .state
                        .park
                        .as_ref()
                        .is_some_and(|p| p.reason == ParkReason::CompensationFailed),
                };
                if refused {
                    return Err(not_now(
                        "the participant refused this command for good and would refuse it again; skip or resolve",
                    ));
                }
                self.emit(SagaEvent::SagaResumed { step: self.name(index), kind, by, reason, at });
                self.advance();
            }
            (_, A::Resume) => return Err(not_now("only a parked saga can be resumed")),
            (S::Parked, A::Resolve(outcome)) => {
                self.emit(SagaEvent::SagaResolved { outcome, by, evidence: reason, at });
            }
            (_, A::Resolve(_)) => {
                return Err(not_now(
                    "only a parked saga is resolved by hand; a running one may still change (abort or skip it)",
                ));
            }
            (S::NotStarted | S::Completed | S::Compensated | S::Failed, _) => {
                return Err(TransitionError::Ended { status });
            }
        }
        Ok(())
    }
}

fn check_text(field: &'static str, text: &str) -> Result<(), TransitionError> {
    if text.len() > OPERATOR_TEXT_LEN_MAX {
        return Err(TransitionError::TooLong {
            field,
            len: text.len(),
            max: OPERATOR_TEXT_LEN_MAX,
        });
    }
    Ok(())
}
