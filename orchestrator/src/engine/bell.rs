//! The deadline bell: how an append tells the timer loop that a deadline
//! now comes before the loop's next look.
//!
//! The timer loop says when it will look next ([`DeadlineBell::sleeping_until`],
//! or [`DeadlineBell::looking`] while it reads the store); the driver rings
//! only for deadlines earlier than that, so most appends cost one atomic load.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::Notify;

/// Shared between the driver (rings) and the timer loop (listens).
#[derive(Debug, Clone)]
pub struct DeadlineBell {
    wake: Arc<Notify>,
    /// When the loop looks next, in Unix ms (`i64::MAX` while it is looking).
    next_ms: Arc<AtomicI64>,
}

impl Default for DeadlineBell {
    fn default() -> Self {
        Self { wake: Arc::new(Notify::new()), next_ms: Arc::new(AtomicI64::new(i64::MAX)) }
    }
}

impl DeadlineBell {
    /// A deadline at `at_ms` was written: wake the loop if it would look too late.
    pub fn deadline_set(&self, at_ms: i64) {
        if at_ms < self.next_ms.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// The loop is reading the store: every deadline set from now on wakes its next pass.
    pub fn looking(&self) {
        self.next_ms.store(i64::MAX, Ordering::Release);
    }

    /// The loop sleeps until `at_ms` unless rung.
    pub fn sleeping_until(&self, at_ms: i64) {
        self.next_ms.store(at_ms, Ordering::Release);
    }

    /// Wait for a ring.
    pub async fn rung(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn only_an_earlier_deadline_rings() {
        let bell = DeadlineBell::default();
        bell.sleeping_until(1_000);
        bell.deadline_set(2_000);
        let later = tokio::time::timeout(Duration::from_millis(10), bell.rung()).await;
        assert!(later.is_err(), "a later deadline waits for the loop's next look");
        bell.deadline_set(500);
        let earlier = tokio::time::timeout(Duration::from_millis(10), bell.rung()).await;
        assert!(earlier.is_ok(), "an earlier deadline wakes the loop");
    }
}
