//! Time as an input: the engine is given a [`Clock`] and never reads the wall
//! clock itself, so tests can run it on paused tokio time.
//!
//! The pure machine gets `now` as an argument; the driver, timers, relay,
//! cluster and API ask the clock they were given. [`SystemClock`] is the wall
//! clock (the one place it is read); [`TokioClock`] follows tokio's clock, which
//! `tokio::time::pause` stops and `advance` moves; [`ManualClock`] moves only
//! when a test moves it.

use sagas::UnixMillis;
use std::sync::Arc;

/// Where the engine reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> UnixMillis;

    /// Now, as the signed milliseconds the database stores.
    fn now_db(&self) -> i64 {
        to_db(self.now())
    }
}

/// A clock shared by the engine's tasks.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        UnixMillis(ms)
    }
}

/// The wall clock, shared.
#[must_use]
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Tokio's clock, starting at a given Unix time: paused and advanced with
/// `tokio::time::pause` / `advance` in tests.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: UnixMillis,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now and moves with tokio's time.
    #[must_use]
    pub fn starting_at(start: UnixMillis) -> Self {
        Self { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> UnixMillis {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        UnixMillis(self.start.0.saturating_add(elapsed))
    }
}

/// A clock that moves only when told to: a test sets the time the engine sees.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    #[must_use]
    pub fn at(start: UnixMillis) -> Self {
        Self { now_ms: std::sync::atomic::AtomicU64::new(start.0) }
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.now_ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// A `UnixMillis` as the signed milliseconds the database stores.
#[must_use]
pub fn to_db(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_stands_still_until_time_is_advanced() {
        let clock = TokioClock::starting_at(UnixMillis(1_000));
        assert_eq!(clock.now(), UnixMillis(1_000));
        tokio::time::advance(std::time::Duration::from_millis(250)).await;
        assert_eq!(clock.now(), UnixMillis(1_250));
        assert_eq!(clock.now_db(), 1_250);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(UnixMillis(5));
        assert_eq!(clock.now(), UnixMillis(5));
        clock.advance(std::time::Duration::from_secs(2));
        assert_eq!(clock.now(), UnixMillis(2_005));
    }
}
