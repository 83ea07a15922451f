//! `ledger serve`: run the `ledger` participant until `shutdown` (SIGTERM or
//! Ctrl-C from the command line).
//!
//! Connects to NATS and the database (saying which URL failed and how to
//! start it), migrates the ledger's tables, then hands the handlers to the
//! SDK. On a signal the SDK stops pulling, lets the commands in flight
//! finish, and `serve` returns.

use crate::handlers;
use crate::store::Store;
use anyhow::{Context, Result};
use sagas::protocol::Namespace;
use skald_participant::Config;
use skald_participant::service::{self, redact};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bus: skald_participant::BusOptions,
    pub database_url: String,
    pub namespace: Namespace,
    /// Most commands handled at once (1..=256).
    pub concurrency: usize,
    /// On SQLite, most commands that share one commit (1..=256; 1: none shared).
    pub commit_group_max: usize,
}

/// Serve saga commands until `shutdown` is cancelled.
///
/// # Errors
/// NATS or the database unreachable, a failed migration, or the SDK refusing
/// to start (for example an out-of-range concurrency).
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<()> {
    let nats = service::connect_nats(&config.bus, "ledger").await?;
    let store = Store::connect(&config.database_url).await?;
    info!(
        prefix = config.namespace.prefix(),
        database = %redact(&config.database_url),
        "serving the ledger participant"
    );
    let sdk = Config {
        in_flight_max: config.concurrency,
        commit_group_max: config.commit_group_max,
        delivery: config.bus.delivery,
        ..Config::new(nats, config.namespace, store.db().clone())
    };
    handlers::participant().run(sdk, shutdown).await.context("the ledger participant stopped")?;
    info!("stopped");
    Ok(())
}
