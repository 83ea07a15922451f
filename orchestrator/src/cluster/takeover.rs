//! Taking a partition over: re-send the commands its open sagas wait on.
//!
//! Timers need nothing more (deadlines come from the store) and replies come
//! from the partition's durable consumer. Each command is queued again in the
//! outbox with its attempt and message id: JetStream drops it if the original
//! is still in its dedupe window; otherwise the participant's inbox answers it
//! from its stored reply.

use crate::engine::driver::Driver;
use tokio_util::sync::CancellationToken;

/// Most open sagas a takeover re-sends commands for per partition.
const TAKEOVER_SAGAS_MAX: u64 = 100_000;
/// Commands re-sent after a takeover are queued this many at a time.
const RESEND_BATCH_MAX: usize = 256;

/// After taking a partition: re-send the commands its open sagas wait on.
/// Their timers and replies need nothing more: timers come from the store,
/// replies from the partition's durable consumer.
pub async fn take_over(driver: Driver, partition: i32, epoch: i64, stop: CancellationToken) {
    let started = std::time::Instant::now();
    // Commands the previous owner committed and never published: scan for them now.
    driver.store().handoff().miss();
    let open = match driver.store().open_in_partition(partition, TAKEOVER_SAGAS_MAX).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot list the partition's open sagas");
            return;
        }
    };
    let mut resent = 0;
    let mut queued = Vec::new();
    for (i, saga_id) in open.iter().enumerate() {
        if stop.is_cancelled() {
            return;
        }
        match driver.in_flight_commands(saga_id).await {
            Ok(commands) => queued.extend(commands),
            Err(e) => tracing::warn!(%saga_id, error = %e, "cannot re-send in-flight commands"),
        }
        // One insert (one commit) per batch of sagas, not one per saga.
        if queued.len() >= RESEND_BATCH_MAX || (i + 1 == open.len() && !queued.is_empty()) {
            match driver.store().enqueue(&queued, driver.store().clock().now_db()).await {
                Ok(()) => resent += queued.len(),
                Err(e) => {
                    tracing::warn!(partition, error = %e, commands = queued.len(), "cannot re-send in-flight commands; their step timeouts will retry them")
                }
            }
            queued.clear();
        }
    }
    tracing::info!(
        partition,
        epoch,
        open_sagas = open.len(),
        commands_resent = resent,
        took_ms = started.elapsed().as_millis() as u64,
        "partition taken over"
    );
}
