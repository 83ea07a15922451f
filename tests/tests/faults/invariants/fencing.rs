//! Invariant 6: at most one writer per partition epoch. On every partition a
//! write under the epoch before the current one, or by an instance that does
//! not hold the lease, must be rejected; a probe tries both.

use super::retried;
use crate::common::cluster::db_ms;
use crate::tally::Tally;
use orchestrator::store::{Append, Fence, Projection, Store, StoreError};
use sagas::UnixMillis;
use sagas::machine::SagaEvent;
use skald_tests::{PARTITIONS, token};
use std::time::SystemTime;

/// Invariant 6: on every partition, a write under the epoch before the
/// current one, or by an instance that does not hold the lease, is rejected.
pub async fn probe_fencing(store: &Store, tally: &mut Tally) {
    let leases = match retried(|| store.leases()).await {
        Ok(l) => l,
        Err(e) => return tally.violation(format!("6: cannot read the leases: {e}")),
    };
    if leases.len() != PARTITIONS as usize {
        tally.violation(format!("6: {} lease rows for {PARTITIONS} partitions", leases.len()));
    }
    let now_ms = db_ms(SystemTime::now());
    let now = UnixMillis(now_ms.unsigned_abs());
    for lease in leases {
        let probes = [
            (lease.owner.clone(), lease.epoch - 1, "the previous epoch"),
            (format!("{}-impostor", lease.owner), lease.epoch, "another instance"),
        ];
        for (owner, epoch, what) in probes {
            let saga_id = format!("fence-probe-{}", token());
            let events = [SagaEvent::SagaCompleted { at: now, output: None, output_error: None }];
            let projection = Projection {
                saga_type: "fence_probe".into(),
                status: "completed".into(),
                partition: lease.partition,
                idempotency_key: saga_id.clone(),
                ..Projection::default()
            };
            let fence = Fence { partition: lease.partition, owner, epoch };
            let written = store
                .append(Append {
                    saga_id: &saga_id,
                    expected_seq: 0,
                    events: &events,
                    projection: &projection,
                    outbox: &[],
                    now_ms,
                    repair: None,
                    fence: Some(&fence),
                })
                .await;
            match written {
                Err(StoreError::Fenced { .. }) => {}
                Ok(()) => tally.violation(format!(
                    "6: a write under {what} (epoch {epoch}) on partition {} was accepted",
                    lease.partition
                )),
                Err(e) => tally.violation(format!("6: fencing probe failed: {e}")),
            }
        }
    }
}
