//! Test harness: a private database per test (a temp SQLite file, or a fresh
//! PostgreSQL database), a private subject prefix on the real NATS server,
//! and helpers to fund accounts. Everything is removed when dropped.
//!
//! NATS: `SKALD_TEST_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream on).
//! PostgreSQL: `SKALD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), used to create and drop databases.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ledger::model::{AccountFlags, Balances, NewAccount, NewTransfer};
use ledger::store::Store;
use sagas::protocol::Namespace;
use sea_orm::{ConnectionTrait, Database};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn nats_url() -> String {
    std::env::var("SKALD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn postgres_admin_url() -> String {
    std::env::var("SKALD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A namespace of its own, so a test never sees another's messages.
pub fn namespace() -> Namespace {
    Namespace::new(&format!("t{}", random_hex())).unwrap()
}

/// A database of the test's own, removed on drop.
pub struct TestDb {
    pub url: String,
    kind: Kind,
}

enum Kind {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("ledger-{}.db", random_hex()));
                Self {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    kind: Kind::Sqlite(path),
                }
            }
            Backend::Postgres => {
                let name = format!("ledger_{}", random_hex());
                let admin = Database::connect(postgres_admin_url())
                    .await
                    .expect("PostgreSQL must run at 127.0.0.1:5432");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                admin.close().await.unwrap();
                let base = postgres_admin_url();
                let server = &base[..base.rfind('/').unwrap()];
                Self { url: format!("{server}/{name}"), kind: Kind::Postgres(name) }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Kind::Postgres(name) => {
                let name = name.clone();
                // Drop cannot await: clean up on a thread with its own runtime.
                let done = std::thread::spawn(move || {
                    let rt =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async move {
                        if let Ok(admin) = Database::connect(postgres_admin_url()).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                });
                let _ = done.join();
            }
        }
    }
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

/// The orchestrator's side of the wire, on a private namespace: publishes
/// commands, reads replies, and runs the ledger participant in-process.
pub struct Bus {
    pub ns: Namespace,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    replies: async_nats::jetstream::consumer::pull::Stream,
    running: Option<(
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<Result<(), skald_participant::SdkError>>,
    )>,
}

/// How long a test waits for a reply before it fails.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Bus {
    pub async fn new() -> Self {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let ns = namespace();
        let nats = async_nats::connect(nats_url()).await.expect("NATS must run at 127.0.0.1:4222");
        let js = async_nats::jetstream::new(nats.clone());
        let (_, replies) = skald_participant::streams::ensure_streams(&js, &ns).await.unwrap();
        let replies = replies
            .get_or_create_consumer(
                "test",
                pull::Config {
                    durable_name: Some("test".into()),
                    filter_subject: format!("{}.reply.>", ns.prefix()),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        Self { ns, nats, js, replies, running: None }
    }

    /// Run `ledger serve`'s participant on `store`'s database.
    pub fn start(&mut self, store: &Store) {
        let token = tokio_util::sync::CancellationToken::new();
        let mut config =
            skald_participant::Config::new(self.nats.clone(), self.ns.clone(), store.db().clone());
        config.redelivery_delay = std::time::Duration::from_millis(200);
        let handle = tokio::spawn(ledger::handlers::participant().run(config, token.clone()));
        self.running = Some((token, handle));
    }

    pub async fn stop(&mut self) {
        if let Some((token, handle)) = self.running.take() {
            token.cancel();
            tokio::time::timeout(std::time::Duration::from_secs(40), handle)
                .await
                .expect("the participant stops within its shutdown grace")
                .unwrap()
                .unwrap();
        }
    }

    /// A command as the orchestrator builds it.
    pub fn command(
        &self,
        saga: &str,
        step: &str,
        kind: sagas::protocol::Kind,
        action: &str,
        attempt: u32,
        payload: serde_json::Value,
    ) -> sagas::protocol::Command {
        sagas::protocol::Command {
            command_id: sagas::protocol::command_id(saga, step, kind),
            saga_id: saga.into(),
            saga_type: "topup".into(),
            step: step.into(),
            kind,
            action: action.into(),
            attempt,
            payload,
            deadline_unix_ms: sagas::UnixMillis(u64::MAX / 2),
            reply_subject: self.ns.reply_subject(0),
        }
    }

    /// Publish a command as the orchestrator does (`Nats-Msg-Id` per attempt).
    pub async fn send(&self, command: &sagas::protocol::Command) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            sagas::protocol::HEADER_MSG_ID,
            sagas::protocol::msg_id(&command.command_id, command.attempt).as_str(),
        );
        let body = serde_json::to_vec(command).unwrap();
        let subject = self.ns.command_subject(ledger::handlers::PARTICIPANT, &command.action);
        self.js.publish_with_headers(subject, headers, body.into()).await.unwrap().await.unwrap();
    }

    pub async fn reply(&mut self) -> sagas::protocol::Reply {
        use futures::StreamExt as _;
        let msg = tokio::time::timeout(REPLY_TIMEOUT, self.replies.next())
            .await
            .expect("a reply within the timeout")
            .unwrap()
            .unwrap();
        msg.ack().await.unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    }

    /// Send a command and wait for its reply.
    pub async fn ask(&mut self, command: &sagas::protocol::Command) -> sagas::protocol::Outcome {
        self.send(command).await;
        let reply = self.reply().await;
        assert_eq!(reply.command_id, command.command_id, "replies arrive one at a time here");
        assert_eq!(reply.attempt, command.attempt);
        reply.outcome
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some((token, _)) = &self.running {
            token.cancel();
        }
        let ns = self.ns.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(nats) = async_nats::connect(nats_url()).await {
                    let js = async_nats::jetstream::new(nats);
                    let _ = js.delete_stream(ns.commands_stream()).await;
                    let _ = js.delete_stream(ns.replies_stream()).await;
                }
            });
        });
        let _ = done.join();
    }
}
