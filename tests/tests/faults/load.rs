//! The suite's loads (sagas started over NATS as clients would, see
//! [`crate::common::load`]) and the waits around a fault: until a share of
//! the load has started, and until every saga has ended once it has healed.

use crate::common::cluster::open_sagas;
use crate::common::load::Make;
use orchestrator::store::Store;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long every saga may take to end once a fault has healed.
const HEAL_MAX: Duration = Duration::from_secs(180);
/// How long a share of a load may take to be started.
pub const LOAD_WITHIN: Duration = Duration::from_secs(180);

/// Sagas of `flow`, each with its own note.
pub fn flow_load() -> Make {
    Arc::new(|i| ("flow".to_owned(), format!("k{i}"), json!({ "note": format!("note {i}") })))
}

/// Sagas of `flow` started after a barrage of junk.
pub fn after_load() -> Make {
    Arc::new(|i| ("flow".to_owned(), format!("after-{i}"), json!({ "note": "after" })))
}

/// Wait until no saga is running or compensating (or `HEAL_MAX` passed:
/// [`crate::invariants::verify`] then reports the ones still open). Returns
/// the time since `healed`, when the fault was removed.
pub async fn wait_ended(store: &Store, healed: Instant) -> Duration {
    let started = Instant::now();
    loop {
        let open = open_sagas(store).await;
        if open.as_ref().is_ok_and(|n| *n == 0) || started.elapsed() > HEAL_MAX {
            return healed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sagas not yet ended (-1 when they cannot be counted).
pub async fn in_flight(store: &Store) -> i64 {
    open_sagas(store).await.unwrap_or(-1)
}
