//! An engine for a test: a store on a throwaway database of the test kit, a
//! registry of the test's definitions and a driver over both, the commands
//! it left in the outbox, and the API router over it. No NATS: commands stay
//! in the outbox unless the test runs a relay. The CLI's tests include this
//! file too (by path), for the API server they run `skald` against.

#![allow(dead_code, reason = "each test binary uses a part")]

use axum::Router;
use orchestrator::api::{self, ApiState, Tokens};
use orchestrator::cluster::partitions::Ownership;
use orchestrator::engine::driver::Driver;
use orchestrator::engine::registry::Registry;
use orchestrator::store::Store;
use sagas::protocol::{Command, Namespace};
use skald_testkit::{Backend, TempDatabase};
use std::sync::Arc;

/// The shipped `bench` saga: three compensable steps on participant `bench`.
pub const BENCH: &str = include_str!("../../../sagas/definitions/bench.yaml");
/// How many partitions an [`Engine`] has; it owns them all, without leases.
pub const PARTITIONS: u32 = 4;
/// How many outbox rows [`take_commands`] reads at the most.
const COMMANDS_MAX: u64 = 256;

/// The namespace of an engine whose commands stay in the outbox.
#[must_use]
pub fn offline() -> Namespace {
    Namespace::new("t").expect("`t` is a valid prefix")
}

/// A store on a fresh database of `backend`; the database goes with the
/// [`TempDatabase`] (keep it while the store is used).
pub async fn store(backend: Backend) -> (TempDatabase, Store) {
    let db = TempDatabase::new(backend).await.expect("a temporary database");
    let store = Store::connect(&db.url).await.expect("the store opens its database");
    (db, store)
}

/// A driver over `store` with `definitions` (YAML texts) registered, its
/// commands addressed in `ns`, its sagas spread over `partitions`.
pub async fn driver(store: &Store, definitions: &[&str], ns: Namespace, partitions: u32) -> Driver {
    let definitions = definitions
        .iter()
        .map(|yaml| sagas::definition::load("fixture.yaml", yaml).expect("a valid definition"))
        .collect();
    let registry =
        Registry::with_store(store, definitions).await.expect("the definitions are registered");
    Driver::new(store.clone(), Arc::new(registry), ns, partitions)
}

/// A store on a fresh database and a driver over it, offline, on
/// [`PARTITIONS`] partitions. Dropping it drops the database (after the store).
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub driver: Driver,
    pub db: TempDatabase,
}

impl Engine {
    /// An engine on `backend` with `definitions` (YAML texts) registered.
    pub async fn new(backend: Backend, definitions: &[&str]) -> Self {
        let (db, store) = store(backend).await;
        let driver = driver(&store, definitions, offline(), PARTITIONS).await;
        Self { store, driver, db }
    }

    /// The API router over this engine: its partitions all owned by
    /// `instance`, callers known by `tokens`.
    pub fn router(&self, tokens: Tokens, instance: &str) -> Router {
        let ownership = Ownership::all(PARTITIONS);
        api::app(ApiState::new(self.driver.clone(), tokens, ownership, instance.to_owned()))
    }
}

/// The commands waiting in the outbox (removed from it, with the sagas'
/// end announcements queued beside them), oldest first.
pub async fn take_commands(store: &Store) -> Vec<Command> {
    let rows = store.outbox_batch(COMMANDS_MAX, None, None).await.expect("the outbox is read");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    store.outbox_delete(&ids).await.expect("the outbox rows are deleted");
    rows.iter()
        .filter(|r| r.subject.contains(".cmd."))
        .map(|r| serde_json::from_str(&r.body).expect("an outbox row is a command"))
        .collect()
}
