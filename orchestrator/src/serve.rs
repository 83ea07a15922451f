//! `skald serve`: the orchestrator process.
//!
//! Wires the store, the definitions, NATS, the outbox relay, the reply intake
//! of every partition, the timers and the start handler, then runs until the
//! shutdown token fires (SIGTERM or Ctrl-C in the binary): intake stops,
//! in-flight writes finish, the relay drains, and `run` returns.

use crate::bus::{self, BusError};
use crate::driver::Driver;
use crate::registry::{Registry, RegistryError};
use crate::store::{Store, StoreError};
use crate::{intake, relay, starter, timers};
use async_nats::jetstream;
use sagas::protocol::Namespace;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a shutdown waits for NATS to take what was sent.
const SHUTDOWN_FLUSH_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Most partitions a cluster may be created with.
pub const PARTITIONS_MAX: u32 = 1_024;

/// Everything `skald serve` is configured with.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://skald.db")]
    pub database_url: String,
    /// Subject and stream prefix (tests use their own to stay apart).
    #[arg(long, env = "SKALD_PREFIX", default_value = "skald")]
    pub prefix: String,
    /// Directory of saga definitions (*.yaml) to serve.
    #[arg(long, env = "SKALD_DEFINITIONS", default_value = "sagas/definitions")]
    pub definitions: PathBuf,
    /// Number of partitions sagas are spread over (fixed for the life of a cluster).
    #[arg(long, env = "SKALD_PARTITIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(PARTITIONS_MAX)))]
    pub partitions: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid prefix: {0}")]
    Prefix(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot subscribe to start requests: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Set-up done; what `run` needs to start its tasks.
#[derive(Debug)]
pub struct Orchestrator {
    pub driver: Driver,
    pub client: async_nats::Client,
    ns: Namespace,
    replies: jetstream::stream::Stream,
    starts: async_nats::Subscriber,
    partitions: u32,
}

impl Orchestrator {
    /// Connect to the database and NATS, load definitions, create streams.
    pub async fn connect(config: &ServeConfig) -> Result<Self, ServeError> {
        Self::connect_with(config, None).await
    }

    /// As [`Orchestrator::connect`], serving `definitions` instead of the directory.
    pub async fn connect_with(
        config: &ServeConfig,
        definitions: Option<Vec<sagas::Definition>>,
    ) -> Result<Self, ServeError> {
        let ns = Namespace::new(&config.prefix).map_err(ServeError::Prefix)?;
        let store = Store::connect(&config.database_url).await?;
        let registry = Arc::new(match definitions {
            Some(defs) => Registry::with_store(&store, defs).await?,
            None => Registry::load(&store, &config.definitions).await?,
        });
        let client = bus::connect(&config.nats_url, "skald-orchestrator").await?;
        let js = jetstream::new(client.clone());
        let (_commands, replies) = bus::ensure_streams(&js, &ns).await?;
        let driver = Driver::new(store, registry, ns.clone(), config.partitions);
        // Subscribed before `connect` returns: a start sent after it is answered.
        let starts = starter::subscribe(&client, &ns).await?;
        client.flush().await.map_err(|e| BusError::Flush(e.to_string()))?;
        Ok(Self { driver, client, ns, replies, starts, partitions: config.partitions })
    }

    /// Run every task until `shutdown`, then wait for them to finish.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let tasks = TaskTracker::new();
        let js = jetstream::new(self.client.clone());
        // The relay outlives intake so the last decisions still get published.
        let relay_stop = CancellationToken::new();
        tasks.spawn(relay::run(self.driver.clone(), js, relay_stop.clone()));
        let intake_tasks = TaskTracker::new();
        for p in 0..self.partitions {
            let consumer = bus::reply_consumer(&self.replies, &self.ns, p).await?;
            intake_tasks.spawn(intake::run(self.driver.clone(), consumer, shutdown.clone()));
        }
        intake_tasks.spawn(timers::run(self.driver.clone(), shutdown.clone()));
        let starter = tokio::spawn(starter::run(
            self.driver.clone(),
            self.client.clone(),
            self.starts,
            shutdown.clone(),
            intake_tasks.clone(),
        ));
        tracing::info!(partitions = self.partitions, "orchestrator running");
        shutdown.cancelled().await;
        tracing::info!("shutting down: finishing in-flight work");
        if let Err(e) = starter.await {
            tracing::warn!(error = %e, "start handler ended abnormally");
        }
        intake_tasks.close();
        intake_tasks.wait().await;
        relay_stop.cancel();
        tasks.close();
        tasks.wait().await;
        // Bounded: while NATS is unreachable a flush would wait for it forever.
        match tokio::time::timeout(SHUTDOWN_FLUSH_MAX, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot flush NATS at shutdown"),
            Err(_) => tracing::warn!(
                "NATS unreachable at shutdown; committed commands stay in the outbox"
            ),
        }
        Ok(())
    }
}
