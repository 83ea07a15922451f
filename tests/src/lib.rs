//! Skald's end-to-end tests, over real NATS and real databases.
//!
//! This library holds what the tests in `tests/tests/` share beyond the test
//! kit (`skald-testkit`: temporary databases, ports, child guards, a private
//! nats-server, definition fixtures), re-exported here under the names the
//! tests use: an orchestrator running in-process, a scripted participant
//! speaking the wire protocol, and the invariant checks of `DESIGN.md`.

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
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use skald_testkit::database::POSTGRES_ADMIN_URL;
pub use skald_testkit::fixtures::{definitions_dir, three_steps};
pub use skald_testkit::{
    Backend, NATS_URL, SecuredBus, TempDatabase as TestDb, delete_streams, token,
};
pub use skald_transport::Delivery;

/// Partitions of the orchestrators tests start.
pub const PARTITIONS: u32 = 4;

/// An orchestrator running in this process.
///
/// [`RunningOrchestrator::start`] and its kin deliver over JetStream, which
/// the [`scripted_participant`] speaks; [`RunningOrchestrator::start_delivering`]
/// chooses. A participant a test runs beside it takes its [`Self::delivery`].
#[derive(Debug)]
pub struct RunningOrchestrator {
    pub ns: Namespace,
    /// How it sends commands and takes replies.
    pub delivery: Delivery,
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
        Self::start_with(nats_url, db, prefix, definitions, None, Delivery::JetStream).await
    }

    /// Start against `nats_url` with commands and replies delivered as
    /// `delivery` says.
    pub async fn start_delivering(
        nats_url: &str,
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
        delivery: Delivery,
    ) -> Result<Self> {
        Self::start_with(nats_url, db, prefix, definitions, None, delivery).await
    }

    /// Start with the HTTP API and console on a free port of 127.0.0.1
    /// (`http_addr`), accepting these tokens.
    pub async fn start_with_http(
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
        tokens: orchestrator::api::Tokens,
    ) -> Result<Self> {
        Self::start_with(NATS_URL, db, prefix, definitions, Some(tokens), Delivery::JetStream).await
    }

    async fn start_with(
        nats_url: &str,
        db: &TestDb,
        prefix: &str,
        definitions: PathBuf,
        http_tokens: Option<orchestrator::api::Tokens>,
        delivery: Delivery,
    ) -> Result<Self> {
        let config = ServeConfig {
            bus: skald_transport::BusOptions {
                delivery,
                ..skald_transport::BusOptions::plain(nats_url)
            },
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
            delivery,
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
        self.start_saga_waiting(saga_type, key, input, None).await
    }

    /// Start a saga over NATS; with `wait`, the answer comes once it has
    /// ended (or the wait ran out), with its outcome.
    pub async fn start_saga_waiting(
        &self,
        saga_type: &str,
        key: &str,
        input: Value,
        wait: Option<Duration>,
    ) -> Result<StartResponse> {
        let wait_ms = wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
        let body =
            serde_json::to_vec(&StartRequest { idempotency_key: key.into(), input, wait_ms })?;
        let msg = tokio::time::timeout(
            Duration::from_secs(10) + wait.unwrap_or_default(),
            self.client.request(self.ns.start_subject(saga_type), body.into()),
        )
        .await??;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// Wait until every saga listed has ended (terminal or parked).
    pub async fn wait_ended(&self, ids: &[String], within: Duration) -> Result<()> {
        skald_testkit::wait_until(within, async || {
            let mut open = 0;
            for id in ids {
                let loaded = self.store.load(id).await?.context("saga missing")?;
                if !is_ended(&loaded.row.status) {
                    open += 1;
                }
            }
            Ok(if open == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{open} of {} sagas still open", ids.len()))
            })
        })
        .await
    }

    /// Every saga listed ended as `status` (its history in the message when not).
    pub async fn assert_all_ended_as(&self, ids: &[String], status: &str) {
        for id in ids {
            let (ended, events) = self.history(id).await.unwrap();
            assert_eq!(ended, status, "saga {id}: {events:#?}");
        }
    }

    /// Wait until every reply consumer has settled every reply (acked or terminated).
    pub async fn wait_replies_settled(&self, within: Duration) -> Result<()> {
        let js = jetstream::new(self.client.clone());
        skald_testkit::wait_until(within, async || {
            let mut unsettled = 0;
            for p in 0..PARTITIONS {
                let mut consumer: jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(
                        skald_transport::consumers::reply_consumer_name(p),
                        self.ns.replies_stream(),
                    )
                    .await?;
                let info = consumer.info().await?;
                unsettled += info.num_ack_pending as u64 + info.num_pending;
            }
            Ok(if unsettled == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!("{unsettled} replies still unsettled"))
            })
        })
        .await
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
    let (commands, _) = skald_transport::streams::ensure_streams(&js, ns).await?;
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
