//! Given / when / then tests for every transition of the machine, legal and illegal.
//!
//! A test's history is written as a script of inputs ([`Saga::feed`]): `a ok`,
//! `b failed`, `a.undo retry`, `a/2 ok` (attempt 2), `tick`.

use super::*;
use crate::definition;
use crate::protocol::{self, Outcome, Reply};
use serde_json::json;

pub(super) const T0: UnixMillis = UnixMillis(1_000_000);

fn def(file: &str, yaml: &str) -> Arc<Definition> {
    Arc::new(definition::load(file, yaml).unwrap_or_else(|e| panic!("{e}")))
}

/// Three compensatable steps a → b → c, 2 attempts each, 1s timeouts, 1m deadline.
pub(super) fn abc() -> Arc<Definition> {
    def("abc.yaml", include_str!("../../tests/fixtures/abc.yaml"))
}

/// a → group `prep` (funds: h1 → h2; screening: s) → p (pivot).
fn par() -> Arc<Definition> {
    def("parallel.yaml", include_str!("../../tests/fixtures/parallel.yaml"))
}

/// a (compensatable) → p (pivot) → r (retriable).
fn with_pivot() -> Arc<Definition> {
    def("pivot.yaml", include_str!("../../tests/fixtures/pivot.yaml"))
}

/// A saga with its history, driven input by input.
pub(super) struct Saga {
    pub(super) state: SagaState,
    pub(super) events: Vec<SagaEvent>,
    pub(super) now: UnixMillis,
}

impl Saga {
    /// Given: a started saga.
    pub(super) fn started(def: Arc<Definition>) -> Self {
        let mut s = Self { state: SagaState::new(def), events: vec![], now: T0 };
        s.when(Input::Start { saga_id: "s1".into(), input: json!({"x": 7}) }).unwrap();
        s
    }

    /// Given: a started saga that then took the inputs of `script` (see [`Saga::feed`]).
    pub(super) fn given(def: Arc<Definition>, script: &str) -> Self {
        let mut s = Self::started(def);
        s.feed(script);
        s
    }

    /// When: an input arrives; the decision's events are applied, and replay must agree.
    pub(super) fn when(&mut self, input: Input) -> Result<Decision, TransitionError> {
        let d = decide(&self.state, &input, self.now)?;
        for e in &d.events {
            self.state.apply(e);
        }
        self.events.extend(d.events.iter().cloned());
        assert_eq!(replay(self.state.definition.clone(), &self.events), self.state);
        assert_eq!(d.next_deadline, self.state.next_deadline());
        Ok(d)
    }

    /// When: the comma-separated inputs of `script` arrive in turn, each of
    /// them legal; the last one's decision. An input is `tick` (time passes to
    /// the next deadline and the timer fires) or a participant's answer
    /// `<step>[.undo][/<attempt>] <ok|failed|retry|unsent>` (`do`, attempt 1 unless
    /// written).
    pub(super) fn feed(&mut self, script: &str) -> Decision {
        let mut last = Decision::default();
        for input in script.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            last = match input.split_once(' ') {
                None if input == "tick" => self.tick(),
                Some((command, answer)) => self.answer(command, answer),
                None => panic!("`{input}` is neither `tick` nor `<step> <answer>`"),
            };
        }
        last
    }

    fn answer(&mut self, command: &str, answer: &str) -> Decision {
        let (command, attempt) =
            command.split_once('/').map_or((command, 1), |(c, n)| (c, n.parse().unwrap()));
        let (step, kind) =
            command.strip_suffix(".undo").map_or((command, Kind::Do), |s| (s, Kind::Undo));
        let outcome = match answer {
            "ok" => Outcome::Ok { output: json!({"id": format!("{step}-out")}) },
            "failed" => Outcome::Failed { code: "no".into(), message: "refused".into() },
            "retry" => Outcome::retry("busy", "later"),
            "unsent" => Outcome::Retry {
                code: "down".into(),
                message: "connection refused".into(),
                unsent: true,
            },
            other => panic!("`{other}` is not an answer: ok, failed, retry or unsent"),
        };
        let command_id = protocol::command_id("s1", step, kind);
        self.when(Input::Reply(Reply { command_id, attempt, outcome })).unwrap()
    }

    /// When: time passes to the next deadline and the timer fires.
    pub(super) fn tick(&mut self) -> Decision {
        self.now = self.state.next_deadline().expect("a deadline to wait for");
        self.when(Input::Timeout).unwrap()
    }

    fn operator(
        &mut self,
        action: OperatorAction,
        reason: &str,
    ) -> Result<Decision, TransitionError> {
        self.when(Input::Operator(OperatorInput {
            action,
            by: "ops@example".into(),
            reason: reason.into(),
        }))
    }
}

/// A history as it is stored: each event's JSON (for golden snapshots).
fn as_stored(events: &[SagaEvent]) -> Vec<serde_json::Value> {
    events.iter().map(|e| serde_json::from_str(&e.encode().unwrap()).unwrap()).collect()
}

/// A stored history (JSON lines) read back.
fn decoded(stored: &str) -> Vec<SagaEvent> {
    stored.lines().map(|l| SagaEvent::decode(l).unwrap()).collect()
}

fn names(d: &Decision) -> Vec<&'static str> {
    d.events.iter().map(SagaEvent::name).collect()
}

fn sent(d: &Decision) -> Vec<(String, Kind, u32)> {
    d.commands.iter().map(|c| (c.step.clone(), c.kind, c.attempt)).collect()
}

// ---- start -----------------------------------------------------------------------

#[test]
fn start_records_the_input_and_sends_the_first_step() {
    let s = Saga::started(abc());
    let start = Input::Start { saga_id: "s1".into(), input: json!({"x": 7}) };
    let d = decide(&SagaState::new(abc()), &start, T0).unwrap();
    assert_eq!(names(&d), ["saga_started", "command_sent"]);
    assert_eq!(s.state.status, SagaStatus::Running);
    assert_eq!(s.state.deadline_at, Some(T0.plus_ms(60_000)));
    let cmd = &d.commands[0];
    assert_eq!((cmd.command_id.as_str(), cmd.action.as_str(), cmd.attempt), ("s1.a.do", "a_do", 1));
    assert_eq!(cmd.payload, json!({"id": "s1", "x": 7}));
    assert_eq!(cmd.deadline, T0.plus_ms(1_000));
    assert_eq!(d.next_deadline, Some(T0.plus_ms(1_000)));
}

#[test]
fn start_refuses_bad_input_bad_ids_and_a_second_start() {
    let fresh = SagaState::new(abc());
    let e =
        decide(&fresh, &Input::Start { saga_id: "s1".into(), input: json!({"x": "seven"}) }, T0)
            .unwrap_err();
    assert!(
        matches!(&e, TransitionError::InvalidInput { errors, .. } if errors[0].contains("/x")),
        "{e}"
    );
    for bad in ["", "a.b", "a b", &"x".repeat(SAGA_ID_LEN_MAX + 1)] {
        let e = decide(&fresh, &Input::Start { saga_id: bad.into(), input: json!({"x": 1}) }, T0)
            .unwrap_err();
        assert!(matches!(e, TransitionError::InvalidSagaId { .. }), "{bad:?}");
    }
    let mut s = Saga::started(abc());
    assert_eq!(
        s.when(Input::Start { saga_id: "s1".into(), input: json!({"x": 7}) }),
        Err(TransitionError::AlreadyStarted)
    );
}

#[test]
fn nothing_but_start_is_legal_before_start() {
    let fresh = SagaState::new(abc());
    for input in [
        Input::Timeout,
        Input::Reply(Reply {
            command_id: "s1.a.do".into(),
            attempt: 1,
            outcome: Outcome::Ok { output: json!(null) },
        }),
    ] {
        assert_eq!(decide(&fresh, &input, T0), Err(TransitionError::NotStarted));
    }
}

// ---- forward -----------------------------------------------------------------------

#[test]
fn happy_path_runs_steps_in_order_and_completes() {
    let mut s = Saga::started(with_pivot());
    assert_eq!(sent(&s.feed("a ok")), [("p".into(), Kind::Do, 1)]);
    let d = s.feed("p ok");
    assert_eq!(d.commands[0].payload, json!({"from_a": "a-out"}), "templates read earlier outputs");
    let d = s.feed("r ok");
    assert_eq!(names(&d), ["step_succeeded", "saga_completed"]);
    assert_eq!(s.state.status, SagaStatus::Completed);
    assert_eq!(d.next_deadline, None);
}

#[test]
fn business_failure_compensates_earlier_steps_newest_first() {
    let mut s = Saga::given(abc(), "a ok, b ok");
    let d = s.feed("c failed");
    assert_eq!(names(&d), ["step_failed", "compensation_started", "command_sent"]);
    assert_eq!(sent(&d), [("b".into(), Kind::Undo, 1)]);
    assert_eq!(d.commands[0].action, "b_undo");
    assert_eq!(d.commands[0].payload, json!({"id": "s1", "x": 7}), "undo carries the step's input");
    assert_eq!(sent(&s.feed("b.undo ok")), [("a".into(), Kind::Undo, 1)]);
    let d = s.feed("a.undo ok");
    assert_eq!(names(&d), ["step_compensated", "saga_compensated"]);
    assert_eq!(s.state.status, SagaStatus::Compensated);
    assert!(
        matches!(s.state.cause, Some(CompensationCause::StepFailed { ref step, .. }) if step == "c")
    );
}

#[test]
fn failure_of_the_first_step_fails_the_saga_with_nothing_to_undo() {
    let mut s = Saga::started(abc());
    let d = s.feed("a failed");
    assert_eq!(names(&d), ["step_failed", "saga_failed"]);
    assert_eq!(s.state.status, SagaStatus::Failed);
}

#[test]
fn retry_answer_backs_off_then_sends_the_next_attempt() {
    let mut s = Saga::started(abc());
    let d = s.feed("a retry");
    assert_eq!(names(&d), ["attempt_failed"]);
    let retry_at = d.next_deadline.unwrap();
    let delay = retry_at.since(T0);
    assert!((50..=100).contains(&delay), "first backoff is 50..100ms with jitter, got {delay}");
    assert_eq!(s.state.steps[0].do_progress.wait, Wait::Backoff { retry_at });
    let d = s.tick();
    assert_eq!(sent(&d), [("a".into(), Kind::Do, 2)]);
    assert_eq!(d.commands[0].command_id, "s1.a.do", "the command id is stable across attempts");
    assert_eq!(d.commands[0].msg_id(), "s1.a.do/2");
}

#[test]
fn no_reply_is_retried_then_unknown_and_compensated_like_a_success() {
    let mut s = Saga::given(abc(), "a ok");
    let d = s.tick();
    assert_eq!(names(&d), ["attempt_failed"]);
    assert!(matches!(
        d.events[0],
        SagaEvent::AttemptFailed { timed_out: true, retry_at: Some(_), .. }
    ));
    assert_eq!(sent(&s.tick()), [("b".into(), Kind::Do, 2)]);
    let d = s.tick();
    assert_eq!(
        names(&d),
        ["attempt_failed", "step_outcome_unknown", "compensation_started", "command_sent"]
    );
    assert_eq!(sent(&d), [("b".into(), Kind::Undo, 1)], "the unknown step is undone first");
    s.feed("b.undo ok, a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn a_late_success_of_an_earlier_attempt_is_accepted() {
    let mut s = Saga::given(abc(), "tick, tick"); // attempt 2 sent
    let d = s.feed("a ok");
    assert_eq!(names(&d), ["step_succeeded", "command_sent"]);
}

#[test]
fn stale_retry_and_duplicate_replies_change_nothing() {
    let mut s = Saga::given(abc(), "tick, tick"); // attempt 2 of a in flight
    let d = s.feed("a retry");
    assert_eq!((d.events.len(), d.absorbed), (0, Some(Absorbed::Stale)));
    let d = s.feed("a/2 ok, a/2 ok");
    assert_eq!((d.events.len(), d.absorbed), (0, Some(Absorbed::Duplicate)));
    let d = s.feed("a ok");
    assert_eq!((d.events.len(), d.absorbed), (0, Some(Absorbed::Duplicate)));
}

#[test]
fn replies_for_unknown_commands_or_unsent_attempts_are_illegal() {
    let mut s = Saga::started(abc());
    let bad = |id: &str, attempt| {
        Input::Reply(Reply {
            command_id: id.into(),
            attempt,
            outcome: Outcome::Ok { output: json!(null) },
        })
    };
    for id in ["other.a.do", "s1.zz.do", "s1.a.maybe", "s1a.do", "s1.b.do"] {
        let e = s.when(bad(id, 1)).unwrap_err();
        assert!(
            matches!(
                e,
                TransitionError::UnknownCommand { .. } | TransitionError::UnknownAttempt { .. }
            ),
            "{id}: {e}"
        );
    }
    assert!(matches!(
        s.when(bad("s1.a.do", 2)),
        Err(TransitionError::UnknownAttempt { sent: 1, .. })
    ));
    assert!(matches!(s.when(bad("s1.a.do", 0)), Err(TransitionError::UnknownAttempt { .. })));
    assert!(matches!(
        s.when(bad("s1.a.undo", 1)),
        Err(TransitionError::UnknownAttempt { sent: 0, .. })
    ));
}

#[test]
fn timeout_before_anything_is_due_is_refused() {
    let mut s = Saga::started(abc());
    assert!(matches!(s.when(Input::Timeout), Err(TransitionError::NotDue { next: Some(_) })));
}

// ---- compensation --------------------------------------------------------------------

#[test]
fn compensation_that_keeps_failing_parks_the_saga_with_the_reason() {
    let mut s = Saga::given(abc(), "a ok, b failed, a.undo retry, tick");
    let d = s.tick(); // attempt 2 times out: budget of 2 spent
    assert_eq!(names(&d), ["attempt_failed", "saga_parked"]);
    assert_eq!(s.state.status, SagaStatus::Parked);
    let park = s.state.park.clone().unwrap();
    assert_eq!((park.step, park.kind, park.reason), (0, Kind::Undo, ParkReason::CompensationStuck));
    assert!(park.message.contains("timeout"), "{}", park.message);
    assert_eq!(s.state.next_deadline(), None, "a parked saga waits for an operator");
    assert!(matches!(s.when(Input::Timeout), Err(TransitionError::NotDue { .. })));
}

#[test]
fn a_refused_compensation_parks_at_once() {
    let mut s = Saga::given(abc(), "a ok, b failed");
    let d = s.feed("a.undo failed");
    assert_eq!(names(&d), ["attempt_failed", "saga_parked"]);
    assert_eq!(s.state.park.as_ref().unwrap().reason, ParkReason::CompensationFailed);
}

#[test]
fn a_late_success_of_a_given_up_step_is_recorded_while_compensating() {
    let mut s = Saga::given(abc(), "a ok, tick, tick, tick"); // b unknown, undo of b sent
    let d = s.feed("b ok");
    assert_eq!(names(&d), ["late_success_recorded"]);
    assert_eq!(s.state.steps[1].forward, Forward::Succeeded { late: true });
    s.feed("b.undo ok, a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn a_success_for_the_command_a_parked_saga_waits_on_unparks_it() {
    let mut s = Saga::given(abc(), "a ok, b failed, tick, tick, tick"); // undo of a parked
    assert_eq!(s.state.status, SagaStatus::Parked);
    let d = s.feed("a.undo ok");
    assert_eq!(names(&d), ["step_compensated", "saga_compensated"]);
}

// ---- deadline and pivot -----------------------------------------------------------------

#[test]
fn the_saga_deadline_aborts_and_compensates_before_the_pivot() {
    let mut s = Saga::given(abc(), "a ok, b retry"); // waiting to retry b
    s.now = s.state.deadline_at.unwrap();
    let d = s.when(Input::Timeout).unwrap();
    assert_eq!(names(&d), ["step_outcome_unknown", "compensation_started", "command_sent"]);
    assert_eq!(s.state.cause, Some(CompensationCause::DeadlineExceeded));
    assert_eq!(sent(&d), [("b".into(), Kind::Undo, 1)], "a sent step may still land: undo it");
}

#[test]
fn after_the_pivot_the_deadline_no_longer_aborts() {
    let s = Saga::given(with_pivot(), "a ok, p ok");
    assert!(!s.state.abortable());
    assert_eq!(s.state.next_deadline(), Some(s.now.plus_ms(1_000)), "only r's timeout is pending");
}

#[test]
fn a_pivot_with_unknown_outcome_parks_forward() {
    let mut s = Saga::given(with_pivot(), "a ok, tick, tick");
    let d = s.tick();
    assert_eq!(names(&d), ["attempt_failed", "step_outcome_unknown", "saga_parked"]);
    assert_eq!(s.state.park.as_ref().unwrap().reason, ParkReason::ForwardStuck);
}

#[test]
fn a_failed_pivot_compensates_the_steps_before_it() {
    let d = Saga::given(with_pivot(), "a ok").feed("p failed");
    assert_eq!(sent(&d), [("a".into(), Kind::Undo, 1)]);
}

#[test]
fn a_failure_after_the_pivot_parks() {
    let mut s = Saga::given(with_pivot(), "a ok, p ok");
    let d = s.feed("r failed");
    assert_eq!(names(&d), ["step_failed", "saga_parked"]);
    assert_eq!(s.state.park.as_ref().unwrap().step, 2);
}

// ---- operators ---------------------------------------------------------------------------

#[test]
fn retry_now_sends_the_next_attempt_without_waiting_within_the_budget() {
    let mut s = Saga::given(abc(), "a retry");
    let d = s.operator(OperatorAction::RetryNow, "").unwrap();
    assert_eq!(names(&d), ["operator_retried", "command_sent"]);
    assert_eq!(sent(&d), [("a".into(), Kind::Do, 2)]);
    assert!(matches!(
        s.operator(OperatorAction::RetryNow, ""),
        Err(TransitionError::RetryBudgetSpent { attempts: 2, .. })
    ));
}

#[test]
fn skip_moves_past_a_stuck_step_and_needs_a_reason() {
    let mut s = Saga::started(abc());
    assert_eq!(
        s.operator(OperatorAction::Skip, " "),
        Err(TransitionError::ReasonRequired { action: "skip" })
    );
    assert!(
        matches!(s.operator(OperatorAction::Skip, "r"), Err(TransitionError::NotNow { .. })),
        "no skip while an answer is awaited"
    );
    s.tick(); // attempt 1 timed out; waiting to retry
    let d = s.operator(OperatorAction::Skip, "done by hand, ticket 12").unwrap();
    assert_eq!(names(&d), ["step_skipped", "command_sent"]);
    assert_eq!(sent(&d), [("b".into(), Kind::Do, 1)]);
    let d = s.feed("b failed");
    assert_eq!(
        sent(&d),
        [("a".into(), Kind::Undo, 1)],
        "a skipped step counts as done: it is undone if it was ever sent"
    );
}

#[test]
fn a_skipped_step_that_was_never_sent_is_not_compensated() {
    let mut s = Saga::given(abc(), "a ok, b failed, a.undo failed"); // parked on the undo of a
    s.operator(OperatorAction::Skip, "voided by hand").unwrap();
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn skip_of_a_parked_compensation_continues_compensating() {
    let mut s = Saga::given(abc(), "a ok, b ok, c failed, b.undo failed");
    assert_eq!(s.state.status, SagaStatus::Parked);
    let d = s.operator(OperatorAction::Skip, "refunded by hand").unwrap();
    assert_eq!(sent(&d), [("a".into(), Kind::Undo, 1)]);
    s.feed("a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn abort_compensates_before_the_pivot_and_is_refused_after() {
    let mut s = Saga::given(abc(), "a ok");
    assert_eq!(
        s.operator(OperatorAction::Abort, ""),
        Err(TransitionError::ReasonRequired { action: "abort" })
    );
    let d = s.operator(OperatorAction::Abort, "customer cancelled").unwrap();
    assert_eq!(names(&d), ["step_outcome_unknown", "compensation_started", "command_sent"]);
    assert!(
        matches!(s.state.cause, Some(CompensationCause::Aborted { ref by, .. }) if by == "ops@example")
    );
    assert!(matches!(
        s.operator(OperatorAction::Abort, "again"),
        Err(TransitionError::NotNow { .. })
    ));

    let mut s = Saga::given(with_pivot(), "a ok");
    assert!(
        matches!(s.operator(OperatorAction::Abort, "too late"), Err(TransitionError::PastPivot { ref pivot }) if pivot == "p")
    );
}

#[test]
fn resume_retries_a_parked_command_with_a_fresh_budget() {
    let mut s = Saga::started(abc());
    assert!(matches!(s.operator(OperatorAction::Resume, ""), Err(TransitionError::NotNow { .. })));
    s.feed("a ok, b failed, tick, tick, tick"); // undo of a parked after 2 attempts
    assert!(matches!(
        s.operator(OperatorAction::RetryNow, ""),
        Err(TransitionError::NotNow { .. })
    ));
    let d = s.operator(OperatorAction::Resume, "participant fixed").unwrap();
    assert_eq!(names(&d), ["saga_resumed", "command_sent"]);
    assert_eq!(sent(&d), [("a".into(), Kind::Undo, 3)]);
    assert_eq!(s.state.status, SagaStatus::Compensating);
    assert_eq!(s.state.steps[0].undo_progress.attempts_in_budget(), 1);
}

#[test]
fn resume_refuses_a_command_the_participant_refused_for_good() {
    let mut s = Saga::given(abc(), "a ok, b failed, a.undo failed");
    assert!(matches!(
        s.operator(OperatorAction::Resume, "again"),
        Err(TransitionError::NotNow { .. })
    ));
}

#[test]
fn a_late_refusal_of_a_parked_pivot_compensates_the_steps_before_it() {
    let mut s = Saga::given(with_pivot(), "a ok, tick, tick, tick"); // pivot unknown: parked
    assert_eq!(s.state.status, SagaStatus::Parked);
    let d = s.feed("p failed");
    assert_eq!(names(&d), ["step_failed", "compensation_started", "command_sent"]);
    assert_eq!(s.state.park, None);
    let d = s.feed("p failed");
    assert_eq!(d.absorbed, Some(Absorbed::Duplicate));
}

#[test]
fn resolve_is_only_for_parked_sagas() {
    let mut s = Saga::started(abc());
    assert!(matches!(
        s.operator(OperatorAction::Resolve(ResolvedAs::Completed), "looks fine"),
        Err(TransitionError::NotNow { .. })
    ));
}

#[test]
fn resolve_ends_the_saga_by_hand_with_evidence_and_then_nothing_changes_it() {
    let mut s = Saga::given(abc(), "a ok, b failed, a.undo failed");
    assert_eq!(
        s.operator(OperatorAction::Resolve(ResolvedAs::Compensated), ""),
        Err(TransitionError::ReasonRequired { action: "resolve" })
    );
    let d = s
        .operator(OperatorAction::Resolve(ResolvedAs::Compensated), "voided in admin tool")
        .unwrap();
    assert_eq!(names(&d), ["saga_resolved"]);
    assert_eq!(s.state.status, SagaStatus::Compensated);
    assert_eq!(
        s.operator(OperatorAction::Resume, "x"),
        Err(TransitionError::Ended { status: SagaStatus::Compensated })
    );
}

#[test]
fn operator_input_is_bounded_and_names_someone() {
    let mut s = Saga::started(abc());
    let long = "x".repeat(OPERATOR_TEXT_LEN_MAX + 1);
    assert!(matches!(
        s.operator(OperatorAction::Skip, &long),
        Err(TransitionError::TooLong { field: "reason", .. })
    ));
    let e = s.when(Input::Operator(OperatorInput {
        action: OperatorAction::Skip,
        by: " ".into(),
        reason: "r".into(),
    }));
    assert_eq!(e, Err(TransitionError::OperatorMissing));
}

// ---- terminal states -----------------------------------------------------------------------

#[test]
fn terminal_states_absorb_late_and_duplicate_replies_and_refuse_everything_else() {
    // Attempt 1 of a timed out, attempt 2 was sent after the backoff and answered.
    let mut s = Saga::given(abc(), "tick, tick, a/2 ok, b ok, c ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
    let seq = s.state.seq;
    for command in ["a/1", "a/2", "c/1"] {
        for answer in ["ok", "failed", "retry"] {
            let d = s.feed(&format!("{command} {answer}"));
            assert_eq!((d.events.len(), d.absorbed), (0, Some(Absorbed::Ended)));
        }
    }
    assert_eq!(s.state.seq, seq);
    assert!(matches!(s.when(Input::Timeout), Err(TransitionError::NotDue { next: None })));
    assert!(matches!(s.operator(OperatorAction::Skip, "r"), Err(TransitionError::Ended { .. })));
    assert!(matches!(
        s.when(Input::Reply(Reply {
            command_id: "s1.a.do".into(),
            attempt: 9,
            outcome: Outcome::Ok { output: json!(null) }
        })),
        Err(TransitionError::UnknownAttempt { .. })
    ));
}

// ---- events --------------------------------------------------------------------------------

#[test]
fn events_round_trip_and_refuse_unknown_versions() {
    let s = Saga::given(abc(), "a ok, b failed");
    for e in &s.events {
        let text = e.encode().unwrap();
        assert!(text.starts_with("{\"v\":2,\"type\":"), "{text}");
        assert_eq!(&SagaEvent::decode(&text).unwrap(), e);
    }
    assert!(matches!(
        SagaEvent::decode(r#"{"v":99,"type":"saga_completed","at":1}"#),
        Err(DecodeError::TooNew { found: 99 })
    ));
    assert!(matches!(
        SagaEvent::decode(r#"{"type":"saga_completed","at":1}"#),
        Err(DecodeError::Envelope(_))
    ));
    assert!(matches!(
        SagaEvent::decode(r#"{"v":1,"type":"saga_exploded","at":1}"#),
        Err(DecodeError::Body { .. })
    ));
}

#[test]
fn golden_history_of_a_compensated_saga() {
    let s = Saga::given(abc(), "a ok, b retry, tick, b/2 ok, c failed, b.undo ok, a.undo ok");
    let stored = as_stored(&s.events);
    insta::assert_json_snapshot!("compensated_history", stored);
}

#[test]
fn a_version_1_history_written_earlier_still_replays() {
    // Stored by an earlier build; must keep replaying to the same state after upgrades.
    let stored = include_str!("testdata/history_v1.jsonl");
    let events = decoded(stored);
    let state = replay(abc(), &events);
    assert_eq!(state.status, SagaStatus::Compensated);
    assert_eq!(state.seq, events.len() as u64);
    assert_eq!(state.steps[1].do_progress.attempts, 2);
    assert_eq!(
        state.steps[2].forward,
        Forward::Failed { code: "no".into(), message: "refused".into() }
    );
}

// ---- unsent retries ------------------------------------------------------------------

#[test]
fn unsent_retries_are_outside_the_budget() {
    // `a` allows 2 attempts; five answers that nothing left the participant
    // do not spend them: the sixth attempt succeeds and the saga goes on.
    let mut s = Saga::given(abc(), "a unsent, tick, a/2 unsent, tick, a/3 unsent, tick");
    let d = s.feed("a/4 unsent, tick, a/5 unsent, tick");
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Do, 6)]);
    let p = s.state.steps[0].progress(Kind::Do);
    assert_eq!((p.attempts, p.attempts_in_budget(), p.unsent), (6, 1, 5));
    let d = s.feed("a/6 ok");
    assert_eq!(sent(&d), [("b".to_owned(), Kind::Do, 1)]);
    assert!(matches!(s.state.steps[0].forward, Forward::Succeeded { .. }));
}

#[test]
fn sent_retries_still_spend_the_budget_around_unsent_ones() {
    let mut s = Saga::given(abc(), "a unsent, tick, a/2 retry, tick");
    let d = s.feed("a/3 retry");
    assert_eq!(
        names(&d),
        ["attempt_failed", "step_outcome_unknown", "compensation_started", "command_sent"]
    );
    assert_eq!(s.state.steps[0].forward, Forward::Unknown);
}

#[test]
fn unsent_retries_have_a_bound_of_their_own() {
    // Without a deadline: the test is about the bound.
    let yaml = include_str!("../../tests/fixtures/abc.yaml").replace("deadline: 1m\n", "");
    let mut s = Saga::started(def("abc-no-deadline.yaml", &yaml));
    assert_eq!(s.state.deadline_at, None);
    for attempt in 1..=UNSENT_RETRIES_MAX {
        s.feed(&format!("a/{attempt} unsent, tick"));
    }
    let d = s.feed(&format!("a/{} unsent", UNSENT_RETRIES_MAX + 1));
    assert!(names(&d).contains(&"step_outcome_unknown"), "{:?}", names(&d));
}

#[test]
fn resume_gives_unsent_retries_a_fresh_bound_too() {
    let yaml = include_str!("../../tests/fixtures/abc.yaml").replace("deadline: 1m\n", "");
    let mut s = Saga::given(def("abc-no-deadline.yaml", &yaml), "a ok, b failed");
    for attempt in 1..=UNSENT_RETRIES_MAX {
        s.feed(&format!("a.undo/{attempt} unsent, tick"));
    }
    s.feed(&format!("a.undo/{} unsent", UNSENT_RETRIES_MAX + 1));
    assert_eq!(s.state.status, SagaStatus::Parked);
    s.operator(OperatorAction::Resume, "provider back").unwrap();
    let d = s.feed(&format!("a.undo/{} unsent", UNSENT_RETRIES_MAX + 2));
    assert_eq!(names(&d), ["attempt_failed"], "retried again, not parked");
    assert_eq!(s.state.steps[0].progress(Kind::Undo).unsent, 1);
}

#[test]
fn completion_records_the_rendered_output_once() {
    let yaml = format!(
        "{}\noutput:\n  from_c: \"{{{{steps.c.output.id}}}}\"\n  missing_is_error: false\n",
        include_str!("../../tests/fixtures/abc.yaml")
    );
    let mut s = Saga::started(def("abc-out.yaml", &yaml));
    let d = s.feed("a ok, b ok, c ok");
    assert_eq!(names(&d), ["step_succeeded", "saga_completed"]);
    assert_eq!(s.state.output, Some(json!({"from_c": "c-out", "missing_is_error": false})));
    let outcome = s.state.outcome();
    assert!(outcome.ended && outcome.status == "completed" && outcome.cause.is_none());
    // Replay reads the output from the event; it is not rendered again.
    let replayed = replay(s.state.definition.clone(), &s.events);
    assert_eq!(replayed.output, s.state.output);
}

#[test]
fn an_output_that_cannot_render_still_completes_the_saga() {
    let yaml = format!(
        "{}\noutput:\n  x: \"{{{{steps.c.output.absent}}}}\"\n",
        include_str!("../../tests/fixtures/abc.yaml")
    );
    let mut s = Saga::started(def("abc-bad-out.yaml", &yaml));
    s.feed("a ok, b ok, c ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
    assert_eq!(s.state.output, None);
    assert!(s.state.output_error.as_deref().is_some_and(|e| e.contains("absent")));
    let cause = s.state.outcome().cause.expect("a cause");
    assert_eq!(cause["cause"], "output_unrenderable");
}

#[test]
fn a_compensated_saga_tells_why_in_its_outcome() {
    let mut s = Saga::given(abc(), "a ok");
    s.feed("b failed, a.undo ok");
    let outcome = s.state.outcome();
    assert_eq!(outcome.status, "compensated");
    assert!(outcome.ended && outcome.output.is_none());
    assert_eq!(outcome.cause.expect("a cause")["cause"], "step_failed");
}

/// `abc` as version `version`, with `edit` applied to its text.
fn abc_v(version: u32, edit: impl Fn(String) -> String) -> Arc<Definition> {
    let text = include_str!("../../tests/fixtures/abc.yaml")
        .replace("version: 1", &format!("version: {version}"));
    def("abc-v.yaml", &edit(text))
}

fn migrate_to(s: &mut Saga, to: Arc<Definition>) -> Result<Decision, TransitionError> {
    s.when(Input::Migrate { to, by: "ann".into(), reason: "new step".into() })
}

#[test]
fn a_saga_moves_to_a_version_that_keeps_the_steps_it_reached() {
    // v2 changes step c (not reached yet) and adds d.
    let v2 = abc_v(2, |t| {
        t.replace("action: c_do", "action: c2_do")
            + "  - name: d\n    participant: p\n    action: d_do\n    compensation: d_undo\n"
    });
    let mut s = Saga::given(abc(), "a ok");
    assert!(migrate::check(&s.state, &s.events, &v2).is_ok());
    let d = migrate_to(&mut s, v2.clone()).unwrap();
    assert_eq!(names(&d), ["definition_changed"]);
    assert!(d.commands.is_empty(), "moving sends nothing by itself");
    // The shell replays the history under v2 from here on: b, then v2's c and d.
    let mut moved = Saga { state: replay(v2, &s.events), events: s.events.clone(), now: s.now };
    let d = moved.feed("b ok");
    assert_eq!(d.commands[0].action, "c2_do");
    moved.feed("c ok");
    let d = moved.feed("d ok");
    assert_eq!(names(&d), ["step_succeeded", "saga_completed"]);
}

#[test]
fn a_saga_does_not_move_to_a_version_that_changes_what_it_did() {
    let mut s = Saga::given(abc(), "a ok");
    let changed = abc_v(2, |t| t.replace("compensation: a_undo", "compensation: a_undo2"));
    let e = migrate::check(&s.state, &s.events, &changed).unwrap_err();
    assert_eq!(e.code, "step_changed", "{e}");
    assert!(matches!(migrate_to(&mut s, changed), Err(TransitionError::Incompatible(_))));
    let shorter = abc_v(2, |t| t.split("  - name: b").next().unwrap().to_owned());
    let mut at_b = Saga::given(abc(), "a ok, b ok");
    assert_eq!(
        migrate::check(&at_b.state, &at_b.events, &shorter).unwrap_err().code,
        "step_removed"
    );
    let stricter = abc_v(2, |t| t.replace("x: { type: integer }", "x: { type: string }"));
    assert_eq!(
        migrate::check(&at_b.state, &at_b.events, &stricter).unwrap_err().code,
        "input_invalid"
    );
    assert_eq!(migrate::check(&at_b.state, &at_b.events, &abc()).unwrap_err().code, "same_version");
    let other = def(
        "other.yaml",
        &include_str!("../../tests/fixtures/abc.yaml").replace("name: abc", "name: other"),
    );
    assert_eq!(migrate::check(&at_b.state, &at_b.events, &other).unwrap_err().code, "other_type");
    // Reason and operator are required, as for any repair.
    let v2 = abc_v(2, |t| t.replace("action: c_do", "action: c2_do"));
    let no_reason = Input::Migrate { to: v2, by: "ann".into(), reason: " ".into() };
    assert!(matches!(at_b.when(no_reason), Err(TransitionError::ReasonRequired { .. })));
    // An ended saga moves nowhere.
    let mut done = Saga::given(abc(), "a ok, b ok, c ok");
    let v3 = abc_v(3, |t| t.replace("action: c_do", "action: c3_do"));
    assert!(matches!(migrate_to(&mut done, v3), Err(TransitionError::Ended { .. })));
}

// ---- conditions (`when:`) --------------------------------------------------------------

/// `abc` with a `when:` on `b` (and on `c`, when given).
fn abc_when(b: &str, c: Option<&str>) -> Arc<Definition> {
    let mut yaml = include_str!("../../tests/fixtures/abc.yaml").replacen(
        "action: b_do",
        &format!("action: b_do\n    when: \"{b}\""),
        1,
    );
    if let Some(c) = c {
        yaml = yaml.replacen("action: c_do", &format!("action: c_do\n    when: \"{c}\""), 1);
    }
    def("abc_when.yaml", &yaml)
}

#[test]
fn a_false_condition_skips_the_step_which_is_never_undone() {
    let mut s = Saga::started(abc_when("input.x > 10", None));
    let d = s.feed("a ok");
    assert_eq!(names(&d), ["step_succeeded", "step_skipped_by_condition", "command_sent"]);
    assert_eq!(sent(&d), [("c".to_owned(), Kind::Do, 1)]);
    assert_eq!(s.state.steps[1].forward, Forward::SkippedByCondition);
    assert!(matches!(
        &d.events[1],
        SagaEvent::StepSkippedByCondition { step, condition, .. }
            if step == "b" && condition == "input.x > 10"
    ));
    // `c` fails: only `a` is undone; the skipped `b` was never sent.
    let d = s.feed("c failed");
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Undo, 1)]);
    s.feed("a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn a_true_condition_over_the_input_and_an_earlier_output_runs_the_step() {
    let mut s = Saga::started(abc_when("input.x > 5 && steps.a.output.id == 'a-out'", None));
    let d = s.feed("a ok");
    assert_eq!(names(&d), ["step_succeeded", "command_sent"]);
    assert_eq!(sent(&d), [("b".to_owned(), Kind::Do, 1)]);
    // Its retries do not decide it again: the condition was decided when reached.
    let d = s.feed("b retry, tick");
    assert_eq!(sent(&d), [("b".to_owned(), Kind::Do, 2)]);
}

#[test]
fn a_skipped_step_is_absent_from_later_conditions_and_every_skip_can_complete() {
    let mut s = Saga::started(abc_when("input.x > 10", Some("has(steps.b)")));
    let d = s.feed("a ok");
    assert_eq!(
        names(&d),
        [
            "step_succeeded",
            "step_skipped_by_condition",
            "step_skipped_by_condition",
            "saga_completed"
        ]
    );
    assert!(d.commands.is_empty());
    assert_eq!(s.state.status, SagaStatus::Completed);
}

#[test]
fn a_condition_that_cannot_be_decided_fails_its_step_and_turns_back() {
    let mut s = Saga::started(abc_when("steps.a.output.missing == 1", None));
    let d = s.feed("a ok");
    assert_eq!(
        names(&d),
        ["step_succeeded", "step_failed", "compensation_started", "command_sent"]
    );
    assert!(matches!(&d.events[1], SagaEvent::StepFailed { code, message, .. }
        if code == "condition_failed" && message.contains("could not be evaluated")));
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Undo, 1)]);
}

#[test]
fn a_condition_on_the_first_step_is_decided_at_the_start() {
    let yaml = include_str!("../../tests/fixtures/abc.yaml").replacen(
        "action: a_do",
        "action: a_do\n    when: \"input.x == 7\"",
        1,
    );
    let s = Saga::started(def("first.yaml", &yaml));
    assert_eq!(s.state.steps[0].do_progress.attempts, 1, "x is 7: `a` runs");
    let yaml = include_str!("../../tests/fixtures/abc.yaml").replacen(
        "action: a_do",
        "action: a_do\n    when: \"input.x != 7\"",
        1,
    );
    let s = Saga::started(def("first.yaml", &yaml));
    assert_eq!(s.state.steps[0].forward, Forward::SkippedByCondition);
    assert_eq!(s.state.steps[1].do_progress.attempts, 1, "`b` is sent at the start");
}

#[test]
fn golden_history_with_a_skipped_step() {
    let s = Saga::given(abc_when("input.x > 10", None), "a ok, c ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
    let stored = as_stored(&s.events);
    insta::assert_json_snapshot!("conditional_history", stored);
}

#[test]
fn a_version_2_history_written_earlier_still_replays() {
    // Stored by this build: must keep replaying to the same state after upgrades.
    let stored = include_str!("testdata/history_v2.jsonl");
    let events = decoded(stored);
    let state = replay(abc_when("input.x > 10", None), &events);
    assert_eq!(state.status, SagaStatus::Completed);
    assert_eq!(state.steps[1].forward, Forward::SkippedByCondition);
    assert_eq!(state.seq, events.len() as u64);
}

// ---- waiting steps and signals -----------------------------------------------------------

/// a → w (waits for `confirmed` keyed by a's output id; the pivot) → r.
fn waits() -> Arc<Definition> {
    def("wait.yaml", include_str!("../../tests/fixtures/wait.yaml"))
}

fn signal(event_id: &str, key: &str, payload: serde_json::Value) -> Input {
    Input::Signal(Signal {
        name: "confirmed".into(),
        event_id: event_id.into(),
        key: Some(key.into()),
        payload,
    })
}

#[test]
fn a_waiting_step_sends_nothing_and_takes_the_event_that_fits() {
    let mut s = Saga::started(waits());
    let d = s.feed("a ok");
    assert_eq!(names(&d), ["step_succeeded", "wait_started"]);
    assert!(d.commands.is_empty(), "a waiting step sends nothing");
    assert!(s.state.in_flight().is_empty(), "nothing to re-send after a takeover");
    assert_eq!(s.state.next_deadline(), Some(T0.plus_ms(30_000)));
    // Another key is kept, not taken.
    let d = s.when(signal("e1", "other", json!({"ok": true}))).unwrap();
    assert_eq!(names(&d), ["signal_received"]);
    assert_eq!(s.state.steps[1].forward, Forward::Pending);
    let d = s.when(signal("e2", "a-out", json!({"ok": true}))).unwrap();
    assert_eq!(names(&d), ["signal_received", "step_succeeded", "command_sent"]);
    assert_eq!(s.state.steps[1].output, Some(json!({"ok": true})));
    assert_eq!(d.commands[0].payload, json!({"ok": true}), "the event's body feeds later steps");
    assert_eq!(s.state.signals[1].taken_by, Some(1));
    // The same event again changes nothing.
    let d = s.when(signal("e2", "a-out", json!({"ok": true}))).unwrap();
    assert!(d.events.is_empty());
    assert_eq!(d.absorbed, Some(Absorbed::Duplicate));
}

#[test]
fn an_event_that_comes_early_is_kept_and_taken_when_the_step_is_reached() {
    let mut s = Saga::started(waits());
    let d = s.when(signal("early", "a-out", json!({"ok": false}))).unwrap();
    assert_eq!(names(&d), ["signal_received"]);
    let d = s.feed("a ok");
    assert_eq!(names(&d), ["step_succeeded", "wait_started", "step_succeeded", "command_sent"]);
    assert_eq!(sent(&d), [("r".to_owned(), Kind::Do, 1)]);
}

#[test]
fn events_that_do_not_fit_are_refused_and_an_ended_saga_takes_none() {
    let mut s = Saga::given(waits(), "a ok");
    let bad = s.when(signal("e1", "a-out", json!({"ok": "yes"}))).unwrap_err();
    assert!(
        matches!(&bad, TransitionError::InvalidSignal { problem } if problem.contains("schema")),
        "{bad}"
    );
    let unknown = Input::Signal(Signal {
        name: "shipped".into(),
        event_id: "e1".into(),
        key: None,
        payload: json!({}),
    });
    assert!(matches!(s.when(unknown), Err(TransitionError::InvalidSignal { .. })));
    let empty_id = signal("", "a-out", json!({"ok": true}));
    assert!(matches!(s.when(empty_id), Err(TransitionError::InvalidSignal { .. })));
    // Nobody answers a waiting step: a reply to it is no reply.
    let reply = Input::Reply(Reply {
        command_id: "s1.w.do".into(),
        attempt: 1,
        outcome: Outcome::Ok { output: json!({}) },
    });
    assert!(matches!(s.when(reply), Err(TransitionError::UnknownCommand { .. })));
    assert!(matches!(
        s.operator(OperatorAction::RetryNow, "r"),
        Err(TransitionError::NotNow { .. })
    ));
    s.when(signal("e9", "a-out", json!({"ok": true}))).unwrap();
    s.feed("r ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
    // The same event again, after the end (its answer was lost): a duplicate.
    let d = s.when(signal("e9", "a-out", json!({"ok": true}))).unwrap();
    assert_eq!((d.events.len(), d.absorbed), (0, Some(Absorbed::Duplicate)));
    assert!(matches!(
        s.when(signal("e10", "a-out", json!({"ok": true}))),
        Err(TransitionError::Ended { .. })
    ));
}

#[test]
fn an_event_with_a_bad_name_key_or_body_is_refused_and_a_saga_keeps_at_most_its_limit() {
    let mut s = Saga::given(waits(), "a ok");
    let refused = |s: &mut Saga, input: Input, fragment: &str| {
        let e = s.when(input).unwrap_err();
        assert!(
            matches!(&e, TransitionError::InvalidSignal { problem } if problem.contains(fragment)),
            "{e}"
        );
    };
    let bad_name = Input::Signal(Signal {
        name: "con firmed".into(),
        event_id: "e1".into(),
        key: None,
        payload: json!({}),
    });
    refused(&mut s, bad_name, "is not an event name");
    refused(&mut s, signal("e1", "a\u{7}out", json!({"ok": true})), "`key` must be 1-128 bytes");
    let big = json!({"ok": true, "pad": "x".repeat(SIGNAL_BYTES_MAX)});
    refused(&mut s, signal("e1", "a-out", big), "over the limit of 65536");
    assert!(s.state.signals.is_empty(), "nothing refused is kept");
    // Events for another key are kept, up to the limit; then refused.
    for n in 0..SIGNALS_MAX {
        let d = s.when(signal(&format!("k{n}"), &format!("other-{n}"), json!({"ok": true})));
        assert_eq!(names(&d.unwrap()), ["signal_received"]);
    }
    let over = s.when(signal("k-over", "other", json!({"ok": true})));
    assert!(matches!(over, Err(TransitionError::TooManySignals)), "{over:?}");
    // A repeat of one it holds is still a duplicate, not a refusal.
    let again = s.when(signal("k0", "other-0", json!({"ok": true}))).unwrap();
    assert_eq!(again.absorbed, Some(Absorbed::Duplicate));
}

#[test]
fn a_wait_that_times_out_fails_its_step_and_the_saga_turns_back() {
    let mut s = Saga::given(waits(), "a ok");
    let d = s.tick();
    assert_eq!(names(&d), ["step_failed", "compensation_started", "command_sent"]);
    assert!(matches!(&d.events[0], SagaEvent::StepFailed { code, .. } if code == "wait_timed_out"));
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Undo, 1)]);
}

#[test]
fn a_waiting_step_can_be_aborted_and_skipped_until_its_event_came() {
    let mut s = Saga::given(waits(), "a ok");
    assert!(s.state.abortable(), "nothing passed the point of no return yet");
    let d = s.operator(OperatorAction::Abort, "customer left").unwrap();
    assert_eq!(names(&d), ["step_abandoned", "compensation_started", "command_sent"]);

    let mut s = Saga::given(waits(), "a ok");
    // Skipped, it has no output: `r` (the pivot), which reads it, cannot be
    // rendered, and the saga turns back; the skipped wait is never undone.
    let d = s.operator(OperatorAction::Skip, "confirmed by phone").unwrap();
    assert_eq!(names(&d), ["step_skipped", "step_failed", "compensation_started", "command_sent"]);
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Undo, 1)]);
}

#[test]
fn an_event_that_says_it_did_not_happen_fails_the_waiting_step() {
    let yaml = include_str!("../../tests/fixtures/wait.yaml")
        .replace("      timeout: 30s\n", "      timeout: 30s\n      fail_when: \"!event.ok\"\n");
    let mut s = Saga::given(def("refusing.yaml", &yaml), "a ok");
    let d = s.when(signal("e1", "a-out", json!({"ok": false}))).unwrap();
    assert_eq!(
        names(&d),
        ["signal_received", "step_failed", "compensation_started", "command_sent"]
    );
    assert!(matches!(&d.events[1], SagaEvent::StepFailed { code, .. } if code == "event_refused"));
    assert_eq!(s.state.signals[0].taken_by, Some(1), "the refusing event was taken");
    assert_eq!(sent(&d), [("a".to_owned(), Kind::Undo, 1)]);
}

#[test]
fn golden_history_of_a_saga_that_waited() {
    let mut s = Saga::started(waits());
    s.when(signal("early", "a-out", json!({"ok": true}))).unwrap();
    s.feed("a ok, r ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
    let stored = as_stored(&s.events);
    insta::assert_json_snapshot!("waiting_history", stored);
}

#[test]
fn a_version_2_history_with_events_from_outside_still_replays() {
    let stored = include_str!("testdata/history_v2_waits.jsonl");
    let events = decoded(stored);
    let state = replay(waits(), &events);
    assert_eq!(state.status, SagaStatus::Completed);
    assert_eq!(state.signals[0].taken_by, Some(1));
    assert_eq!(state.steps[1].output, Some(json!({"ok": true})));
}

// ---- parallel groups -----------------------------------------------------------------

fn kinds(d: &Decision) -> Vec<String> {
    d.commands.iter().map(|c| format!("{}.{}", c.step, c.kind)).collect()
}

#[test]
fn a_group_starts_every_branch_at_once_and_joins_before_the_next_step() {
    let mut s = Saga::started(par());
    let d = s.feed("a ok");
    // Both branches' first commands go out in one decision: in flight together.
    assert_eq!(kinds(&d), ["h1.do", "s.do"]);
    assert_eq!(s.state.working(), [(1, Kind::Do), (3, Kind::Do)]);
    assert_eq!(s.state.in_flight().len(), 2, "a takeover re-sends both");
    // A branch goes on by itself; the step after the group waits for both.
    assert_eq!(kinds(&s.feed("h1 ok")), ["h2.do"]);
    assert_eq!(kinds(&s.feed("h2 ok")), Vec::<String>::new());
    let d = s.feed("s ok");
    assert_eq!(kinds(&d), ["p.do"]);
    assert_eq!(d.commands[0].payload, json!({"held": "h2-out", "screened": "s-out"}));
    s.feed("p ok");
    assert_eq!(s.state.status, SagaStatus::Completed);
}

#[test]
fn the_next_deadline_is_the_soonest_of_the_branches() {
    let mut s = Saga::given(par(), "a ok");
    // h1 times out after 1s, s after 2s: only h1 is due at the first tick.
    let d = s.tick();
    assert_eq!(names(&d), ["attempt_failed"]);
    let Wait::Backoff { retry_at } = s.state.steps[1].do_progress.wait else {
        panic!("h1 backs off")
    };
    assert_eq!(d.next_deadline, Some(retry_at), "h1's backoff, sooner than s's timeout");
    // Both due at once are handled in one decision.
    s.now = s.now.plus_ms(5_000);
    let d = s.when(Input::Timeout).unwrap();
    assert_eq!(kinds(&d), ["h1.do"], "h1's retry goes out; s's timeout is recorded");
    assert_eq!(
        s.state.steps[3].do_progress.wait,
        Wait::Backoff { retry_at: s.now.plus_ms(backoff_of(&s, 3)) }
    );
}

fn backoff_of(s: &Saga, index: usize) -> u64 {
    match s.state.steps[index].do_progress.wait {
        Wait::Backoff { retry_at } => retry_at.0 - s.now.0,
        other => panic!("no backoff: {other:?}"),
    }
}

#[test]
fn a_failed_branch_waits_for_the_actions_in_flight_then_undoes_newest_outcome_first() {
    // Outcomes recorded in the order s, h1; then h2 fails.
    let mut s = Saga::given(par(), "a ok, s ok, h1 ok");
    let d = s.feed("h2 failed");
    assert_eq!(names(&d), ["step_failed", "compensation_started", "command_sent"]);
    // By outcome, h1 is newer than s although s comes later in the file.
    assert_eq!(kinds(&d), ["h1.undo"]);
    assert_eq!(kinds(&s.feed("h1.undo ok")), ["s.undo"]);
    assert_eq!(kinds(&s.feed("s.undo ok")), ["a.undo"]);
    s.feed("a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn while_turning_back_an_action_in_flight_is_awaited_and_never_sent_again() {
    let mut s = Saga::given(par(), "a ok, h1 ok");
    // h2 and s are in flight; s fails.
    let d = s.feed("s failed");
    assert_eq!(names(&d), ["step_failed", "compensation_started"]);
    assert!(d.commands.is_empty(), "nothing is undone while h2 may still act");
    assert!(s.state.draining());
    assert!(matches!(
        s.operator(OperatorAction::RetryNow, "push").unwrap_err(),
        TransitionError::NotNow { .. }
    ));
    // h2 answers `retry`: not sent again, its outcome is unknown; undo starts.
    let d = s.feed("h2 retry");
    assert_eq!(names(&d), ["attempt_failed", "step_outcome_unknown", "command_sent"]);
    assert_eq!(kinds(&d), ["h2.undo"]);
    s.feed("h2.undo ok, h1.undo ok, a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
}

#[test]
fn an_action_in_flight_that_times_out_while_turning_back_is_undone() {
    let mut s = Saga::given(par(), "a ok");
    s.feed("h1 failed");
    let d = s.tick();
    assert_eq!(names(&d), ["attempt_failed", "step_outcome_unknown", "command_sent"]);
    assert_eq!(kinds(&d), ["s.undo"]);
}

#[test]
fn when_every_action_in_flight_fails_nothing_is_undone_after_all() {
    // A group first: nothing before it to undo.
    let def = def(
        "p.yaml",
        &include_str!("../../tests/fixtures/parallel.yaml")
            .replace("input: { x: \"{{input.x}}\", after: \"{{steps.a.output.id}}\" }", "")
            .replacen("  - name: a\n    participant: p\n    action: a_do\n    compensation: a_undo\n    timeout: 1s\n    retry: { attempts: 2, initial_backoff: 100ms, max_backoff: 1s }\n", "", 1),
    );
    let mut s = Saga::started(def);
    s.feed("h1 failed");
    assert_eq!(s.state.status, SagaStatus::Compensating);
    let d = s.feed("s failed");
    assert_eq!(names(&d), ["step_failed", "saga_failed"]);
    assert_eq!(s.state.outcome().status, "failed");
}

#[test]
fn a_branch_waiting_to_retry_stops_as_unknown_when_another_fails() {
    let mut s = Saga::given(par(), "a ok, h1 retry");
    let d = s.feed("s failed");
    // h1 may have acted with its first attempt: it is undone, never retried.
    assert_eq!(
        names(&d),
        ["step_failed", "step_outcome_unknown", "compensation_started", "command_sent"]
    );
    assert_eq!(kinds(&d), ["h1.undo"]);
}

#[test]
fn abort_in_a_group_waits_for_the_branches_in_flight() {
    let mut s = Saga::given(par(), "a ok, s ok");
    let d = s.operator(OperatorAction::Abort, "customer cancelled").unwrap();
    assert_eq!(names(&d), ["compensation_started"]);
    assert!(d.commands.is_empty());
    // h1's answer arrives: it took effect, so it is undone first (newest).
    assert_eq!(kinds(&s.feed("h1 ok")), ["h1.undo"]);
    s.feed("h1.undo ok, s.undo ok, a.undo ok");
    assert_eq!(s.state.status, SagaStatus::Compensated);
    assert!(matches!(s.state.cause, Some(CompensationCause::Aborted { .. })));
}

#[test]
fn the_deadline_stops_a_group_like_an_abort() {
    let mut s = Saga::given(par(), "a ok");
    s.now = s.state.deadline_at.unwrap();
    let d = s.when(Input::Timeout).unwrap();
    assert_eq!(names(&d), ["compensation_started"]);
    let d = s.feed("h1 failed");
    assert!(d.commands.is_empty(), "s is still in flight");
    assert_eq!(kinds(&s.feed("s ok")), ["s.undo"]);
}

#[test]
fn skip_and_retry_now_act_on_the_first_branch_that_can_take_them() {
    let mut s = Saga::given(par(), "a ok, s retry");
    // h1 awaits its answer; s waits to retry: skip takes s.
    let d = s.operator(OperatorAction::Skip, "screened by hand").unwrap();
    assert_eq!(names(&d), ["step_skipped"]);
    assert_eq!(s.state.steps[3].forward, Forward::Skipped);
    let d = s.operator(OperatorAction::RetryNow, "push").unwrap();
    assert_eq!(kinds(&d), ["h1.do"]);
    assert_eq!(d.commands[0].attempt, 2);
}

#[test]
fn a_group_whose_condition_is_false_skips_every_step_in_it() {
    let def = def(
        "p.yaml",
        &include_str!("../../tests/fixtures/parallel.yaml")
            .replace("  - name: prep\n", "  - name: prep\n    when: \"input.x > 10\"\n")
            .replace(
                "held: \"{{steps.h2.output.id}}\", screened: \"{{steps.s.output.id}}\"",
                "x: 1",
            ),
    );
    let mut s = Saga::given(def.clone(), "");
    let d = s.feed("a ok");
    assert_eq!(
        names(&d),
        [
            "step_succeeded",
            "step_skipped_by_condition",
            "step_skipped_by_condition",
            "step_skipped_by_condition",
            "command_sent"
        ]
    );
    assert_eq!(kinds(&d), ["p.do"]);
    // x = 11: the group runs.
    let mut s = Saga { state: SagaState::new(def), events: vec![], now: T0 };
    s.when(Input::Start { saga_id: "s1".into(), input: json!({"x": 11}) }).unwrap();
    assert_eq!(kinds(&s.feed("a ok")), ["h1.do", "s.do"]);
}

#[test]
fn golden_history_of_a_parallel_group_turning_back() {
    let s = Saga::given(par(), "a ok, s ok, h1 ok, h2 failed, h1.undo ok, s.undo ok, a.undo ok");
    let stored = as_stored(&s.events);
    insta::assert_json_snapshot!("parallel_history", stored);
}

#[test]
fn a_version_2_history_with_a_parallel_group_still_replays() {
    let stored = include_str!("testdata/history_v2_parallel.jsonl");
    let events = decoded(stored);
    let state = replay(par(), &events);
    assert_eq!(state.status, SagaStatus::Compensated);
    assert_eq!(state.seq, events.len() as u64);
    assert_eq!(state.steps[1].backward, Backward::Done);
    assert_eq!(state.steps[3].backward, Backward::Done);
}

#[test]
fn a_waiting_step_with_a_compensation_is_undone_with_the_event_it_took() {
    let def = def(
        "w.yaml",
        &include_str!("../../tests/fixtures/wait.yaml")
            .replace(
                "  - name: w\n    wait_for:",
                "  - name: w\n    participant: notify\n    compensation: withdraw\n    wait_for:",
            )
            .replace("    action: r_do\n", "    action: r_do\n    compensation: r_undo\n"),
    );
    let mut s = Saga::given(def, "a ok");
    s.when(signal("e1", "a-out", json!({"ok": true}))).unwrap();
    let d = s.feed("r failed");
    // Newest first: the waiting step's compensation, carrying the event's body.
    assert_eq!(kinds(&d), ["w.undo"]);
    assert_eq!(
        (d.commands[0].participant.as_str(), d.commands[0].action.as_str()),
        ("notify", "withdraw")
    );
    assert_eq!(d.commands[0].payload, json!({"ok": true}));
    assert_eq!(s.state.in_flight(), d.commands, "a takeover re-sends it as sent");
    assert_eq!(kinds(&s.feed("w.undo ok")), ["a.undo"]);
}

#[test]
fn a_condition_in_a_branch_never_sees_the_branch_beside_it() {
    // h2 runs only when `s` is among the steps: written so that validation
    // cannot tell it names the branch beside it. Whether `s` has answered
    // when h2 is reached is a race, so a condition never sees it.
    let def = def(
        "p.yaml",
        &include_str!("../../tests/fixtures/parallel.yaml")
            .replace(
                "            input: { after: \"{{steps.h1.output.id}}\" }\n",
                "            input: { after: \"{{steps.h1.output.id}}\" }\n            when: \"'s' in steps || !('h1' in steps)\"\n",
            )
            .replace("held: \"{{steps.h2.output.id}}\", ", ""),
    );
    let mut s = Saga::given(def, "a ok, s ok");
    let d = s.feed("h1 ok");
    assert_eq!(names(&d), ["step_succeeded", "step_skipped_by_condition", "command_sent"]);
    assert_eq!(kinds(&d), ["p.do"], "h2 saw h1 (its own branch), not s");
}

#[test]
fn retry_now_in_a_group_skips_a_branch_whose_budget_is_spent() {
    // h1 on its last attempt in flight; s waiting to retry: s is retried.
    let mut s = Saga::given(par(), "a ok, h1 retry, tick, s retry");
    assert_eq!(s.state.steps[1].do_progress.attempts, 2, "h1's last attempt is out");
    let d = s.operator(OperatorAction::RetryNow, "push").unwrap();
    assert_eq!(kinds(&d), ["s.do"]);
    assert_eq!(d.commands[0].attempt, 2);
}
