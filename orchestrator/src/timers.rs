//! Timers: step timeouts, retry backoff and saga deadlines.
//!
//! Deadlines live in the `sagas.next_deadline_ms` column, so they survive
//! restarts: this loop asks the store what is due, feeds each saga a
//! `Timeout`, and sleeps until the earliest deadline (or a wake-up from the
//! driver, or one second at most). A saga whose timeout cannot be applied
//! (a store error, a history that cannot be read) is retried with backoff,
//! so it neither spins the loop nor floods the log.

use crate::engine::driver::{DriveError, Driver};
use sagas::machine::{Input, TransitionError};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most due sagas taken per round.
pub const DUE_BATCH_MAX: u64 = 512;
/// Longest sleep between checks.
const IDLE_MAX: Duration = Duration::from_secs(1);
/// First and longest pause before a failing saga's timeout is tried again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Most failing sagas remembered (beyond it they are tried every round).
const FAILING_TRACKED_MAX: usize = 10_000;

pub async fn run(driver: Driver, shutdown: CancellationToken) {
    // Saga id → (not before, current pause).
    let mut failing: HashMap<String, (Instant, Duration)> = HashMap::new();
    let clock = driver.store().clock().clone();
    while !shutdown.is_cancelled() {
        // Looking now: any deadline set from here on wakes the next pass.
        driver.bell().looking();
        let now = clock.now_db();
        let owned = driver.ownership().filter();
        let due = match driver.store().due(now, DUE_BATCH_MAX, owned.as_deref()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due timers");
                Vec::new()
            }
        };
        let mut applied = 0;
        for saga_id in &due {
            if shutdown.is_cancelled() {
                return;
            }
            if failing.get(saga_id).is_some_and(|(until, _)| *until > Instant::now()) {
                continue;
            }
            match driver.handle(saga_id, &Input::Timeout).await {
                Ok(_) | Err(DriveError::Transition(TransitionError::NotDue { .. })) => {
                    applied += 1;
                    failing.remove(saga_id);
                }
                Err(e) => {
                    let pause =
                        failing.get(saga_id).map_or(RETRY_MIN, |(_, p)| (*p * 2).min(RETRY_MAX));
                    tracing::warn!(%saga_id, error = %e, retry_in_ms = pause.as_millis() as u64, "timer not applied");
                    if failing.len() < FAILING_TRACKED_MAX || failing.contains_key(saga_id) {
                        failing.insert(saga_id.clone(), (Instant::now() + pause, pause));
                    }
                }
            }
        }
        // A full batch that made progress: more may be due right now.
        if due.len() as u64 == DUE_BATCH_MAX && applied > 0 {
            continue;
        }
        let until_earliest = match driver.store().earliest_deadline(owned.as_deref()).await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - clock.now_db()).unwrap_or(0)),
            _ => IDLE_MAX,
        };
        // With failing sagas due, the earliest deadline is in the past: pause anyway.
        let floor = if failing.is_empty() { Duration::ZERO } else { RETRY_MIN };
        let wait = until_earliest.min(IDLE_MAX).max(floor);
        let next =
            clock.now_db().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        driver.bell().sleeping_until(next);
        tokio::select! {
            // Cancelled: nothing in flight here.
            () = shutdown.cancelled() => return,
            () = driver.bell().rung() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
