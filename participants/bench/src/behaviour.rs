//! What the bench participant answers, as plain data: which step fails, which
//! undo keeps asking for a retry, which step is never answered, how slowly.

use serde_json::{Value, json};
use skald_participant::{HandlerError, HandlerResult};
use std::time::Duration;

/// The fault injection chosen on the command line. Steps are numbered 1..=3
/// (actions `step1`..`step3`, compensations `undo1`..`undo3`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Action `stepK` answers `failed` (code `bench_refused`).
    pub fail_step: Option<u8>,
    /// Compensation `undoK` answers `retry` forever (code `bench_unavailable`).
    pub fail_undo: Option<u8>,
    /// Action `stepK` is never answered nor acknowledged.
    pub never_answer_step: Option<u8>,
    /// Every answer waits this long first.
    pub delay: Duration,
}

impl Behaviour {
    /// The answer to action `stepK`.
    ///
    /// # Errors
    /// The injected fault, if any.
    pub fn step(&self, k: u8, payload: &Value) -> HandlerResult {
        if self.never_answer_step == Some(k) {
            return Err(HandlerError::NoReply);
        }
        if self.fail_step == Some(k) {
            return Err(HandlerError::failed(
                "bench_refused",
                format!("step{k} refused on purpose (--fail-step {k})"),
            ));
        }
        Ok(json!({ "step": k, "saga": payload.get("saga").cloned().unwrap_or(Value::Null) }))
    }

    /// The answer to compensation `undoK`.
    ///
    /// # Errors
    /// The injected fault, if any.
    pub fn undo(&self, k: u8) -> HandlerResult {
        if self.fail_undo == Some(k) {
            return Err(HandlerError::retry(
                "bench_unavailable",
                format!("undo{k} unavailable on purpose (--fail-undo {k})"),
            ));
        }
        Ok(json!({ "undone": k }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_every_step_and_undo_succeeds() {
        let b = Behaviour::default();
        for k in 1..=3 {
            assert_eq!(b.step(k, &json!({"saga": "s"})), Ok(json!({"step": k, "saga": "s"})));
            assert_eq!(b.undo(k), Ok(json!({"undone": k})));
        }
    }

    #[test]
    fn faults_hit_only_the_chosen_step() {
        let b = Behaviour {
            fail_step: Some(2),
            fail_undo: Some(1),
            never_answer_step: Some(3),
            ..Behaviour::default()
        };
        assert!(b.step(1, &json!({})).is_ok());
        assert!(
            matches!(b.step(2, &json!({})), Err(HandlerError::Failed { code, .. }) if code == "bench_refused")
        );
        assert_eq!(b.step(3, &json!({})), Err(HandlerError::NoReply));
        assert!(
            matches!(b.undo(1), Err(HandlerError::Retry { code, .. }) if code == "bench_unavailable")
        );
        assert!(b.undo(2).is_ok());
    }
}
