//! Timers: step timeouts, retry backoff and saga deadlines.
//!
//! Deadlines live in the `sagas.next_deadline_ms` column, so they survive
//! restarts: this loop asks the store what is due, feeds each saga a
//! `Timeout`, and sleeps until the earliest deadline (or a wake-up from the
//! driver, or one second at most).

use crate::clock;
use crate::driver::{DriveError, Driver};
use sagas::machine::{Input, TransitionError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most due sagas taken per round.
pub const DUE_BATCH_MAX: u64 = 512;
/// Longest sleep between checks.
const IDLE_MAX: Duration = Duration::from_secs(1);

pub async fn run(driver: Driver, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let now = clock::to_db(clock::now());
        let due = match driver.store().due(now, DUE_BATCH_MAX).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due timers");
                Vec::new()
            }
        };
        for saga_id in &due {
            if shutdown.is_cancelled() {
                return;
            }
            match driver.handle(saga_id, &Input::Timeout).await {
                Ok(_) | Err(DriveError::Transition(TransitionError::NotDue { .. })) => {}
                Err(e) => tracing::warn!(%saga_id, error = %e, "timer not applied"),
            }
        }
        if due.len() as u64 == DUE_BATCH_MAX {
            continue;
        }
        let wait = match driver.store().earliest_deadline().await {
            Ok(Some(at)) => {
                Duration::from_millis(u64::try_from(at - clock::to_db(clock::now())).unwrap_or(0))
            }
            _ => IDLE_MAX,
        }
        .min(IDLE_MAX);
        tokio::select! {
            // Cancelled: nothing in flight here.
            () = shutdown.cancelled() => return,
            () = driver.timer_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
