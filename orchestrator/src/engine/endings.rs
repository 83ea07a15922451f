//! Callers waiting for a saga to end (`?wait=` on the API, `wait_ms` in a
//! NATS start request).
//!
//! The driver tells [`Endings`] of every end it writes, with the outcome; a
//! waiter registered for that saga wakes at once holding it, so a caller that
//! wants only the outcome reads nothing more from the store. A saga's end may
//! be written by another instance (the owner of its partition), so a waiter
//! also looks at the store every [`LOOK_EVERY`]: a notification is the fast
//! path, never the only one. With nobody waiting, an end costs one atomic
//! load; the outcome is computed only for a saga someone waits on.

use sagas::protocol::SagaOutcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a waiter looks at the store between notifications, for a saga
/// another instance drives.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The same for a saga this instance drives: its end wakes the waiter, so
/// the look is only a safety net (the partition may move away meanwhile).
pub const LOOK_OWNED: Duration = Duration::from_secs(5);
/// Most callers waiting at once on one instance; a wait beyond it is
/// answered at once with where the saga stands.
pub const WAITERS_MAX: usize = 10_000;

/// The waiters of one orchestrator instance, by saga id.
#[derive(Debug, Clone, Default)]
pub struct Endings {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: Mutex<HashMap<String, Vec<Arc<Waiter>>>>,
    /// Live [`Watch`]es: lets [`Endings::ended`] skip the lock when zero.
    count: AtomicUsize,
}

impl Endings {
    /// Wait for `saga_id`'s end from now on; `None` when [`WAITERS_MAX`]
    /// callers already wait.
    #[must_use]
    pub fn watch(&self, saga_id: &str) -> Option<Watch> {
        if self.inner.count.fetch_add(1, Ordering::AcqRel) >= WAITERS_MAX {
            self.inner.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let waiter = Arc::new(Waiter::default());
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(saga_id.to_owned())
            .or_default()
            .push(waiter.clone());
        Some(Watch { inner: self.inner.clone(), saga_id: saga_id.to_owned(), waiter })
    }

    /// `saga_id` ended (or parked) with `outcome`: wake its waiters with it.
    pub fn ended(&self, saga_id: &str, outcome: impl FnOnce() -> SagaOutcome) {
        if self.inner.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let woken =
            self.inner.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(saga_id);
        let Some(woken) = woken else { return };
        let outcome = outcome();
        for waiter in woken {
            *waiter.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome.clone());
            // Stored as a permit when the waiter is between looks.
            waiter.notify.notify_one();
        }
    }

    /// Callers waiting now (tests, diagnostics).
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }
}

/// What a waiter is woken with.
#[derive(Debug, Default)]
struct Waiter {
    notify: Notify,
    outcome: Mutex<Option<SagaOutcome>>,
}

/// One caller's wait for one saga; leaves the registry when dropped.
#[derive(Debug)]
pub struct Watch {
    inner: Arc<Inner>,
    saga_id: String,
    waiter: Arc<Waiter>,
}

impl Watch {
    /// Until the saga's end is reported here (its outcome), or `at_most`
    /// passes (`None`).
    pub async fn ended_or(&self, at_most: Duration) -> Option<SagaOutcome> {
        let _ = tokio::time::timeout(at_most, self.waiter.notify.notified()).await;
        self.waiter.outcome.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiting = self.inner.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = waiting.get_mut(&self.saga_id) {
            list.retain(|w| !Arc::ptr_eq(w, &self.waiter));
            if list.is_empty() {
                waiting.remove(&self.saga_id);
            }
        }
        drop(waiting);
        self.inner.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_end_wakes_only_its_waiters_and_dropped_waits_leave() {
        let endings = Endings::default();
        let a = endings.watch("a").expect("room");
        let b = endings.watch("b").expect("room");
        let done =
            SagaOutcome { status: "completed".into(), ended: true, output: None, cause: None };
        endings.ended("a", || done.clone());
        let started = tokio::time::Instant::now();
        assert_eq!(a.ended_or(Duration::from_secs(10)).await, Some(done));
        assert!(started.elapsed() < Duration::from_secs(1), "woken at once");
        assert_eq!(b.ended_or(Duration::from_secs(10)).await, None);
        assert!(started.elapsed() >= Duration::from_secs(10), "b was not woken by a's end");
        drop((a, b));
        assert_eq!(endings.waiting(), 0);
        assert!(endings.inner.waiting.lock().expect("lock").is_empty());
    }

    #[test]
    fn waiters_are_bounded() {
        let endings = Endings::default();
        let held: Vec<Watch> = (0..WAITERS_MAX).filter_map(|_| endings.watch("x")).collect();
        assert_eq!(held.len(), WAITERS_MAX);
        assert!(endings.watch("y").is_none());
        drop(held);
        assert!(endings.watch("y").is_some());
    }
}
