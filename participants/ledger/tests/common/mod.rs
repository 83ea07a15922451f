//! Test harness: a private database per test and a private namespace on the
//! test NATS server (both from the test kit, removed when dropped), the
//! ledger participant run in-process, and helpers to fund accounts.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream on).
//! PostgreSQL: `SKALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), used to create and drop databases.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ledger::model::{AccountFlags, Balances, NewAccount, NewTransfer};
use ledger::store::Store;
use sagas::protocol::{Command, Kind, Outcome};
use skald_participant::SdkError;
use skald_testkit::{OrchestratorSide, Service};
use std::time::Duration;

pub use skald_testkit::{Backend, TempDatabase as TestDb};

/// How long the participant may take to stop: its shutdown grace and a margin.
const STOP_WITHIN: Duration = Duration::from_secs(40);

/// A fresh database of `backend` and the ledger's store on it.
pub async fn ledger_on(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend).await.unwrap();
    let store = Store::connect(&db.url).await.unwrap();
    (db, store)
}

pub const WALLET: AccountFlags =
    AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false };

pub fn account(id: &str, currency: &str, flags: AccountFlags) -> NewAccount {
    NewAccount { id: id.into(), currency: currency.into(), flags }
}

pub fn transfer(id: &str, debit: &str, credit: &str, amount: i64, pending: bool) -> NewTransfer {
    NewTransfer {
        id: id.into(),
        debit_account_id: debit.into(),
        credit_account_id: credit.into(),
        amount,
        currency: "EUR".into(),
        pending,
    }
}

/// Given `bank` (no flags) and the wallet `alice` funded with `funds` EUR cents.
pub async fn bank_and_wallet(store: &Store, funds: i64) {
    store.create_account(&account("bank", "EUR", AccountFlags::default()), 1).await.unwrap();
    store.create_account(&account("alice", "EUR", WALLET), 1).await.unwrap();
    store.create_transfer(&transfer("fund-alice", "bank", "alice", funds, false), 2).await.unwrap();
}

pub async fn balances(store: &Store, id: &str) -> Balances {
    store.account(id).await.unwrap().expect("the account exists").balances
}

/// `$name(backend)` as two tests, one per database.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::common::Backend::Postgres).await;
            }
        }
    )*};
}

/// The orchestrator's side of the wire on a private namespace, and the
/// ledger participant run in-process on demand.
pub struct Bus {
    pub wire: OrchestratorSide,
    running: Option<Service<SdkError>>,
}

impl Bus {
    pub async fn new() -> Self {
        let wire = OrchestratorSide::open(
            ledger::handlers::PARTICIPANT,
            skald_participant::streams::ensure_streams,
        )
        .await
        .unwrap();
        Self { wire, running: None }
    }

    /// Run `ledger serve`'s participant on `store`'s database.
    pub fn start(&mut self, store: &Store) {
        self.start_grouped(store, 1);
    }

    /// The same, with up to `commit_group_max` commands sharing a commit (SQLite).
    pub fn start_grouped(&mut self, store: &Store, commit_group_max: usize) {
        let mut config = skald_participant::Config::new(
            self.wire.nats.clone(),
            self.wire.ns.clone(),
            store.db().clone(),
        );
        config.redelivery_delay = Duration::from_millis(200);
        config.commit_group_max = commit_group_max;
        config.delivery = OrchestratorSide::DELIVERY;
        let participant = ledger::handlers::participant();
        self.running = Some(Service::spawn(|token| participant.run(config, token)));
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop(STOP_WITHIN).await.expect("the participant stops cleanly");
        }
    }

    /// A command as the orchestrator builds it.
    pub fn command(
        &self,
        saga: &str,
        step: &str,
        kind: Kind,
        action: &str,
        attempt: u32,
        payload: serde_json::Value,
    ) -> Command {
        Command { payload, ..self.wire.command(saga, step, kind, action, attempt) }
    }

    /// Send a command and wait for its reply.
    pub async fn ask(&mut self, command: &Command) -> Outcome {
        self.wire.ask(command).await.outcome
    }
}
