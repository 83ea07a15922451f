//! Skald's end-to-end tests, over real NATS and real databases.
//!
//! This library holds the harness the tests in `tests/tests/` share: a fresh
//! database per test (a temporary SQLite file, or a new PostgreSQL database
//! dropped afterwards), a unique subject and stream prefix per test, an
//! orchestrator running in-process, a scripted participant speaking the wire
//! protocol, and the invariant checks of `DESIGN.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod process;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use orchestrator::serve::{Orchestrator, ServeConfig};
use orchestrator::store::Store;
use sagas::machine::{SagaEvent, SagaStatus};
use sagas::protocol::{
    Command, HEADER_MSG_ID, Namespace, Outcome, Reply, StartRequest, StartResponse,
};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Partitions of the orchestrators tests start.
pub const PARTITIONS: u32 = 4;
/// The NATS server the machine runs (CI starts it when it is down).
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// The PostgreSQL server databases are created on.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A short random token for names.
#[must_use]
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("skald-test-{}", token()));
                std::fs::create_dir_all(&dir)?;
                let url = format!("sqlite://{}", dir.join("skald.db").display());
                Ok(Self { url, pg_name: None, dir: Some(dir) })
            }
            Backend::Postgres => {
                let name = format!("skald_t_{}", token());
                let admin = Database::connect(POSTGRES_ADMIN_URL)
                    .await
                    .context("PostgreSQL must be running on 127.0.0.1:5432 (see README)")?;
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
                admin.close().await?;
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                Ok(Self { url, pg_name: Some(name), dir: None })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot be async.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(admin) = Database::connect(POSTGRES_ADMIN_URL).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A directory with the given definitions (file name, YAML).
pub fn definitions_dir(files: &[(&str, &str)]) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("skald-defs-{}", token()));
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in files {
        std::fs::write(dir.join(name), yaml)?;
    }
    Ok(dir)
}

/// A three-step saga on participant `p` (actions a1..a3, compensations u1..u3)
/// with short timeouts, for tests.
#[must_use]
pub fn three_steps(timeout: &str, attempts: u32, compensation_attempts: u32) -> String {
    let step = |i: u32| {
        format!(
            "  - name: s{i}
    participant: p
    action: a{i}
    compensation: u{i}
    timeout: {timeout}
    retry: {{ attempts: {attempts}, initial_backoff: 20ms, max_backoff: 100ms }}
    compensation_retry: {{ attempts: {compensation_attempts}, initial_backoff: 20ms, max_backoff: 100ms }}
    input: {{ n: \"{{{{input.n}}}}\", saga: \"{{{{saga.id}}}}\" }}
"
        )
    };
    format!(
        "name: three
version: 1
input_schema:
  type: object
  required: [n]
  properties:
    n: {{ type: integer }}
steps:
{}{}{}",
        step(1),
        step(2),
        step(3)
    )
}

/// An orchestrator running in this process.
#[derive(Debug)]
pub struct RunningOrchestrator {
    pub ns: Namespace,
    pub store: Store,
    pub client: async_nats::Client,
    /// Where the HTTP API and console listen, when started with them.
    pub http_addr: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningOrchestrator {
    pub async fn start(db: &TestDb, prefix: &str, definitions: PathBuf) -> Result<Self> {
        Self::start_on(NATS_URL, db, prefix, definitions).await
    }

    /// Start against a given NATS server.
    pub async fn start_on(
        nats_url: &str,
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
    ) -> Result<Self> {
        Self::start_with(nats_url, db, prefix, definitions, None).await
    }

    /// Start with the HTTP API and console on a free port of 127.0.0.1
    /// (`http_addr`), accepting these tokens.
    pub async fn start_with_http(
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
        tokens: orchestrator::api::Tokens,
    ) -> Result<Self> {
        Self::start_with(NATS_URL, db, prefix, definitions, Some(tokens)).await
    }

    async fn start_with(
        nats_url: &str,
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
        http_tokens: Option<orchestrator::api::Tokens>,
    ) -> Result<Self> {
        let config = ServeConfig {
            nats_url: nats_url.into(),
            database_url: db.url.clone(),
            prefix: prefix.into(),
            definitions,
            partitions: PARTITIONS,
            http_addr: if http_tokens.is_some() { "127.0.0.1:0" } else { "off" }.into(),
            ..ServeConfig::defaults()
        };
        let mut o = Orchestrator::connect(&config).await?;
        if let Some(tokens) = http_tokens {
            o.set_tokens(tokens);
        }
        let http_addr = o.http_addr();
        let store = o.driver.store().clone();
        let client = o.client.clone();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            o.run(stop).await.unwrap();
        });
        Ok(Self {
            ns: Namespace::new(prefix).unwrap(),
            store,
            client,
            http_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// Stop it the way SIGTERM does, wait until it has, and delete the test's streams.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        delete_streams(&self.client, &self.ns).await;
    }

    /// Start a saga over NATS, as a client would.
    pub async fn start_saga(
        &self,
        saga_type: &str,
        key: &str,
        input: Value,
    ) -> Result<StartResponse> {
        let body = serde_json::to_vec(&StartRequest { idempotency_key: key.into(), input })?;
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request(self.ns.start_subject(saga_type), body.into()),
        )
        .await??;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// Wait until every saga listed has ended (terminal or parked).
    pub async fn wait_ended(&self, ids: &[String], within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut open = 0;
            for id in ids {
                let loaded = self.store.load(id).await?.context("saga missing")?;
                if !is_ended(&loaded.row.status) {
                    open += 1;
                }
            }
            if open == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{open} of {} sagas still open after {within:?}", ids.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until every reply consumer has settled every reply (acked or terminated).
    pub async fn wait_replies_settled(&self, within: Duration) -> Result<()> {
        let js = jetstream::new(self.client.clone());
        let deadline = Instant::now() + within;
        loop {
            let mut unsettled = 0;
            for p in 0..PARTITIONS {
                let mut consumer: jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(format!("replies-{p}"), self.ns.replies_stream())
                    .await?;
                let info = consumer.info().await?;
                unsettled += info.num_ack_pending as u64 + info.num_pending;
            }
            if unsettled == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{unsettled} replies still unsettled after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The saga's status and history, after checking DESIGN.md invariant 5:
    /// seq runs 1..n without gaps (the store asserts it) and nothing follows a terminal event.
    pub async fn history(&self, id: &str) -> Result<(String, Vec<SagaEvent>)> {
        let loaded = self.store.load(id).await?.context("saga missing")?;
        if let Some(pos) = loaded.events.iter().position(SagaEvent::is_terminal)
            && pos + 1 != loaded.events.len()
        {
            bail!("saga {id}: events follow the terminal event at seq {}", pos + 1);
        }
        if loaded.row.seq != loaded.events.len() as i64 {
            bail!(
                "saga {id}: projection seq {} but {} events",
                loaded.row.seq,
                loaded.events.len()
            );
        }
        Ok((loaded.row.status, loaded.events))
    }
}

impl Drop for RunningOrchestrator {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.task.is_some() {
            // Not stopped (the test failed): still remove its streams, on a
            // thread of its own since Drop cannot be async.
            let (client, ns) = (self.client.clone(), self.ns.clone());
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(delete_streams(&client, &ns));
                }
            })
            .join();
        }
    }
}

/// Delete a test namespace's streams (and so their consumers) from NATS.
pub async fn delete_streams(client: &async_nats::Client, ns: &Namespace) {
    let js = jetstream::new(client.clone());
    for stream in [ns.commands_stream(), ns.replies_stream()] {
        let _ = js.delete_stream(stream).await;
    }
}

fn is_ended(status: &str) -> bool {
    [SagaStatus::Completed, SagaStatus::Compensated, SagaStatus::Failed, SagaStatus::Parked]
        .iter()
        .any(|s| s.as_str() == status)
}

/// What a scripted participant answers: `None` never answers.
pub type Script = Arc<dyn Fn(&Command) -> Option<Outcome> + Send + Sync>;

/// A participant that speaks the wire protocol directly and records what it saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub commands: Arc<Mutex<Vec<Command>>>,
}

impl Seen {
    /// (step, kind, attempt) of every command received, in order.
    #[must_use]
    pub fn log(&self) -> Vec<(String, String, u32)> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .map(|c| (c.step.clone(), c.kind.to_string(), c.attempt))
            .collect()
    }

    #[must_use]
    pub fn for_saga(&self, saga_id: &str) -> Vec<(String, String, u32)> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.saga_id == saga_id)
            .map(|c| (c.step.clone(), c.kind.to_string(), c.attempt))
            .collect()
    }
}

/// Run a scripted participant `name` until the returned token is cancelled.
pub async fn scripted_participant(
    client: async_nats::Client,
    ns: &Namespace,
    name: &str,
    script: Script,
) -> Result<(Seen, CancellationToken)> {
    let js = jetstream::new(client);
    let (commands, _) = orchestrator::bus::ensure_streams(&js, ns).await?;
    let consumer = commands
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: ns.participant_filter(name),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop2.is_cancelled() {
            let Ok(messages) = consumer.messages().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut messages = Box::pin(messages.take_until(stop2.clone().cancelled_owned()));
            while let Some(msg) = messages.next().await {
                // Errors while NATS is away: keep pulling.
                let Ok(msg) = msg else { continue };
                let cmd: Command = serde_json::from_slice(&msg.payload).unwrap();
                seen2.commands.lock().unwrap().push(cmd.clone());
                if let Some(outcome) = script(&cmd) {
                    let reply =
                        Reply { command_id: cmd.command_id.clone(), attempt: cmd.attempt, outcome };
                    let mut headers = async_nats::HeaderMap::new();
                    let id = format!("{}/{}/reply", cmd.command_id, cmd.attempt);
                    headers.insert(HEADER_MSG_ID, id.as_str());
                    let body = serde_json::to_vec(&reply).unwrap();
                    let published = async {
                        js.publish_with_headers(cmd.reply_subject.clone(), headers, body.into())
                            .await?
                            .await
                            .map_err(anyhow::Error::from)
                    };
                    if published.await.is_err() {
                        // NATS is away: leave the command unacked; it comes back.
                        continue;
                    }
                }
                let _ = msg.ack().await;
            }
        }
    });
    Ok((seen, stop))
}
