//! Outcome mapping: what the provider said ([`ProviderOutcome`]), and what
//! the participant answers the orchestrator for it ([`Verdict`]). Pure: no
//! HTTP, no database, so every rule is a unit test.
//!
//! | the provider | charge, payout | refund |
//! |---|---|---|
//! | 2xx with `{id, status}` | `ok` | `ok` |
//! | 402, 400, 422, other 4xx with an error body (a decline, a request it will never take) | `failed` with its code | `failed` |
//! | 409 (the key was used with another body) | `failed` | `failed` |
//! | 404 (no such object) | `retry` (the endpoint is wrong: check `PSP_URL`) | `ok {"nothing_to_refund": true}` |
//! | 5xx, 408, 425, 429, 401, 403, timeout, connection error | `retry` | `retry` |
//! | a body that cannot be parsed, too large, a redirect | `retry` | `retry` |
//!
//! A `retry` is sent again by the orchestrator with the same command id, so the
//! next call carries the same `Idempotency-Key` and the provider answers it
//! from its store if the first call did take effect.
//!
//! **Refund of an unknown charge.** The refund handler only runs when the
//! charge answered `ok`, and it names the charge by the id the provider gave.
//! If the provider says no such charge exists, no money was taken from the
//! customer, so there is nothing to give back and the compensation is done:
//! `ok {"nothing_to_refund": true}`. Answering `retry` would park the saga on a
//! fact that will not change; answering `failed` would ask an operator to
//! undo what never happened. It is logged as a warning, because a provider
//! that forgets a charge it confirmed is worth a look.
//!
//! A response body is never logged or echoed (it may hold card data): only
//! its status and size.

use crate::api::{ErrorBody, Receipt};
use serde_json::{Value, json};
use skald_participant::HandlerError;
use tracing::warn;

/// Statuses of a 2xx answer that still mean "not done".
const FAILED_STATUSES: [&str; 3] = ["failed", "canceled", "declined"];

/// What the provider said to one call, transport failures included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    /// 2xx: the charge, refund or payout exists.
    Done(Receipt),
    /// A definite refusal (a decline, an invalid request): the same call
    /// gets the same answer.
    Refused { http_status: u16, code: String, message: String },
    /// 404: the object named does not exist (a refund's charge).
    NotFound { code: String, message: String },
    /// 409: the idempotency key was used with another body (or the request
    /// names something ambiguously).
    Conflict { code: String, message: String },
    /// No definite answer: try again with the same key.
    Transient { code: String, message: String },
    /// No connection was made: the request never reached the provider, so
    /// it cannot have acted. Try again; the attempt is not a spent one.
    Unreachable { code: String, message: String },
}

/// Why a call got no HTTP answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportFailure {
    /// The whole call took longer than the client's timeout. The provider may
    /// have acted: only a repeat with the same key can tell.
    Timeout,
    /// No connection was made (refused, unreachable, connect timeout).
    Connect { message: String },
    /// The response body is larger than the client reads.
    TooLarge { http_status: u16, bytes: usize },
    /// Anything else (the connection broke mid-answer).
    Other { message: String },
}

/// The outcome of a call that got an HTTP status and a (bounded) body.
#[must_use]
pub fn classify(http_status: u16, body: &[u8]) -> ProviderOutcome {
    match http_status {
        200..=299 => match serde_json::from_slice::<Receipt>(body) {
            Ok(receipt) if FAILED_STATUSES.contains(&receipt.status.as_str()) => {
                ProviderOutcome::Refused {
                    http_status,
                    code: format!("provider_{}", receipt.status),
                    message: format!(
                        "the provider answered {} with status `{}`",
                        receipt.id, receipt.status
                    ),
                }
            }
            Ok(receipt) if !receipt.id.is_empty() => ProviderOutcome::Done(receipt),
            _ => unparsable(http_status, body.len()),
        },
        500..=599 => {
            // A 5xx body is often an HTML page from a proxy: its code is a
            // bonus, the status alone decides.
            let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => ("provider_unavailable".to_owned(), String::new()),
            };
            ProviderOutcome::Transient {
                code,
                message: format!("the provider answered {http_status}: {message}"),
            }
        }
        401 | 403 | 408 | 425 | 429 => {
            let detail = serde_json::from_slice::<ErrorBody>(body)
                .map(|e| format!(" ({}: {})", e.error.code, e.error.message))
                .unwrap_or_default();
            let code = match http_status {
                401 | 403 => "provider_auth",
                429 => "provider_rate_limited",
                _ => "provider_busy",
            };
            ProviderOutcome::Transient {
                code: code.to_owned(),
                message: format!("the provider answered {http_status}{detail}"),
            }
        }
        400..=499 => match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => match http_status {
                404 => ProviderOutcome::NotFound { code: error.code, message: error.message },
                409 => ProviderOutcome::Conflict { code: error.code, message: error.message },
                _ => ProviderOutcome::Refused {
                    http_status,
                    code: error.code,
                    message: error.message,
                },
            },
            // A 404/409 without a parsable body is still what its status says
            // (a 404 from a proxy means the endpoint is wrong, which the
            // mapping per action handles); other statuses need the code.
            Err(_) if http_status == 404 => ProviderOutcome::NotFound {
                code: "not_found".to_owned(),
                message: format!("the provider answered 404 with {} unreadable bytes", body.len()),
            },
            Err(_) if http_status == 409 => ProviderOutcome::Conflict {
                code: "idempotency_conflict".to_owned(),
                message: format!("the provider answered 409 with {} unreadable bytes", body.len()),
            },
            Err(_) => unparsable(http_status, body.len()),
        },
        _ => ProviderOutcome::Transient {
            code: "provider_bad_response".to_owned(),
            message: format!("the provider answered with unexpected status {http_status}"),
        },
    }
}

fn unparsable(http_status: u16, bytes: usize) -> ProviderOutcome {
    // The body may hold card data: its size only.
    warn!(http_status, body_bytes = bytes, "the provider's answer cannot be parsed; will retry");
    ProviderOutcome::Transient {
        code: "provider_bad_response".to_owned(),
        message: format!(
            "the provider answered {http_status} with a body of {bytes} bytes that cannot be parsed"
        ),
    }
}

/// The outcome of a call that got no HTTP answer.
#[must_use]
pub fn transport(failure: TransportFailure) -> ProviderOutcome {
    let (code, message) = match failure {
        TransportFailure::Timeout => (
            "provider_timeout",
            "the provider did not answer in time; it may have acted, the retry uses the same \
             idempotency key"
                .to_owned(),
        ),
        TransportFailure::Connect { message } => {
            return ProviderOutcome::Unreachable {
                code: "provider_unreachable".to_owned(),
                message: format!("cannot connect to the provider (nothing was sent): {message}"),
            };
        }
        TransportFailure::TooLarge { http_status, bytes } => {
            warn!(
                http_status,
                body_bytes = bytes,
                "the provider's answer is too large; will retry"
            );
            (
                "provider_bad_response",
                format!("the provider answered {http_status} with a body over {bytes} bytes"),
            )
        }
        TransportFailure::Other { message } => {
            ("provider_error", format!("the call to the provider broke: {message}"))
        }
    };
    ProviderOutcome::Transient { code: code.to_owned(), message }
}

/// The action a call was made for; the mapping differs only for 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Charge,
    Refund,
    Payout,
}

/// What the participant answers for a provider outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The effect exists at the provider: `ok`.
    Done(Receipt),
    /// A refund of a charge the provider does not have: `ok`, nothing to do.
    NothingToRefund { code: String, message: String },
    /// A business refusal: `failed`, never retried.
    Failed { code: String, message: String },
    /// No definite answer: `retry`, with the same idempotency key.
    Retry { code: String, message: String },
    /// The provider could not be reached, so nothing happened there: `retry`,
    /// marked unsent (outside the step's retry budget).
    Unsent { code: String, message: String },
}

/// The answer to give for `outcome` of a call made for `action`.
#[must_use]
pub fn verdict(action: Action, outcome: ProviderOutcome) -> Verdict {
    match outcome {
        ProviderOutcome::Done(receipt) => Verdict::Done(receipt),
        ProviderOutcome::Refused { code, message, .. } => Verdict::Failed { code, message },
        ProviderOutcome::Conflict { code, message } => Verdict::Failed {
            code,
            message: format!(
                "the provider refused the request as conflicting (same idempotency key, \
                 different request?): {message}"
            ),
        },
        ProviderOutcome::NotFound { code, message } => match action {
            Action::Refund => Verdict::NothingToRefund { code, message },
            Action::Charge | Action::Payout => Verdict::Retry {
                code: "provider_not_found".to_owned(),
                message: format!(
                    "the provider answered 404 ({code}: {message}): is PSP_URL the provider's API?"
                ),
            },
        },
        ProviderOutcome::Transient { code, message } => Verdict::Retry { code, message },
        ProviderOutcome::Unreachable { code, message } => Verdict::Unsent { code, message },
    }
}

impl Verdict {
    /// The handler's answer, with `output` made from the receipt when done.
    ///
    /// # Errors
    /// [`HandlerError::Failed`], [`HandlerError::Retry`] or
    /// [`HandlerError::Unsent`] for those verdicts.
    pub fn into_answer(
        self,
        output: impl FnOnce(&Receipt) -> Value,
    ) -> Result<Value, HandlerError> {
        match self {
            Self::Done(receipt) => Ok(output(&receipt)),
            Self::NothingToRefund { .. } => Ok(json!({ "nothing_to_refund": true })),
            Self::Failed { code, message } => Err(HandlerError::Failed { code, message }),
            Self::Retry { code, message } => Err(HandlerError::Retry { code, message }),
            Self::Unsent { code, message } => Err(HandlerError::Unsent { code, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody::new(code, "because")).unwrap_or_default()
    }

    #[test]
    fn success_needs_an_id() {
        let ok = classify(200, br#"{"id":"ch_1","status":"succeeded","amount":5}"#);
        assert_eq!(
            ok,
            ProviderOutcome::Done(Receipt { id: "ch_1".into(), status: "succeeded".into() })
        );
        assert!(matches!(
            classify(201, br#"{"id":"","status":"x"}"#),
            ProviderOutcome::Transient { .. }
        ));
        assert!(matches!(classify(200, b"<html>"), ProviderOutcome::Transient { .. }));
    }

    #[test]
    fn a_2xx_that_says_failed_is_a_refusal() {
        let out = classify(200, br#"{"id":"ch_1","status":"failed"}"#);
        assert!(matches!(out, ProviderOutcome::Refused { code, .. } if code == "provider_failed"));
    }

    #[test]
    fn declines_keep_the_providers_code() {
        let out = verdict(Action::Charge, classify(402, &error("card_declined")));
        assert_eq!(
            out,
            Verdict::Failed { code: "card_declined".into(), message: "because".into() }
        );
        let out = verdict(Action::Charge, classify(400, &error("invalid_request")));
        assert!(matches!(out, Verdict::Failed { code, .. } if code == "invalid_request"));
    }

    #[test]
    fn server_errors_and_throttling_are_retried() {
        for status in [500, 502, 503, 504, 429, 408, 401] {
            assert!(
                matches!(verdict(Action::Charge, classify(status, b"oops")), Verdict::Retry { .. }),
                "{status}"
            );
        }
        let out = verdict(Action::Charge, classify(503, &error("maintenance")));
        assert!(matches!(out, Verdict::Retry { code, .. } if code == "maintenance"));
    }

    #[test]
    fn an_unparsable_refusal_is_retried_and_its_body_not_repeated() {
        let out = verdict(Action::Charge, classify(402, b"4111111111111111"));
        let Verdict::Retry { code, message } = out else { panic!("{out:?}") };
        assert_eq!(code, "provider_bad_response");
        assert!(message.contains("16 bytes") && !message.contains("4111"), "{message}");
    }

    #[test]
    fn conflicts_fail() {
        let out = verdict(Action::Charge, classify(409, &error("idempotency_conflict")));
        assert!(matches!(out, Verdict::Failed { code, .. } if code == "idempotency_conflict"));
        let out = verdict(Action::Refund, classify(409, b""));
        assert!(matches!(out, Verdict::Failed { code, .. } if code == "idempotency_conflict"));
    }

    #[test]
    fn not_found_is_nothing_to_refund_only_for_refunds() {
        let refund = verdict(Action::Refund, classify(404, &error("unknown_charge")));
        assert!(matches!(refund, Verdict::NothingToRefund { .. }));
        assert_eq!(refund.into_answer(|_| json!({})), Ok(json!({ "nothing_to_refund": true })));
        let charge = verdict(Action::Charge, classify(404, b"Not Found"));
        assert!(matches!(charge, Verdict::Retry { code, .. } if code == "provider_not_found"));
        assert!(matches!(verdict(Action::Payout, classify(404, b"")), Verdict::Retry { .. }));
    }

    #[test]
    fn transport_failures_are_retried() {
        let refused = transport(TransportFailure::Connect { message: "refused".into() });
        assert!(matches!(verdict(Action::Charge, refused), Verdict::Unsent { .. }));
        for failure in [
            TransportFailure::Timeout,
            TransportFailure::TooLarge { http_status: 200, bytes: 65_536 },
            TransportFailure::Other { message: "reset".into() },
        ] {
            assert!(matches!(verdict(Action::Refund, transport(failure)), Verdict::Retry { .. }));
        }
    }

    #[test]
    fn redirects_and_informational_answers_are_retried() {
        assert!(matches!(classify(302, b""), ProviderOutcome::Transient { .. }));
        assert!(matches!(classify(101, b""), ProviderOutcome::Transient { .. }));
    }
}
