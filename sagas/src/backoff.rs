//! Deterministic exponential backoff with jitter.
//!
//! The delay before attempt `n + 1` doubles from the policy's initial backoff up to
//! its cap, then "equal jitter" keeps between half and all of it. The jitter is not
//! drawn from a random generator: it is a hash of the command id and the attempt,
//! so the same history always yields the same schedule (replay stays exact, tests
//! are reproducible) while different sagas still spread their retries apart.

use crate::definition::RetryPolicy;

/// The delay in milliseconds to wait after `failed_attempt` (1-based) before the next one.
#[must_use]
pub fn delay_ms(policy: &RetryPolicy, command_id: &str, failed_attempt: u32) -> u64 {
    let initial = policy.initial_backoff.as_millis();
    let cap = policy.max_backoff.as_millis().max(initial);
    let doublings = failed_attempt.saturating_sub(1).min(63);
    let base = initial.saturating_mul(1u64 << doublings).min(cap);
    let half = base / 2;
    let spread = base - half;
    if spread == 0 {
        return base;
    }
    half + jitter_seed(command_id, failed_attempt) % (spread + 1)
}

/// A stable hash of the command id and the attempt.
fn jitter_seed(command_id: &str, attempt: u32) -> u64 {
    crate::hash::fnv1a(&[command_id.as_bytes(), &attempt.to_le_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration;

    fn policy(initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn grows_exponentially_within_half_and_full_then_caps() {
        let p = policy(100, 1_000);
        for (attempt, base) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (40, 1_000)] {
            let d = delay_ms(&p, "saga-1.charge.do", attempt);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d} not in [{}, {base}]",
                base / 2
            );
        }
    }

    #[test]
    fn same_inputs_same_delay_and_different_commands_spread() {
        let p = policy(1_000, 60_000);
        assert_eq!(delay_ms(&p, "a.x.do", 3), delay_ms(&p, "a.x.do", 3));
        let distinct: std::collections::BTreeSet<u64> =
            (0..50).map(|i| delay_ms(&p, &format!("saga-{i}.x.do"), 3)).collect();
        assert!(distinct.len() > 40, "jitter should spread delays, got {distinct:?}");
    }

    #[test]
    fn zero_backoff_is_zero() {
        assert_eq!(delay_ms(&policy(0, 0), "a", 5), 0);
    }
}
