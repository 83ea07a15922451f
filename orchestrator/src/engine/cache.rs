//! The partition owner's cache of open sagas: saga id → (identity, seq,
//! state, history), so that a reply or a timeout does not load and replay the
//! whole history from the database.
//!
//! Safe because only a partition's owner applies replies and timeouts, always
//! under its lease's fence, and because a stale entry can never be written
//! from: every append still carries the seq it was decided on, so a write by
//! anyone else (a start, an operator's repair through another instance, a
//! previous owner) makes the next append a [`crate::store::StoreError::Conflict`],
//! after which the driver reloads from the store. The rules:
//! - an entry is only used under the epoch it was cached at: a partition lost
//!   and taken again (a new epoch) never sees its old entries
//!   ([`SagaCache::take`] checks, [`SagaCache::forget_partition`] frees them);
//! - an entry is taken out while its saga is being decided and put back only
//!   after the append committed, so a failed or ambiguous write leaves nothing
//!   behind and concurrent inputs of one saga load from the store;
//! - sagas that reached an end state are dropped at once; the rest is bounded
//!   ([`SAGA_CACHE_ENTRIES_MAX`]), the least recently used going first.

use crate::store::Projection;
use sagas::machine::{SagaEvent, SagaState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Most sagas kept; past it the least recently used eighth is dropped.
pub const SAGA_CACHE_ENTRIES_MAX: usize = 100_000;

/// One open saga as its owner last wrote it.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The projection's identity columns (type, definition, partition, key, input hash).
    pub identity: Projection,
    /// The lease epoch of the saga's partition when this was cached (0 outside a cluster).
    pub epoch: i64,
    /// The seq of the last event, as stored.
    pub seq: i64,
    /// The state: `replay` of `history`.
    pub state: SagaState,
    /// Every stored event, oldest first.
    pub history: Vec<SagaEvent>,
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    tick: u64,
}

/// Shared by every clone of a [`crate::engine::driver::Driver`].
#[derive(Debug, Clone)]
pub struct SagaCache {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

impl Default for SagaCache {
    fn default() -> Self {
        Self::new(SAGA_CACHE_ENTRIES_MAX)
    }
}

impl SagaCache {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::default(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take a saga's entry out, if it was cached under `epoch` (else it is
    /// dropped). Whoever takes it puts it back after a committed append.
    pub fn take(&self, saga_id: &str, epoch: impl Fn(i32) -> Option<i64>) -> Option<Cached> {
        let entry = self.lock().map.remove(saga_id)?;
        (epoch(entry.cached.identity.partition) == Some(entry.cached.epoch)).then_some(entry.cached)
    }

    /// A copy of a saga's entry (tests, diagnostics).
    #[must_use]
    pub fn peek(&self, saga_id: &str) -> Option<Cached> {
        self.lock().map.get(saga_id).map(|e| e.cached.clone())
    }

    /// Remember a saga as just written. An end state is forgotten instead; an
    /// entry with a later seq already there is kept.
    pub fn put(&self, saga_id: &str, cached: Cached) {
        debug_assert_eq!(
            sagas::machine::replay(cached.state.definition.clone(), &cached.history),
            cached.state,
            "the cached state of saga {saga_id} is the replay of its history"
        );
        debug_assert_eq!(cached.seq, cached.history.len() as i64);
        let mut inner = self.lock();
        if cached.state.status.is_end() {
            inner.map.remove(saga_id);
            return;
        }
        if inner.map.get(saga_id).is_some_and(|e| e.cached.seq > cached.seq) {
            return;
        }
        inner.tick += 1;
        let used = inner.tick;
        inner.map.insert(saga_id.to_owned(), Entry { cached, used });
        if inner.map.len() > self.capacity {
            evict_oldest(&mut inner.map, self.capacity / 8 + 1);
        }
    }

    /// Forget one saga (its last write failed or was not ours).
    pub fn forget(&self, saga_id: &str) {
        self.lock().map.remove(saga_id);
    }

    /// Forget every saga of a partition this instance no longer holds.
    pub fn forget_partition(&self, partition: i32) {
        self.lock().map.retain(|_, e| e.cached.identity.partition != partition);
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drop the `n` least recently used entries.
fn evict_oldest(map: &mut HashMap<String, Entry>, n: usize) {
    let mut ages: Vec<u64> = map.values().map(|e| e.used).collect();
    if n >= ages.len() {
        map.clear();
        return;
    }
    let (_, cut, _) = ages.select_nth_unstable(n - 1);
    let cut = *cut;
    map.retain(|_, e| e.used > cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagas::machine::{Input, decide};
    use serde_json::json;

    const DEF: &str = include_str!("../../../sagas/definitions/bench.yaml");

    fn started(saga_id: &str, partition: i32, epoch: i64) -> Cached {
        let def = Arc::new(sagas::definition::load("bench.yaml", DEF).unwrap());
        let state = SagaState::new(def);
        let input = Input::Start { saga_id: saga_id.into(), input: json!({}) };
        let decision = decide(&state, &input, sagas::UnixMillis(1_000)).unwrap();
        let mut state = state;
        for e in &decision.events {
            state.apply(e);
        }
        Cached {
            identity: Projection {
                saga_type: "bench".into(),
                partition,
                idempotency_key: saga_id.into(),
                ..Projection::default()
            },
            epoch,
            seq: decision.events.len() as i64,
            state,
            history: decision.events,
        }
    }

    #[test]
    fn an_entry_is_used_only_under_the_epoch_it_was_cached_at() {
        let cache = SagaCache::new(10);
        cache.put("s1", started("s1", 3, 7));
        assert!(cache.take("s1", |_| Some(8)).is_none(), "a new epoch drops the entry");
        assert!(cache.is_empty());
        cache.put("s1", started("s1", 3, 7));
        assert!(cache.take("s1", |_| None).is_none(), "a partition not held drops the entry");
        cache.put("s1", started("s1", 3, 7));
        let taken = cache.take("s1", |p| (p == 3).then_some(7)).unwrap();
        assert_eq!(taken.seq, 2);
        assert!(cache.take("s1", |_| Some(7)).is_none(), "taken out while in use");
    }

    #[test]
    fn a_lost_partition_forgets_its_sagas_only() {
        let cache = SagaCache::new(10);
        cache.put("s1", started("s1", 1, 1));
        cache.put("s2", started("s2", 2, 1));
        cache.forget_partition(1);
        assert!(cache.peek("s1").is_none());
        assert!(cache.peek("s2").is_some());
    }

    #[test]
    fn an_older_write_never_replaces_a_newer_one() {
        let cache = SagaCache::new(10);
        let newer = started("s1", 0, 0);
        let mut older = started("s1", 0, 0);
        older.history.pop();
        older.seq -= 1;
        older.state = sagas::machine::replay(older.state.definition.clone(), &older.history);
        cache.put("s1", newer);
        cache.put("s1", older);
        assert_eq!(cache.peek("s1").unwrap().seq, 2);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let cache = SagaCache::new(16);
        for i in 0..40 {
            let id = format!("s{i}");
            cache.put(&id, started(&id, 0, 0));
        }
        assert!(cache.len() <= 16, "{}", cache.len());
        assert!(cache.peek("s39").is_some(), "the newest stays");
        assert!(cache.peek("s0").is_none(), "the oldest went");
    }
}
