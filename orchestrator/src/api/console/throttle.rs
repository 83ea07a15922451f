//! Failed console sign-ins, counted per client address: past a few a minute,
//! a client is refused (429) until its minute is over, so tokens cannot be
//! guessed at the speed of the network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins a client may make in one window.
pub const FAILURES_MAX: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients remembered at once; the oldest windows are forgotten first.
const CLIENTS_MAX: usize = 10_000;

/// Failed sign-ins per client in the current window.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl SignInThrottle {
    /// Whether `client` may try to sign in now (`None`: an unknown address,
    /// all such share one count).
    pub fn allows(&self, client: Option<IpAddr>, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures
            .get(&client)
            .is_none_or(|(since, n)| *n < FAILURES_MAX || now.duration_since(*since) >= WINDOW)
    }

    /// `client` failed to sign in.
    pub fn failed(&self, client: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= CLIENTS_MAX && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if failures.len() >= CLIENTS_MAX
                && let Some(oldest) =
                    failures.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_after_too_many_failures_until_its_window_ends() {
        let throttle = SignInThrottle::default();
        let (a, b) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        let t0 = Instant::now();
        for _ in 0..FAILURES_MAX {
            assert!(throttle.allows(a, t0));
            throttle.failed(a, t0);
        }
        assert!(!throttle.allows(a, t0 + Duration::from_secs(30)));
        assert!(throttle.allows(b, t0), "other clients are not affected");
        assert!(throttle.allows(a, t0 + WINDOW), "a new window");
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = SignInThrottle::default();
        let t0 = Instant::now();
        for i in 0..(CLIENTS_MAX as u32 + 100) {
            throttle.failed(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert!(throttle.failures.lock().unwrap().len() <= CLIENTS_MAX);
    }
}
