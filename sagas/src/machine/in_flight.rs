//! What a saga still waits on, and what a history says was sent.
//!
//! After a takeover or a restart the new owner re-sends every command the saga
//! waits on, with the same attempt and message id, so JetStream's dedupe or
//! the participant's stored reply answers it: [`SagaState::in_flight`] derives
//! those commands from the state alone. Metrics time an answer from the
//! attempt's `command_sent` event, which may be older than anything the state
//! keeps (an earlier attempt's late answer): [`command_sent`] finds it in the
//! history.

use super::command::OutgoingCommand;
use super::event::SagaEvent;
use super::state::{SagaState, Wait};
use crate::UnixMillis;
use crate::protocol::Kind;
use serde_json::Value;

impl SagaState {
    /// The step (index) and kind a command id of this saga names, if any.
    #[must_use]
    pub fn command_step(&self, command_id: &str) -> Option<(usize, Kind)> {
        let rest = command_id.strip_prefix(self.saga_id.as_str())?.strip_prefix('.')?;
        let (step, kind) = if let Some(step) = rest.strip_suffix(".do") {
            (step, Kind::Do)
        } else {
            (rest.strip_suffix(".undo")?, Kind::Undo)
        };
        Some((self.definition.step_index(step)?, kind))
    }

    /// The participant a command id of this saga was sent to: the only one
    /// whose reply to it is taken.
    #[must_use]
    pub fn addressee(&self, command_id: &str) -> Option<&str> {
        let (index, _) = self.command_step(command_id)?;
        Some(self.definition.steps.get(index)?.participant.as_str())
    }

    /// Every command attempt the saga waits on an answer to, exactly as it was
    /// sent (same command id, attempt, payload and deadline), in step order,
    /// `do` before `undo`. Empty once the saga has ended or is parked: then it
    /// waits for nothing but an operator.
    #[must_use]
    pub fn in_flight(&self) -> Vec<OutgoingCommand> {
        if self.status.is_end() {
            return Vec::new();
        }
        let mut commands = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            for kind in [Kind::Do, Kind::Undo] {
                // A waiting step's `do` waits for an event, not an answer: nothing to re-send.
                if kind == Kind::Do && self.is_waiting_step(index) {
                    continue;
                }
                if let Wait::Reply { attempt, timeout_at } = step.progress(kind).wait {
                    // `do` and `undo` both carry the step's input, as `send` does.
                    let payload = step.payload.clone().unwrap_or(Value::Null);
                    commands.push(OutgoingCommand::for_step(
                        self, index, kind, attempt, payload, timeout_at,
                    ));
                }
            }
        }
        commands
    }
}

/// One attempt of a command as its `command_sent` event recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentAttempt<'a> {
    pub command_id: &'a str,
    pub payload: &'a Value,
    /// When the orchestrator stops waiting for this attempt's answer.
    pub timeout_at: UnixMillis,
    /// When the attempt was handed to the outbox.
    pub sent_at: UnixMillis,
}

/// The `command_sent` event of attempt `attempt` of `kind` of step `step` in
/// `history` (the latest, should there be several), if it was ever sent.
#[must_use]
pub fn command_sent<'a>(
    history: &'a [SagaEvent],
    step: &str,
    kind: Kind,
    attempt: u32,
) -> Option<SentAttempt<'a>> {
    history.iter().rev().find_map(|event| match event {
        SagaEvent::CommandSent {
            step: s,
            kind: k,
            attempt: a,
            command_id,
            payload,
            timeout_at,
            at,
        } if s == step && *k == kind && *a == attempt => {
            Some(SentAttempt { command_id, payload, timeout_at: *timeout_at, sent_at: *at })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::replay;
    use crate::machine::tests::{Saga, T0, abc};
    use serde_json::json;

    /// What a new owner re-sends: it replays the stored history and asks the state.
    fn after_takeover(s: &Saga) -> Vec<OutgoingCommand> {
        replay(s.state.definition.clone(), &s.events).in_flight()
    }

    #[test]
    fn after_a_retry_the_replayed_saga_waits_on_the_attempt_last_sent() {
        // Given: a's first attempt was answered `retry`, and after the backoff
        // attempt 2 went out.
        let mut s = Saga::given(abc(), "a retry");
        let d = s.tick();
        // When: another orchestrator takes over and replays the history.
        let in_flight = after_takeover(&s);
        // Then: it re-sends attempt 2 exactly as it was sent, under its message id.
        assert_eq!(in_flight, d.commands);
        assert_eq!(in_flight[0].msg_id(), "s1.a.do/2");
        assert_eq!(in_flight[0].deadline, s.now.plus_ms(1_000));
        assert_eq!(s.state.in_flight(), in_flight, "the live state agrees");
    }

    #[test]
    fn during_compensation_the_undo_in_flight_is_re_sent_with_the_step_input() {
        // Given: c was refused, so the undo of b went out.
        let mut s = Saga::given(abc(), "a ok, b ok");
        let d = s.feed("c failed");
        // When: the history is replayed.
        let in_flight = after_takeover(&s);
        // Then: the undo of b is in flight, as sent.
        assert_eq!(in_flight, d.commands);
        let undo = &in_flight[0];
        assert_eq!((undo.step.as_str(), undo.kind, undo.attempt), ("b", Kind::Undo, 1));
        assert_eq!((undo.action.as_str(), undo.command_id.as_str()), ("b_undo", "s1.b.undo"));
        assert_eq!(undo.payload, json!({"id": "s1", "x": 7}), "an undo carries the step's input");

        // Given: that undo was answered `retry`, and its attempt 2 went out.
        s.feed("b.undo retry");
        let d = s.tick();
        // Then: attempt 2 of the undo is what a takeover re-sends.
        assert_eq!(after_takeover(&s), d.commands);
        assert_eq!(d.commands[0].msg_id(), "s1.b.undo/2");
    }

    #[test]
    fn nothing_is_in_flight_before_start_while_backing_off_parked_or_ended() {
        assert_eq!(SagaState::new(abc()).in_flight(), []);
        for script in ["a retry", "a ok, b failed, a.undo failed", "a ok, b ok, c ok"] {
            // Given: a saga waiting to retry, parked on a refused undo, or completed.
            let s = Saga::given(abc(), script);
            // Then: it waits on no answer, live or replayed.
            assert_eq!(s.state.in_flight(), [], "{script}");
            assert_eq!(after_takeover(&s), [], "{script}");
        }
    }

    #[test]
    fn a_stored_history_replayed_to_any_point_re_sends_the_attempts_it_recorded() {
        // Given: a history stored by an earlier build (a retry, then compensation).
        let events: Vec<SagaEvent> = include_str!("testdata/history_v1.jsonl")
            .lines()
            .map(|l| SagaEvent::decode(l).unwrap())
            .collect();
        let mut re_sent = 0;
        for end in 0..=events.len() {
            // When: a new owner replays it up to that point.
            let history = &events[..end];
            for c in replay(abc(), history).in_flight() {
                // Then: each command it re-sends is the attempt its history recorded.
                let sent = command_sent(history, &c.step, c.kind, c.attempt).unwrap();
                assert_eq!(c.command_id, sent.command_id);
                assert_eq!((&c.payload, c.deadline), (sent.payload, sent.timeout_at));
                re_sent += 1;
            }
        }
        // Each of the six `command_sent` leaves one command in flight until its answer.
        assert_eq!(re_sent, 6);
    }

    #[test]
    fn the_history_records_when_and_with_what_each_attempt_was_sent() {
        // Given: attempt 1 of a timed out, and attempt 2 went out after the backoff.
        let mut s = Saga::given(abc(), "tick");
        let d = s.tick();
        // Then: both attempts are found, each with its own send time and deadline.
        let first = command_sent(&s.events, "a", Kind::Do, 1).unwrap();
        assert_eq!((first.sent_at, first.timeout_at), (T0, T0.plus_ms(1_000)));
        assert_eq!(first.command_id, "s1.a.do");
        assert_eq!(first.payload, &json!({"id": "s1", "x": 7}));
        let second = command_sent(&s.events, "a", Kind::Do, 2).unwrap();
        assert_eq!((second.sent_at, second.timeout_at), (s.now, d.commands[0].deadline));
        // And: attempts, kinds and steps never sent are not.
        assert_eq!(command_sent(&s.events, "a", Kind::Do, 3), None);
        assert_eq!(command_sent(&s.events, "a", Kind::Undo, 1), None);
        assert_eq!(command_sent(&s.events, "b", Kind::Do, 1), None);
    }
}
