//! A cluster of `skald serve` instances as its database shows it: who holds
//! each partition (live leases), and how many sagas have not ended yet.

use orchestrator::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `t` as the database stores times: milliseconds since the Unix epoch.
pub fn db_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The owner and epoch of each partition whose lease is live.
pub async fn live_owners(store: &Store) -> Result<BTreeMap<i32, (String, i64)>, StoreError> {
    let now = db_ms(SystemTime::now());
    Ok(store
        .leases()
        .await?
        .into_iter()
        .filter(|l| !l.owner.is_empty() && l.expires_at_ms > now)
        .map(|l| (l.partition, (l.owner, l.epoch)))
        .collect())
}

/// Wait until each of the `partitions` has a live lease and exactly
/// `instances` hold them; how long that took. An error when they do not
/// within `within`, or the leases cannot be read.
pub async fn wait_owners(
    store: &Store,
    partitions: u32,
    instances: &[&str],
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let want: BTreeSet<&str> = instances.iter().copied().collect();
    loop {
        let owners = live_owners(store).await.map_err(|e| e.to_string())?;
        let have: BTreeSet<&str> = owners.values().map(|(o, _)| o.as_str()).collect();
        if owners.len() == partitions as usize && have == want {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(format!("partitions not held by {want:?} within {within:?}: {owners:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sagas not yet ended: running or compensating.
pub async fn open_sagas(store: &Store) -> Result<i64, StoreError> {
    let counts = store.count_by_status().await?;
    Ok(counts.iter().filter(|(s, _)| s == "running" || s == "compensating").map(|(_, n)| *n).sum())
}
