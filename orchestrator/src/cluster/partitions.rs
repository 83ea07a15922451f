//! Partitions: which instance drives which sagas, and how that changes.
//!
//! A saga's partition is a hash of its id modulo the cluster's fixed partition
//! count. Each instance heartbeats into `members`; rendezvous hashing over the
//! live members names one owner per partition; the owner holds the partition
//! by a lease with an epoch ([`crate::store::Fence`]). The membership loop
//! ([`run`]) renews held leases well before they expire, releases partitions
//! that now hash to another member (so a joining instance gets its share at
//! once), takes free or expired partitions that hash to it (bumping the epoch),
//! and reports each change so the orchestrator starts or stops that
//! partition's reply intake and re-sends its in-flight commands. On shutdown it
//! releases everything and leaves, handing the partitions over before exit.
//!
//! [`Ownership`] is the shared view of what this instance holds: the driver
//! fences appends with it, the timers and relay filter by it, the API reads it.

use crate::store::{Fence, Store, StoreError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a lease lasts unless renewed (default; `--lease-ttl-ms`).
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(5);
/// Leases are renewed this many times per TTL, so a slow round or two do not lose them.
const RENEWALS_PER_TTL: u32 = 5;

/// The partitions this instance holds and at which epoch, shared between tasks.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    held: Arc<RwLock<BTreeMap<i32, i64>>>,
    /// This instance's name in a cluster; `None`: a single instance that owns
    /// every partition without leases (tests, tools).
    instance: Option<Arc<str>>,
}

impl Ownership {
    /// An instance that owns all `partitions` without leases or fencing.
    #[must_use]
    pub fn all(partitions: u32) -> Self {
        let held = (0..i32::try_from(partitions).unwrap_or(i32::MAX)).map(|p| (p, 0)).collect();
        Self { held: Arc::new(RwLock::new(held)), instance: None }
    }

    /// A cluster member that holds nothing yet; the membership loop fills it.
    #[must_use]
    pub fn cluster(instance: &str) -> Self {
        Self { held: Arc::default(), instance: Some(Arc::from(instance)) }
    }

    /// True when ownership is decided by leases (and appends are fenced).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.instance.is_some()
    }

    /// The partitions held now, ascending.
    #[must_use]
    pub fn owned(&self) -> Vec<i32> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// The partitions to look at for timers and the outbox: `None` for all
    /// (a single instance), else the ones held.
    #[must_use]
    pub fn filter(&self) -> Option<Vec<i32>> {
        self.is_cluster().then(|| self.owned())
    }

    /// The fence for writing to `partition`, if this instance holds it.
    /// Outside a cluster there is nothing to fence: `Ok(None)`.
    pub fn fence(&self, partition: i32) -> Result<Option<Fence>, NotOwner> {
        let Some(instance) = &self.instance else { return Ok(None) };
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        match held.get(&partition) {
            Some(&epoch) => Ok(Some(Fence { partition, owner: instance.to_string(), epoch })),
            None => Err(NotOwner { partition }),
        }
    }

    /// The epoch `partition` is held at (0 outside a cluster), if held.
    #[must_use]
    pub fn epoch(&self, partition: i32) -> Option<i64> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).get(&partition).copied()
    }

    /// Record that this instance holds `partition` at `epoch` (the membership
    /// loop does this after taking a lease; tests and tools may too).
    pub fn insert(&self, partition: i32, epoch: i64) {
        self.held.write().unwrap_or_else(PoisonError::into_inner).insert(partition, epoch);
    }

    /// Forget `partition` if it is still held at `epoch`; true if it was.
    pub fn lose(&self, partition: i32, epoch: i64) -> bool {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        if held.get(&partition) == Some(&epoch) {
            held.remove(&partition);
            return true;
        }
        false
    }

    fn held(&self) -> Vec<(i32, i64)> {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(p, e)| (*p, *e))
            .collect()
    }
}

/// This instance does not hold the partition (any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this instance does not own partition {partition}")]
pub struct NotOwner {
    pub partition: i32,
}

/// A change in what this instance holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Taken at this epoch: start intake, re-send in-flight commands.
    Acquired { partition: i32, epoch: i64 },
    /// Given up or lost: stop intake.
    Lost { partition: i32 },
}

/// The member among `members` that partition `p` hashes to (rendezvous, or
/// highest-random-weight, hashing: adding or removing one member moves only
/// the partitions that member gains or loses).
#[must_use]
pub fn owner_of(partition: i32, members: &[String]) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| {
            let digest = Sha256::new()
                .chain_update(m.as_bytes())
                .chain_update(b"/")
                .chain_update(partition.to_be_bytes())
                .finalize();
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest[..8]);
            (u64::from_be_bytes(score), m.as_str())
        })
        .map(String::as_str)
}

/// What the membership loop needs.
#[derive(Debug, Clone)]
pub struct Membership {
    pub store: Store,
    pub instance: String,
    pub partitions: u32,
    pub ownership: Ownership,
    pub lease_ttl: Duration,
    pub http_addr: Option<String>,
    pub metrics: crate::metrics::Metrics,
}

impl Membership {
    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// One round: heartbeat, renew or release what is held, take what is ours.
    /// [`run`] does one every TTL / 5; the simulator (`tests/sim`) calls it on
    /// simulated time.
    ///
    /// # Errors
    /// When the store fails; what was done before stays done.
    pub async fn round(&self, changes: &mpsc::Sender<Change>) -> Result<(), StoreError> {
        let now = self.store.clock().now_db();
        self.store.heartbeat(&self.instance, self.http_addr.as_deref(), now).await?;
        let mut live: Vec<String> = self
            .store
            .live_members(now - self.ttl_ms())
            .await?
            .into_iter()
            .map(|m| m.instance)
            .collect();
        if !live.contains(&self.instance) {
            live.push(self.instance.clone());
        }
        let all = 0..i32::try_from(self.partitions).unwrap_or(i32::MAX);
        let mine: BTreeSet<i32> =
            all.filter(|p| owner_of(*p, &live) == Some(self.instance.as_str())).collect();
        // Hand over what now hashes to another member: stop driving it, then let it go.
        for (partition, epoch) in self.ownership.held() {
            if !mine.contains(&partition) {
                if self.ownership.lose(partition, epoch) {
                    let _ = changes.send(Change::Lost { partition }).await;
                }
                let fence = Fence { partition, owner: self.instance.clone(), epoch };
                self.store.release(&fence).await?;
                tracing::info!(partition, epoch, "partition handed over");
            }
        }
        // Renew the rest in one statement; whatever is no longer ours at our epoch was lost.
        let still: BTreeMap<i32, i64> =
            self.store.renew_all(&self.instance, now, self.ttl_ms()).await?.into_iter().collect();
        for (partition, epoch) in self.ownership.held() {
            if still.get(&partition) != Some(&epoch) {
                if self.ownership.lose(partition, epoch) {
                    let _ = changes.send(Change::Lost { partition }).await;
                }
                tracing::warn!(partition, epoch, "lease lost to another instance");
            }
        }
        let held: BTreeSet<i32> = self.ownership.owned().into_iter().collect();
        // Leases under this name that this process does not drive and that now hash to
        // another member: left by an earlier run under the same name that died before
        // handing them over. `renew_all` just extended them, so no one else could ever
        // take them; let them go.
        for (partition, epoch) in &still {
            if !mine.contains(partition) && !held.contains(partition) {
                let fence =
                    Fence { partition: *partition, owner: self.instance.clone(), epoch: *epoch };
                self.store.release(&fence).await?;
                tracing::info!(partition, epoch, "lease left by an earlier run released");
            }
        }
        for partition in mine.difference(&held) {
            if let Some(epoch) =
                self.store.acquire(*partition, &self.instance, now, self.ttl_ms()).await?
            {
                self.ownership.insert(*partition, epoch);
                tracing::info!(partition, epoch, "partition taken");
                let _ = changes.send(Change::Acquired { partition: *partition, epoch }).await;
            }
        }
        self.metrics.set_partitions_owned(u32::try_from(self.ownership.owned().len()).unwrap_or(0));
        Ok(())
    }

    /// Release every lease and leave (graceful shutdown).
    async fn leave(&self, changes: &mpsc::Sender<Change>) {
        for (partition, epoch) in self.ownership.held() {
            if self.ownership.lose(partition, epoch) {
                let _ = changes.send(Change::Lost { partition }).await;
            }
            let fence = Fence { partition, owner: self.instance.clone(), epoch };
            if let Err(e) = self.store.release(&fence).await {
                tracing::warn!(partition, error = %e, "cannot release lease at shutdown");
            }
        }
        if let Err(e) = self.store.leave(&self.instance).await {
            tracing::warn!(error = %e, "cannot leave the cluster cleanly");
        }
        self.metrics.set_partitions_owned(0);
    }
}

/// Run the membership loop until `stop`, then hand everything over.
pub async fn run(m: Membership, changes: mpsc::Sender<Change>, stop: CancellationToken) {
    let tick = m.lease_ttl / RENEWALS_PER_TTL;
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Cancelled: no round is in flight.
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        if let Err(e) = m.round(&changes).await {
            tracing::warn!(error = %e, "membership round failed; retrying");
        }
    }
    m.leave(&changes).await;
}

/// On SQLite only one orchestrator may run: wait up to one lease TTL for any
/// other live member to go quiet (a crashed predecessor), then refuse.
pub async fn single_on_sqlite(
    store: &Store,
    instance: &str,
    lease_ttl: Duration,
) -> Result<(), String> {
    let ttl_ms = i64::try_from(lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let deadline = tokio::time::Instant::now() + lease_ttl + Duration::from_secs(1);
    loop {
        let now = store.clock().now_db();
        let others: Vec<String> = store
            .live_members(now - ttl_ms)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| m.instance)
            .filter(|m| m != instance)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "another orchestrator ({}) is running on this SQLite database; SQLite supports \
                 one orchestrator. Stop it, or use PostgreSQL (DATABASE_URL=postgres://…) to run \
                 several",
                others.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_what_a_member_gains_or_loses() {
        let two: Vec<String> = vec!["a".into(), "b".into()];
        let three: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let mut moved = 0;
        let mut counts = BTreeMap::new();
        for p in 0..256 {
            let before = owner_of(p, &two).unwrap();
            let after = owner_of(p, &three).unwrap();
            *counts.entry(after).or_insert(0) += 1;
            if before != after {
                assert_eq!(after, "c", "a partition only ever moves to the new member");
                moved += 1;
            }
        }
        assert!(moved > 40 && moved < 130, "about a third moves: {moved}");
        assert!(counts.values().all(|n| *n > 50), "spread: {counts:?}");
        assert_eq!(owner_of(3, &[]), None);
    }

    #[test]
    fn fences_name_the_epoch_held_and_lost_partitions_refuse() {
        let o = Ownership::cluster("me");
        assert_eq!(o.fence(2), Err(NotOwner { partition: 2 }));
        o.insert(2, 7);
        assert_eq!(o.fence(2).unwrap().unwrap().epoch, 7);
        assert!(!o.lose(2, 6), "a stale epoch does not drop a newer hold");
        assert!(o.lose(2, 7));
        assert!(o.fence(2).is_err());
        assert_eq!(Ownership::all(3).fence(1), Ok(None));
        assert_eq!(Ownership::all(3).owned(), vec![0, 1, 2]);
    }
}
