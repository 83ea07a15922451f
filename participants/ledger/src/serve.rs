//! `ledger serve`: run the `ledger` participant until SIGTERM or Ctrl-C.
//!
//! Connects to NATS and the database (saying which URL failed and how to
//! start it), migrates the ledger's tables, then hands the handlers to the
//! SDK. On a signal the SDK stops pulling, lets the commands in flight
//! finish, and `serve` returns.

use crate::handlers;
use crate::store::{Store, redact};
use anyhow::{Context, Result};
use sagas::protocol::Namespace;
use skald_participant::Config;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long to wait for NATS to answer a connect.
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub nats_url: String,
    pub database_url: String,
    pub namespace: Namespace,
    /// Most commands handled at once (1..=256).
    pub concurrency: usize,
}

/// Serve saga commands until `shutdown` is cancelled.
///
/// # Errors
/// NATS or the database unreachable, a failed migration, or the SDK refusing
/// to start (for example an out-of-range concurrency).
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<()> {
    let nats = async_nats::ConnectOptions::new()
        .connection_timeout(NATS_CONNECT_TIMEOUT)
        .name("ledger")
        .connect(&config.nats_url)
        .await
        .with_context(|| {
            format!(
                "cannot reach NATS at {}\n  hint: start it with JetStream enabled \
                 (`nats-server -js`, or `docker compose up -d nats`), or point --nats-url / \
                 NATS_URL at it",
                config.nats_url
            )
        })?;
    let store = Store::connect(&config.database_url).await?;
    info!(
        prefix = config.namespace.prefix(),
        database = %redact(&config.database_url),
        "serving the ledger participant"
    );
    let sdk = Config {
        in_flight_max: config.concurrency,
        ..Config::new(nats, config.namespace, store.db().clone())
    };
    handlers::participant().run(sdk, shutdown).await.context("the ledger participant stopped")?;
    info!("stopped");
    Ok(())
}

/// Cancel `shutdown` on SIGTERM or SIGINT (Ctrl-C).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        // Either arm finishing is the signal; the other is dropped unneeded.
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received: finishing the commands in flight");
    shutdown.cancel();
}
