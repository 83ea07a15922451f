//! Property test: the saga machine against a model participant under random
//! schedules of replies (ok, failed, retry), lost and duplicated replies,
//! redelivered commands, reorderings, timeouts, operator actions and
//! crash-and-replay, over definitions with a parallel group, conditions and
//! waiting steps (some keyed) fed events early, late, again and with another
//! key. After every input it checks the machine's invariants; at the end it
//! lets every deadline pass and checks that the saga ended, that the model
//! participant's effects agree with how it ended, and that a compensated saga
//! undid exactly the steps that may have acted.
//!
//! The number of cases comes from `PROPTEST_CASES` (default 1,024).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use sagas::machine::{
    Absorbed, OperatorAction, OperatorInput, OutgoingCommand, ResolvedAs, Wait, command_sent,
    decide, replay,
};
use sagas::protocol::{Kind, Outcome, Reply};
use sagas::{Decision, Definition, Input, SagaEvent, SagaState, SagaStatus, UnixMillis};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Shape {
    steps: usize,
    pivot: Option<usize>,
    attempts: u32,
    compensation_attempts: u32,
    deadline: bool,
    /// Per step, a `when:` condition or none (never on the pivot).
    conditions: Vec<Option<When>>,
    /// Per step, whether it waits for an event (`ev<i>`) instead of sending a
    /// command (only at or before the pivot).
    waits: Vec<bool>,
    /// A parallel group before the pivot: its first step and how many steps
    /// each of its two branches holds, and maybe a condition on it.
    group: Option<Group>,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    a: usize,
    b: usize,
    when: Option<When>,
}

impl Group {
    fn steps(self) -> std::ops::Range<usize> {
        self.start..self.start + self.a + self.b
    }

    /// The branch (0 or 1) step `i` is in, if it is in the group.
    fn branch(self, i: usize) -> Option<usize> {
        self.steps().contains(&i).then(|| usize::from(i >= self.start + self.a))
    }
}

/// A step's `when:` in the property test.
#[derive(Debug, Clone, Copy)]
enum When {
    /// `input.n > k`: decided by the input alone.
    InputAbove(u8),
    /// `has(steps.s<j>)`, for an earlier step j: whether it succeeded.
    Succeeded(usize),
}

impl When {
    fn text(self) -> String {
        match self {
            Self::InputAbove(k) => format!("input.n > {k}"),
            Self::Succeeded(j) => format!("has(steps.s{j})"),
        }
    }
}

impl Shape {
    fn definition(&self) -> Arc<Definition> {
        let mut yaml = String::from("name: prop\nversion: 1\ninput_schema: {type: object}\n");
        if self.deadline {
            yaml.push_str("deadline: 20s\n");
        }
        yaml.push_str("steps:\n");
        for i in 0..self.steps {
            let mut indent = "  ";
            if let Some(g) = self.group {
                if i == g.start {
                    yaml.push_str("  - name: g\n");
                    if let Some(when) = g.when {
                        yaml.push_str(&format!("    when: \"{}\"\n", when.text()));
                    }
                    yaml.push_str("    parallel:\n      - name: a\n        steps:\n");
                }
                if g.a > 0 && i == g.start + g.a {
                    yaml.push_str("      - name: b\n        steps:\n");
                }
                if g.steps().contains(&i) {
                    indent = "          ";
                }
            }
            yaml.push_str(indent);
            yaml.push_str(&self.step_yaml(i));
        }
        Arc::new(
            sagas::definition::load("prop.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
        )
    }
}

impl Shape {
    fn step_yaml(&self, i: usize) -> String {
        let mut yaml = String::new();
        let compensated = self.pivot.is_none_or(|p| i < p);
        let retriable = self.pivot.is_some_and(|p| i > p);
        if self.waits[i] {
            // Every other waiting step takes only events keyed by `input.n`.
            let key = if keyed(i) { ", key: \"{{input.n}}\"" } else { "" };
            yaml.push_str(&format!("- {{name: s{i}, wait_for: {{event: ev{i}, timeout: 3s{key}}}"));
            if let Some(when) = self.conditions[i] {
                yaml.push_str(&format!(", when: \"{}\"", when.text()));
            }
            // Every other waiting step has a compensation of its own.
            if i.is_multiple_of(2) {
                yaml.push_str(&format!(
                    ", participant: p, compensation: undo{i}, compensation_retry: {{attempts: {c}, initial_backoff: 100ms, max_backoff: 2s}}",
                    c = self.compensation_attempts
                ));
            }
            yaml.push_str("}\n");
            return yaml;
        }
        yaml.push_str(&format!(
            "- {{name: s{i}, participant: p, action: do{i}, timeout: 1s, retriable: {retriable}, \
             retry: {{attempts: {a}, initial_backoff: 100ms, max_backoff: 2s}}",
            a = self.attempts
        ));
        if let Some(when) = self.conditions[i] {
            yaml.push_str(&format!(", when: \"{}\"", when.text()));
        }
        if compensated {
            yaml.push_str(&format!(
                ", compensation: undo{i}, compensation_retry: {{attempts: {c}, initial_backoff: 100ms, max_backoff: 2s}}",
                c = self.compensation_attempts
            ));
        }
        yaml.push_str("}\n");
        yaml
    }

    /// Whether step `j`'s output is known when step `i` is reached.
    fn sees(&self, i: usize, j: usize) -> bool {
        j < i
            && !self
                .group
                .is_some_and(|g| matches!((g.branch(i), g.branch(j)), (Some(x), Some(y)) if x != y))
    }
}

/// Whether waiting step `i` is keyed (by `input.n`).
fn keyed(i: usize) -> bool {
    i % 2 == 1
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..=5,
        any::<bool>(),
        0usize..5,
        1u32..=3,
        1u32..=3,
        any::<bool>(),
        prop::collection::vec((0u8..4, 0u8..10, any::<usize>()), 5),
        prop::collection::vec(prop::bool::weighted(0.3), 5),
        (
            prop::bool::weighted(0.5),
            any::<usize>(),
            1usize..=2,
            1usize..=2,
            (0u8..4, 0u8..10, any::<usize>()),
        ),
    )
        .prop_map(
            |(
                steps,
                has_pivot,
                pivot,
                attempts,
                compensation_attempts,
                deadline,
                whens,
                waits,
                (grouped, start, a, b, group_when),
            )| {
                let pivot = has_pivot.then_some(pivot % steps);
                // A group lies wholly before the pivot.
                let room = pivot.unwrap_or(steps);
                let group = (grouped && room >= 2).then(|| {
                    let a = a.min(room - 1);
                    let b = b.min(room - a);
                    let start = start % (room - a - b + 1);
                    let when = match group_when {
                        (0, k, _) => Some(When::InputAbove(k)),
                        (1, _, j) if start > 0 => Some(When::Succeeded(j % start)),
                        _ => None,
                    };
                    Group { start, a, b, when }
                });
                let mut shape = Shape {
                    steps,
                    pivot,
                    attempts,
                    compensation_attempts,
                    deadline,
                    conditions: Vec::new(),
                    waits: Vec::new(),
                    group,
                };
                shape.conditions = (0..steps)
                    .map(|i| match whens[i] {
                        _ if pivot == Some(i) => None,
                        (0, k, _) => Some(When::InputAbove(k)),
                        (1, _, j) if i > 0 && shape.sees(i, j % i) => Some(When::Succeeded(j % i)),
                        _ => None,
                    })
                    .collect();
                // A waiting step is never the pivot and never follows it.
                shape.waits = (0..steps).map(|i| waits[i] && pivot.is_none_or(|p| i < p)).collect();
                shape
            },
        )
}

#[derive(Debug, Clone)]
enum Action {
    /// The participant handles one message ever sent (a first delivery or a
    /// redelivery); its reply reaches the orchestrator unless `lost`.
    Process {
        pick: usize,
        roll: u8,
        lost: bool,
    },
    /// A reply delivered earlier is delivered again.
    DuplicateReply {
        pick: usize,
    },
    /// Time jumps to the next deadline and the timer fires.
    Tick,
    /// Time moves on a little; the timer fires if something is due.
    Wait {
        ms: u16,
    },
    Operator {
        which: u8,
        outcome: u8,
    },
    /// The orchestrator restarts: the state is rebuilt from the history.
    Crash,
    /// An event arrives from outside, for one of the waiting steps (maybe
    /// early, late or again: event ids repeat).
    Signal {
        step: usize,
        id: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>(), prop::bool::weighted(0.15))
            .prop_map(|(pick, roll, lost)| Action::Process { pick, roll, lost }),
        1 => any::<usize>().prop_map(|pick| Action::DuplicateReply { pick }),
        3 => Just(Action::Tick),
        1 => (0u16..3_000).prop_map(|ms| Action::Wait { ms }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(which, outcome)| Action::Operator { which, outcome }),
        1 => Just(Action::Crash),
        2 => (any::<usize>(), 0u8..6).prop_map(|(step, id)| Action::Signal { step, id }),
    ]
}

/// An honest participant: a definite answer (ok or failed) is stored per command
/// id and repeated; `retry` is not stored; an undo leaves a tombstone that makes
/// a later `do` of the same step fail.
#[derive(Default)]
struct Participant {
    decided: HashMap<String, Outcome>,
    applied: HashSet<String>,
    undone: HashSet<String>,
    tombstones: HashSet<String>,
}

impl Participant {
    fn handle(&mut self, cmd: &OutgoingCommand, roll: u8) -> Reply {
        let outcome = match self.decided.get(&cmd.command_id) {
            Some(o) => o.clone(),
            None => {
                let roll = roll % 20;
                let outcome = match cmd.kind {
                    Kind::Do if self.tombstones.contains(&cmd.step) => Outcome::Failed {
                        code: "tombstone".into(),
                        message: "undone before done".into(),
                    },
                    Kind::Do if roll < 12 => {
                        self.applied.insert(cmd.step.clone());
                        Outcome::Ok { output: json!({"from": cmd.step}) }
                    }
                    Kind::Do if roll < 14 => {
                        Outcome::Failed { code: "no".into(), message: "refused".into() }
                    }
                    Kind::Undo if roll < 15 => {
                        self.tombstones.insert(cmd.step.clone());
                        if self.applied.contains(&cmd.step) {
                            self.undone.insert(cmd.step.clone());
                        }
                        Outcome::Ok { output: json!(null) }
                    }
                    Kind::Undo if roll < 16 => {
                        Outcome::Failed { code: "no".into(), message: "cannot undo".into() }
                    }
                    // Nothing left the participant: outside the retry budget.
                    _ if roll < 18 => Outcome::Retry {
                        code: "down".into(),
                        message: "connection refused".into(),
                        unsent: true,
                    },
                    _ => Outcome::retry("busy", "try later"),
                };
                if !matches!(outcome, Outcome::Retry { .. }) {
                    self.decided.insert(cmd.command_id.clone(), outcome.clone());
                }
                outcome
            }
        };
        Reply { command_id: cmd.command_id.clone(), attempt: cmd.attempt, outcome }
    }

    /// The step's effect is in place (done and not undone).
    fn in_effect(&self, step: &str) -> bool {
        self.applied.contains(step) && !self.undone.contains(step)
    }
}

struct World {
    state: SagaState,
    history: Vec<SagaEvent>,
    now: UnixMillis,
    sent: Vec<OutgoingCommand>,
    delivered: Vec<Reply>,
    participant: Participant,
    operator_acted: bool,
    /// The saga's `input.n`, and each step's condition.
    n: u8,
    conditions: Vec<Option<When>>,
    /// Which steps wait for an event.
    waits: Vec<bool>,
    group: Option<Group>,
}

impl World {
    fn apply(&mut self, input: &Input) -> Result<Decision, sagas::TransitionError> {
        let before = self.state.clone();
        let d = decide(&self.state, input, self.now)?;
        if before.status.is_terminal() {
            assert!(d.events.is_empty(), "events after a terminal state: {:?}", d.events);
        }
        if before.status == SagaStatus::Compensating {
            // Turning back sends nothing new forward (an operator's resume
            // is of a parked saga, never of a compensating one).
            assert!(
                d.commands.iter().all(|c| c.kind == Kind::Undo),
                "a `do` sent while compensating: {:?}",
                d.commands
            );
        }
        for e in &d.events {
            assert!(
                !self.history.last().is_some_and(SagaEvent::is_terminal),
                "event after terminal: {e:?}"
            );
            self.state.apply(e);
            self.history.push(e.clone());
        }
        self.sent.extend(d.commands.iter().cloned());
        self.check(&d);
        Ok(d)
    }

    fn check(&self, d: &Decision) {
        let s = &self.state;
        assert_eq!(
            replay(s.definition.clone(), &self.history),
            *s,
            "replay differs from the live state"
        );
        assert_eq!(s.seq, self.history.len() as u64);
        assert_eq!(d.next_deadline, s.next_deadline());
        assert_eq!(
            s.next_deadline().is_none(),
            s.status.is_end(),
            "only ended sagas wait for nothing: {:?}",
            s.status
        );
        let mut busy_do: HashMap<Option<usize>, usize> = HashMap::new();
        let mut busy_undo = 0;
        let mut awaited = Vec::new();
        for (i, step) in s.steps.iter().enumerate() {
            for kind in [Kind::Do, Kind::Undo] {
                let p = step.progress(kind);
                assert!(
                    p.attempts_in_budget() <= s.policy(i, kind).attempts
                        && p.unsent <= sagas::machine::UNSENT_RETRIES_MAX,
                    "step {i} {kind}: {} attempts, policy allows {}",
                    p.attempts_in_budget(),
                    s.policy(i, kind).attempts
                );
                if p.wait != Wait::Idle {
                    match kind {
                        Kind::Do => {
                            *busy_do.entry(self.group.and_then(|g| g.branch(i))).or_default() += 1;
                        }
                        Kind::Undo => busy_undo += 1,
                    }
                }
                if let Wait::Reply { attempt, .. } = p.wait
                    && !s.status.is_end()
                    && !(kind == Kind::Do && self.waits[i])
                {
                    awaited.push(self.as_recorded(i, kind, attempt));
                }
            }
        }
        // One command in flight, or in a parallel group one per branch; no
        // compensation while an action is in flight.
        let doing: usize = busy_do.values().sum();
        assert!(
            busy_do.values().all(|n| *n <= 1),
            "two commands in flight in one branch: {busy_do:?}"
        );
        assert!(busy_undo <= 1, "more than one compensation in flight");
        assert!(!(busy_undo > 0 && doing > 0), "a compensation in flight beside an action");
        assert!(
            doing <= 1 || busy_do.keys().all(Option::is_some),
            "actions in flight outside a parallel group: {busy_do:?}"
        );
        // What a takeover re-sends is what was sent: the state's commands in
        // flight are the history's records of the attempts awaited, and each is
        // a command the machine emitted, unchanged.
        let in_flight = s.in_flight();
        assert_eq!(in_flight, awaited, "in flight differs from the history's record");
        for c in &in_flight {
            let emitted = self
                .sent
                .iter()
                .rev()
                .find(|e| e.command_id == c.command_id && e.attempt == c.attempt);
            assert_eq!(emitted, Some(c), "in flight differs from the command emitted");
        }
        for c in d.commands.iter().filter(|c| c.kind == Kind::Undo) {
            let i = s.definition.step_index(&c.step).unwrap();
            use sagas::machine::Forward;
            let step = &s.steps[i];
            let skipped_after_send =
                step.forward == Forward::Skipped && step.do_progress.attempts > 0;
            assert!(
                matches!(step.forward, Forward::Succeeded { .. } | Forward::Unknown)
                    || skipped_after_send,
                "compensating step {i} that neither succeeded nor is unknown: {:?}",
                step.forward
            );
            // Newest outcome first (by the history: where each step's
            // outcome was first recorded): no step whose outcome came after
            // this one's is still to be undone.
            let outcomes = self.outcome_positions();
            for (j, other) in s.steps.iter().enumerate() {
                assert!(
                    !(j != i
                        && other.needs_undo()
                        && s.definition.steps[j].compensation.is_some()
                        && outcomes[j] > outcomes[i]),
                    "undo of step {i} sent before step {j}, whose outcome is newer, was undone"
                );
            }
            assert!(!s.draining(), "undo sent while actions are in flight");
        }
        if s.status == SagaStatus::Parked {
            assert!(
                s.park.as_ref().is_some_and(|p| !p.message.is_empty()),
                "parked without a reason"
            );
        }
        // A waiting step takes only its own event, and a keyed one only with
        // its key.
        for signal in &s.signals {
            if let Some(i) = signal.taken_by {
                assert!(self.waits[i], "step {i} took an event but waits for none");
                assert_eq!(signal.name, format!("ev{i}"), "step {i} took another's event");
                if keyed(i) {
                    assert_eq!(signal.key, Some(self.n.to_string()), "step {i} took another key");
                }
            }
        }
        // A step skipped by its condition is never sent, and its condition
        // was false when it was reached; a conditional step that was sent
        // had it true.
        for (i, step) in s.steps.iter().enumerate() {
            use sagas::machine::Forward;
            let skipped = step.forward == Forward::SkippedByCondition;
            let sent = step.do_progress.attempts > 0;
            if let Some(g) = self.group.filter(|g| g.steps().contains(&i))
                && let Some(when) = g.when
            {
                let held = match when {
                    When::InputAbove(k) => self.n > k,
                    When::Succeeded(j) => s.steps[j].output.is_some(),
                };
                // Skipped with the whole group exactly when its condition is false.
                let group_skipped =
                    g.steps().all(|j| s.steps[j].forward == Forward::SkippedByCondition);
                if sent || step.waits_for.is_some() {
                    assert!(held, "step {i} of a group whose condition is false was sent");
                }
                if group_skipped && self.conditions[i].is_none() {
                    assert!(!held, "group skipped though its condition held");
                }
                if !held {
                    continue;
                }
            }
            let Some(when) = self.conditions[i] else { continue };
            assert!(
                !(skipped && (sent || step.undo_progress.attempts > 0)),
                "skipped step {i} was sent"
            );
            if skipped || sent {
                let held = match when {
                    When::InputAbove(k) => self.n > k,
                    When::Succeeded(j) => s.steps[j].output.is_some(),
                };
                assert_eq!(held, sent, "step {i}: `{}` held {held} but sent {sent}", when.text());
            }
        }
    }

    /// Per step, the position in the history of the event that first
    /// recorded its action's outcome since it was last resumed.
    fn outcome_positions(&self) -> Vec<Option<usize>> {
        let def = &self.state.definition;
        let mut at = vec![None; def.steps.len()];
        for (pos, e) in self.history.iter().enumerate() {
            let (step, settles) = match e {
                SagaEvent::StepSucceeded { step, .. }
                | SagaEvent::StepFailed { step, .. }
                | SagaEvent::StepOutcomeUnknown { step, .. }
                | SagaEvent::StepAbandoned { step, .. }
                | SagaEvent::StepSkippedByCondition { step, .. } => (step, true),
                SagaEvent::StepSkipped { step, kind: Kind::Do, .. } => (step, true),
                SagaEvent::SagaResumed { step, kind: Kind::Do, .. } => (step, false),
                _ => continue,
            };
            let i = def.step_index(step).unwrap();
            if !settles {
                at[i] = None;
            } else if at[i].is_none() {
                at[i] = Some(pos);
            }
        }
        at
    }

    /// Attempt `attempt` of `kind` of step `index` as the history's
    /// `command_sent` recorded it, with the participant and action of its step.
    fn as_recorded(&self, index: usize, kind: Kind, attempt: u32) -> OutgoingCommand {
        let def = &self.state.definition.steps[index];
        let sent = command_sent(&self.history, &def.name, kind, attempt).unwrap_or_else(|| {
            panic!("attempt {attempt} of {} {kind} is awaited but was never sent", def.name)
        });
        OutgoingCommand {
            command_id: sent.command_id.to_owned(),
            step: def.name.clone(),
            kind,
            participant: def.participant.clone(),
            action: def.action_for(kind).unwrap_or_default().to_owned(),
            attempt,
            payload: sent.payload.clone(),
            deadline: sent.timeout_at,
        }
    }

    fn timeout_if_due(&mut self) {
        match self.state.next_deadline() {
            Some(due) if due <= self.now => {
                self.apply(&Input::Timeout).unwrap_or_else(|e| panic!("due timeout refused: {e}"));
            }
            next => {
                let e = self.apply(&Input::Timeout).unwrap_err();
                assert!(matches!(e, sagas::TransitionError::NotDue { .. }), "{e} (next {next:?})");
            }
        }
    }

    fn step(&mut self, action: &Action) {
        match *action {
            Action::Process { pick, roll, lost } => {
                if self.sent.is_empty() {
                    return;
                }
                let cmd = self.sent[pick % self.sent.len()].clone();
                let reply = self.participant.handle(&cmd, roll);
                if !lost {
                    self.apply(&Input::Reply(reply.clone()))
                        .unwrap_or_else(|e| panic!("reply refused: {e}"));
                    self.delivered.push(reply);
                }
            }
            Action::DuplicateReply { pick } => {
                if self.delivered.is_empty() {
                    return;
                }
                let reply = self.delivered[pick % self.delivered.len()].clone();
                let d = self
                    .apply(&Input::Reply(reply))
                    .unwrap_or_else(|e| panic!("duplicate refused: {e}"));
                if d.absorbed == Some(Absorbed::Duplicate) {
                    assert!(d.events.is_empty());
                }
            }
            Action::Tick => {
                if let Some(due) = self.state.next_deadline() {
                    self.now = self.now.max(due);
                    self.timeout_if_due();
                }
            }
            Action::Wait { ms } => {
                self.now = self.now.plus_ms(u64::from(ms));
                self.timeout_if_due();
            }
            Action::Operator { which, outcome } => {
                let action = match which % 5 {
                    0 => OperatorAction::RetryNow,
                    1 => OperatorAction::Skip,
                    2 => OperatorAction::Abort,
                    3 => OperatorAction::Resume,
                    _ => OperatorAction::Resolve(match outcome % 3 {
                        0 => ResolvedAs::Completed,
                        1 => ResolvedAs::Compensated,
                        _ => ResolvedAs::Failed,
                    }),
                };
                let input = Input::Operator(OperatorInput {
                    action,
                    by: "prop".into(),
                    reason: "because".into(),
                });
                let before = self.state.clone();
                match self.apply(&input) {
                    Ok(d) => self.operator_acted |= !d.events.is_empty(),
                    Err(_) => assert_eq!(self.state, before, "a refused input changed the state"),
                }
            }
            Action::Crash => {
                self.state = replay(self.state.definition.clone(), &self.history);
            }
            Action::Signal { step, id } => {
                let waiting: Vec<usize> =
                    (0..self.waits.len()).filter(|i| self.waits[*i]).collect();
                if waiting.is_empty() {
                    return;
                }
                let i = waiting[step % waiting.len()];
                // A keyed step's event comes with its key, or with another
                // (kept, never taken by it).
                let key = keyed(i)
                    .then(|| if id % 2 == 0 { self.n.to_string() } else { format!("x{}", self.n) });
                let input = Input::Signal(sagas::machine::Signal {
                    name: format!("ev{i}"),
                    event_id: format!("e{i}-{id}"),
                    key,
                    payload: json!({ "event": id }),
                });
                let before = self.state.clone();
                match self.apply(&input) {
                    Ok(d) => {
                        if d.absorbed == Some(Absorbed::Duplicate) {
                            assert!(d.events.is_empty());
                        }
                    }
                    Err(e) => {
                        assert!(
                            matches!(e, sagas::TransitionError::Ended { .. }),
                            "only an ended saga refuses an event that fits: {e}"
                        );
                        assert_eq!(self.state, before, "a refused input changed the state");
                    }
                }
            }
        }
    }
}

/// `PROPTEST_CASES` when set, else 1,024 cases (about half a second).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1_024);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn the_machine_keeps_its_invariants_under_any_schedule(
        shape in shape(),
        n in 0u8..10,
        actions in prop::collection::vec(action(), 0..80),
    ) {
        let definition = shape.definition();
        let mut w = World {
            state: SagaState::new(definition.clone()),
            history: Vec::new(),
            now: UnixMillis(1_000_000),
            sent: Vec::new(),
            delivered: Vec::new(),
            participant: Participant::default(),
            operator_acted: false,
            n,
            conditions: shape.conditions.clone(),
            waits: shape.waits.clone(),
            group: shape.group,
        };
        w.apply(&Input::Start { saga_id: "p1".into(), input: json!({ "n": n }) }).unwrap();
        for a in &actions {
            w.step(a);
        }
        // Inputs stop; every deadline passes.
        for _ in 0..10_000 {
            let Some(due) = w.state.next_deadline() else { break };
            w.now = w.now.max(due);
            w.apply(&Input::Timeout).unwrap();
        }
        prop_assert!(w.state.status.is_end(), "not ended: {:?}", w.state.status);

        // Late redeliveries of every command ever sent, after the saga ended.
        // (`World::apply` checks that nothing follows a terminal event.)
        for cmd in w.sent.clone() {
            let reply = w.participant.handle(&cmd, 0);
            w.apply(&Input::Reply(reply)).unwrap();
        }

        if !w.operator_acted {
            let p = &w.participant;
            let names: Vec<String> = definition.steps.iter().map(|s| s.name.clone()).collect();
            match w.state.status {
                SagaStatus::Completed => {
                    for (i, n) in names.iter().enumerate().filter(|(i, _)| !shape.waits[*i]) {
                        let skipped =
                            w.state.steps[i].forward == sagas::machine::Forward::SkippedByCondition;
                        prop_assert!(
                            p.in_effect(n) != skipped,
                            "completed but `{n}` is {} in effect",
                            if skipped { "skipped and" } else { "not" }
                        );
                    }
                }
                SagaStatus::Failed => {
                    prop_assert!(
                        w.sent.iter().all(|c| c.kind == Kind::Do),
                        "failed (nothing to undo) but undos were sent"
                    );
                    for n in &names {
                        prop_assert!(!p.in_effect(n), "failed but `{n}` is still in effect");
                    }
                }
                SagaStatus::Compensated => {
                    for n in &names {
                        prop_assert!(!p.in_effect(n), "{:?} but `{n}` is still in effect", w.state.status);
                    }
                    // Exactly the steps that may have acted were undone: each
                    // that succeeded or whose outcome is unknown, if it has a
                    // compensation (the other way round is checked as each
                    // undo is sent).
                    for (i, step) in w.state.steps.iter().enumerate() {
                        use sagas::machine::Forward;
                        let may_have_acted =
                            matches!(step.forward, Forward::Succeeded { .. } | Forward::Unknown);
                        if may_have_acted && definition.steps[i].compensation.is_some() {
                            let undone = w.history.iter().any(|e| {
                                matches!(e, SagaEvent::StepCompensated { step, .. } if *step == names[i])
                            });
                            prop_assert!(undone, "compensated but `{}` ({:?}) was never undone", names[i], step.forward);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
