//! Committed commands handed from the store's writer to the relay in memory.
//!
//! The outbox table stays the record: a command is published because its row
//! was committed, and its row is deleted only after JetStream acknowledged it.
//! The hand-off only spares the relay reading back what the writer has just
//! written. Whatever does not come through it — rows left by an earlier run or
//! by another instance, rows a takeover queues again, rows whose publish
//! failed, rows that did not fit — is found by the relay's scan of the table,
//! which [`Handoff::miss`] asks for.

use super::entities::outbox;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Most rows held for the relay; beyond it rows wait in the table for a scan.
pub const HANDOFF_ROWS_MAX: usize = 8_192;

#[derive(Debug)]
pub struct Handoff {
    rows: Mutex<VecDeque<outbox::Model>>,
    /// Some committed rows did not come through the hand-off: scan the table.
    missed: AtomicBool,
    wake: Notify,
}

impl Default for Handoff {
    fn default() -> Self {
        // A new process has not seen what an earlier one left in the table.
        Self { rows: Mutex::default(), missed: AtomicBool::new(true), wake: Notify::new() }
    }
}

impl Handoff {
    /// Hand over rows just committed (all or, when full, none of them).
    pub(super) fn push(&self, rows: Vec<outbox::Model>) {
        if rows.is_empty() {
            return;
        }
        {
            let mut held = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.len() + rows.len() > HANDOFF_ROWS_MAX {
                self.missed.store(true, Ordering::Release);
            } else {
                held.extend(rows);
            }
        }
        self.wake.notify_one();
    }

    /// Ask the relay to scan the table: rows were committed without being handed over.
    pub fn miss(&self) {
        self.missed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether a scan was asked for since the last call (and clear the request).
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }

    /// The oldest `max` rows handed over, removed from the hand-off.
    pub fn take(&self, max: usize) -> Vec<outbox::Model> {
        let mut held = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.len().min(max);
        held.drain(..n).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Wait until rows are handed over or a scan is asked for (returns at
    /// once if that happened since the last wait).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> outbox::Model {
        outbox::Model {
            id,
            saga_id: "s".into(),
            subject: "p.cmd.x".into(),
            msg_id: format!("s.one.do/{id}"),
            body: "{}".into(),
            created_at_ms: 0,
            partition: 0,
        }
    }

    #[test]
    fn rows_come_out_in_order_and_overflow_asks_for_a_scan() {
        let h = Handoff::default();
        assert!(h.take_missed(), "a new process scans first");
        assert!(!h.take_missed());
        h.push((1..=3).map(row).collect());
        assert_eq!(h.take(2).iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(h.take(10).iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
        assert!(h.is_empty());
        h.push((0..HANDOFF_ROWS_MAX as i64).map(row).collect());
        assert!(!h.take_missed());
        h.push(vec![row(-1)]);
        assert!(h.take_missed(), "rows that did not fit must be scanned for");
        assert_eq!(h.take(usize::MAX).len(), HANDOFF_ROWS_MAX);
    }
}
