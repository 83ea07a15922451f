//! `skald serve`: the orchestrator process.
//!
//! Wires the store, the definitions, NATS, the outbox relay, the reply intake
//! of every partition, the timers and the start handler, then runs until the
//! shutdown token fires (SIGTERM or Ctrl-C in the binary): intake stops,
//! in-flight writes finish, the relay drains, and `run` returns.

use crate::api::{ApiState, Tokens};
use crate::bus::relay::{self, RelayParts};
use crate::bus::{Wire, direct, intake, signals, starter};
use crate::cluster::partitions::Ownership;
use crate::cluster::takeover::take_over;
use crate::engine::driver::Driver;
use crate::engine::registry::{Registry, RegistryError};
use crate::metrics::sampler::{self, SamplerParts};
use crate::store::{Store, StoreError};
use crate::timers;
use async_nats::jetstream;
use sagas::protocol::Namespace;
use skald_transport::TransportError;
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
    /// NATS server (with JetStream), credentials and TLS.
    #[command(flatten)]
    pub bus: skald_transport::BusOptions,
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
    /// Address of the HTTP API, console and metrics; `off` for none. Binds
    /// 127.0.0.1 by default: expose it on purpose (`0.0.0.0:8080`), behind TLS.
    #[arg(long, env = "SKALD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// YAML file of API tokens (name, role, sha256 of the token, optional
    /// expires_at). Without it every authenticated route answers 401.
    /// `skald token new` makes a token and its line.
    #[arg(long, env = "SKALD_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// This instance's name, shown as the owner of its partitions
    /// (default: host name and process id).
    #[arg(long, env = "SKALD_INSTANCE")]
    pub instance: Option<String>,
    /// How long a partition lease lasts unless renewed; an instance that dies
    /// loses its partitions to the others after about this long.
    #[arg(long, env = "SKALD_LEASE_TTL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(500..=60_000))]
    pub lease_ttl_ms: u64,
    /// Archive sagas that ended longer ago than this (`30d`, `12h`; at least
    /// 1m) to compressed JSON lines in --archive-dir and remove them from the
    /// database. Off by default: every saga is kept.
    #[arg(long, env = "SKALD_RETENTION", value_name = "AGE", value_parser = parse_retention)]
    pub retention: Option<std::time::Duration>,
    /// Where retention writes its archive: one `YYYY-MM-DD.jsonl.gz` per day
    /// the sagas ended.
    #[arg(long, env = "SKALD_ARCHIVE_DIR", default_value = "skald-archive")]
    pub archive_dir: PathBuf,
}

/// `--retention`: a duration of at least [`crate::retention::RETENTION_MIN`].
fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30d or 12h: {e}"))?;
    if d < crate::retention::RETENTION_MIN {
        return Err(format!("`{text}` is under the shortest retention, 1m"));
    }
    Ok(d)
}

impl ServeConfig {
    /// The configuration `skald serve` would have with no flags and no environment.
    #[must_use]
    pub fn defaults() -> Self {
        Self {
            bus: skald_transport::BusOptions::plain(skald_transport::connect::DEFAULT_URL),
            database_url: "sqlite://skald.db".to_owned(),
            prefix: "skald".to_owned(),
            definitions: PathBuf::from("sagas/definitions"),
            partitions: 16,
            http_addr: "127.0.0.1:8080".to_owned(),
            api_tokens_file: None,
            instance: None,
            lease_ttl_ms: 5_000,
            retention: None,
            archive_dir: PathBuf::from("skald-archive"),
        }
    }

    /// The instance name: configured, or host name and process id.
    #[must_use]
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "skald".to_owned());
            let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
            format!("{host}-{}-{tag}", std::process::id())
        })
    }
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
    Bus(#[from] TransportError),
    #[error(transparent)]
    Http(#[from] crate::api::HttpError),
    #[error(transparent)]
    Tokens(#[from] crate::api::auth::TokensError),
    #[error("{0}")]
    SecondOnSqlite(String),
    #[error("cannot subscribe to start requests: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[cfg(feature = "faults")]
    #[error(transparent)]
    Faults(#[from] crate::bus::faulty::FaultsError),
}

/// Set-up done; what `run` needs to start its tasks.
#[derive(Debug)]
pub struct Orchestrator {
    pub driver: Driver,
    pub client: async_nats::Client,
    ns: Namespace,
    /// The replies stream (JetStream delivery); direct delivery uses none.
    replies: Option<jetstream::stream::Stream>,
    starts: async_nats::Subscriber,
    /// Events for waiting sagas (`<prefix>.signal.*`).
    events: async_nats::Subscriber,
    partitions: u32,
    /// The HTTP API's state and bound listener, unless `--http-addr off`.
    http: Option<(ApiState, tokio::net::TcpListener)>,
    pub ownership: Ownership,
    instance: String,
    lease_ttl: std::time::Duration,
    http_addr_text: Option<String>,
    /// Where commands go out and how replies come in (tests may swap it).
    pub wire: Wire,
    /// What `--retention` archives, when it is on.
    retention: Option<crate::retention::Retention>,
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
        // Read first: a bad setting stops the start before anything else is touched.
        #[cfg(feature = "faults")]
        let faults = crate::bus::faulty::from_env()?;
        #[cfg(not(feature = "faults"))]
        let faults = ();
        let store = Store::connect(&config.database_url).await?;
        let registry = Arc::new(match definitions {
            Some(defs) => Registry::with_store(&store, defs).await?,
            None => Registry::load(&store, &config.definitions).await?,
        });
        let client = config.bus.connect("skald-orchestrator").await?;
        let js = jetstream::new(client.clone());
        let wire = wire(Wire::new(config.bus.delivery, client.clone(), ns.clone()), faults);
        // Commands and replies go through streams only with JetStream delivery;
        // the ends stream is used by both.
        let replies = match config.bus.delivery {
            skald_transport::Delivery::JetStream => {
                Some(skald_transport::streams::ensure_streams(&js, &ns).await?.1)
            }
            skald_transport::Delivery::Direct => None,
        };
        skald_transport::streams::ensure_ended_stream(&js, &ns).await?;
        let instance = config.instance_name();
        let lease_ttl = std::time::Duration::from_millis(config.lease_ttl_ms);
        store.ensure_cluster(config.partitions).await?;
        if store.backend() == sea_orm::DbBackend::Sqlite {
            crate::cluster::partitions::single_on_sqlite(&store, &instance, lease_ttl)
                .await
                .map_err(ServeError::SecondOnSqlite)?;
        }
        let ownership = Ownership::cluster(&instance);
        let driver = Driver::new(store, registry, ns.clone(), config.partitions)
            .with_ownership(ownership.clone());
        // Subscribed before `connect` returns: a start sent after it is answered.
        let starts = starter::subscribe(&client, &ns).await?;
        let events = signals::subscribe(&client, &ns).await?;
        client.flush().await.map_err(|e| TransportError::Flush(e.to_string()))?;
        let http = if config.http_addr == "off" {
            None
        } else {
            let tokens = match &config.api_tokens_file {
                Some(path) => Tokens::load(path)?,
                None => Tokens::none(),
            };
            if tokens.is_empty() {
                tracing::warn!(
                    "no API tokens configured (--api-tokens-file): every API route but \
                     /healthz and /readyz answers 401"
                );
            }
            let state = ApiState::new(driver.clone(), tokens, ownership.clone(), instance.clone())
                .with_nats(client.clone());
            Some((state, crate::api::bind(&config.http_addr).await?))
        };
        Ok(Self {
            driver,
            client,
            wire,
            ns,
            replies,
            starts,
            events,
            partitions: config.partitions,
            ownership,
            http_addr_text: http
                .as_ref()
                .and_then(|(_, l)| l.local_addr().ok())
                .map(|a| a.to_string()),
            http,
            instance,
            lease_ttl,
            retention: config
                .retention
                .map(|keep| crate::retention::Retention { keep, dir: config.archive_dir.clone() }),
        })
    }

    /// The address the HTTP API listens on, if it is on.
    #[must_use]
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().and_then(|(_, l)| l.local_addr().ok())
    }

    /// Serve the API on `listener` instead of the one bound from the config
    /// (the quickstart binds its usual port itself, falling back to any free
    /// port). Nothing changes when the API is off.
    pub fn set_listener(&mut self, listener: tokio::net::TcpListener) {
        if let Some((_, bound)) = &mut self.http {
            *bound = listener;
        }
    }

    /// Replace the API's tokens (the quickstart's generated admin token).
    pub fn set_tokens(&mut self, tokens: Tokens) {
        if let Some((state, _)) = &self.http {
            state.tokens.replace(tokens);
        }
    }

    /// The API's tokens, to load again while it runs (`None` when the API is off).
    #[must_use]
    pub fn tokens(&self) -> Option<crate::api::auth::SharedTokens> {
        self.http.as_ref().map(|(state, _)| state.tokens.clone())
    }

    /// This instance's name in the cluster.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Run every task until `shutdown`, then wait for them to finish.
    ///
    /// The membership loop decides which partitions this instance drives; for
    /// each one it takes, that partition's reply intake starts and the
    /// commands its open sagas wait on are queued again; for each one it
    /// loses or hands over, the intake stops. At shutdown intake stops first,
    /// then the leases are released (another instance takes over at once),
    /// then the relay drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let tasks = TaskTracker::new();
        // The relay outlives intake so the last decisions still get published.
        let relay_stop = CancellationToken::new();
        let relay_parts = RelayParts {
            store: self.driver.store().clone(),
            ownership: self.ownership.clone(),
            publisher: self.wire.publisher.clone(),
            answered: self.wire.answered.clone(),
        };
        tasks.spawn(relay::run(relay_parts, relay_stop.clone()));
        let mut consumers = std::collections::HashMap::new();
        let mut sampled = Vec::with_capacity(self.partitions as usize);
        // Direct delivery has no replies stream and reads no reply consumer.
        if let Some(replies) = &self.replies {
            for p in 0..self.partitions {
                let consumer =
                    skald_transport::consumers::reply_consumer(replies, &self.ns, p).await?;
                sampled.push((p, consumer.clone()));
                consumers.insert(i32::try_from(p).unwrap_or(0), consumer);
            }
        }
        let ownership = self.ownership.clone();
        let sampler_parts = SamplerParts {
            store: self.driver.store().clone(),
            metrics: self.driver.metrics().clone(),
            owned: std::sync::Arc::new(move || ownership.owned()),
            consumers: sampled,
        };
        tasks.spawn(sampler::run(sampler_parts, shutdown.clone()));
        let intake_tasks = TaskTracker::new();
        intake_tasks.spawn(timers::run(self.driver.clone(), shutdown.clone()));
        if let Some(retention) = self.retention.clone() {
            tracing::info!(keep = ?retention.keep, dir = %retention.dir.display(), "retention on");
            tasks.spawn(crate::retention::run(self.driver.clone(), retention, shutdown.clone()));
        }
        tasks.spawn(signals::run(
            self.driver.clone(),
            self.client.clone(),
            self.events,
            shutdown.clone(),
            intake_tasks.clone(),
        ));
        let starter = tokio::spawn(starter::run(
            self.driver.clone(),
            self.client.clone(),
            self.starts,
            shutdown.clone(),
            intake_tasks.clone(),
        ));
        let http_stop = CancellationToken::new();
        if let Some((mut state, listener)) = self.http {
            // Requests waiting for a saga's end answer at once on shutdown.
            state.stopping = http_stop.clone();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "HTTP API listening");
            }
            tasks.spawn(crate::api::serve(listener, crate::api::app(state), http_stop.clone()));
        }
        let member_stop = CancellationToken::new();
        let (changes_tx, mut changes) = tokio::sync::mpsc::channel(1_024);
        let membership = crate::cluster::partitions::Membership {
            store: self.driver.store().clone(),
            instance: self.instance.clone(),
            partitions: self.partitions,
            ownership: self.ownership.clone(),
            lease_ttl: self.lease_ttl,
            http_addr: self.http_addr_text.clone(),
            metrics: self.driver.metrics().clone(),
        };
        let members = tokio::spawn(crate::cluster::partitions::run(
            membership,
            changes_tx,
            member_stop.clone(),
        ));
        tracing::info!(instance = %self.instance, partitions = self.partitions, "orchestrator running");
        let mut intakes: std::collections::HashMap<i32, CancellationToken> = Default::default();
        loop {
            let change = tokio::select! {
                // Cancelled: intakes are stopped below, leases released after.
                () = shutdown.cancelled() => break,
                c = changes.recv() => c,
            };
            match change {
                Some(crate::cluster::partitions::Change::Acquired { partition, epoch }) => {
                    let stop = shutdown.child_token();
                    let gate = self.wire.replies.clone();
                    if let Some(answered) = &self.wire.answered {
                        intake_tasks.spawn(direct::run(
                            self.driver.clone(),
                            gate,
                            self.client.clone(),
                            answered.clone(),
                            partition,
                            stop.clone(),
                        ));
                    } else {
                        let Some(consumer) = consumers.get(&partition).cloned() else { continue };
                        intake_tasks.spawn(intake::run(
                            self.driver.clone(),
                            gate,
                            consumer,
                            partition,
                            stop.clone(),
                        ));
                    }
                    if let Some(old) = intakes.insert(partition, stop.clone()) {
                        old.cancel();
                    }
                    intake_tasks.spawn(take_over(self.driver.clone(), partition, epoch, stop));
                }
                Some(crate::cluster::partitions::Change::Lost { partition }) => {
                    if let Some(stop) = intakes.remove(&partition) {
                        stop.cancel();
                    }
                    self.driver.forget_partition(partition);
                }
                None => break,
            }
        }
        tracing::info!("shutting down: finishing in-flight work");
        if let Err(e) = starter.await {
            tracing::warn!(error = %e, "start handler ended abnormally");
        }
        intake_tasks.close();
        intake_tasks.wait().await;
        // Hand the partitions over only after the last writes under their leases.
        member_stop.cancel();
        // Drain the channel so the loop's last `Lost` messages never block it.
        let drain = tokio::spawn(async move { while changes.recv().await.is_some() {} });
        if let Err(e) = members.await {
            tracing::warn!(error = %e, "membership loop ended abnormally");
        }
        drain.abort();
        relay_stop.cancel();
        http_stop.cancel();
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

/// The transport: JetStream, wrapped in fault injection when this is a test
/// build (`faults` feature) and `SKALD_FAULTS` is set.
#[cfg(feature = "faults")]
fn wire(wire: Wire, faults: Option<crate::bus::faulty::Faults>) -> Wire {
    match faults {
        Some(faults) => {
            let (publisher, replies) = faults.wrap(wire.publisher);
            Wire { publisher, replies: Some(replies), answered: wire.answered }
        }
        None => wire,
    }
}

#[cfg(not(feature = "faults"))]
fn wire(wire: Wire, (): ()) -> Wire {
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_an_age_of_at_least_a_minute() {
        assert_eq!(parse_retention("30d"), Ok(std::time::Duration::from_secs(30 * 24 * 3600)));
        assert!(parse_retention("59s").unwrap_err().contains("shortest retention"));
        assert!(parse_retention("soon").unwrap_err().contains("not a duration"));
    }
}
