//! `payment serve` without the command line: migrate, then run the
//! participant and the reconciler until `shutdown`.
//!
//! The caller owns the connections (NATS, database), so tests run the same
//! code in-process. On shutdown the SDK drains the commands in flight (up to
//! its grace), the reconciler finishes the charge it is on, and `run` returns.

use crate::handlers::{Payments, participant};
use crate::provider::{Provider, ProviderConfig, ProviderError};
use crate::reconcile::{self, ReconcileConfig};
use crate::store::migration::PaymentSchema;
use sagas::protocol::Namespace;
use sea_orm::{DatabaseConnection, DbErr};
use skald_participant::{Config, SdkError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Everything `payment serve` needs.
#[derive(Debug)]
pub struct ServeConfig {
    pub nats: async_nats::Client,
    pub namespace: Namespace,
    /// The participant's database: the SDK's inbox and the `payments` table.
    pub db: DatabaseConnection,
    pub provider: ProviderConfig,
    pub reconcile: ReconcileConfig,
    /// Most commands handled at once by this replica (1..=256).
    pub in_flight_max: usize,
    /// On SQLite, most commands that share one commit (1..=256; 1: each
    /// commits alone). PostgreSQL ignores it.
    pub commit_group_max: usize,
    /// Where the provider's webhooks are taken (`POST /webhooks/psp`); `None`: not at all.
    pub webhook_listener: Option<tokio::net::TcpListener>,
    /// How commands arrive (`--delivery`; the orchestrator's must match).
    pub delivery: skald_participant::Delivery,
}

impl ServeConfig {
    /// A configuration with the default limits.
    #[must_use]
    pub fn new(
        nats: async_nats::Client,
        namespace: Namespace,
        db: DatabaseConnection,
        provider: ProviderConfig,
    ) -> Self {
        Self {
            nats,
            namespace,
            db,
            provider,
            reconcile: ReconcileConfig::default(),
            in_flight_max: skald_participant::IN_FLIGHT_MAX_DEFAULT,
            commit_group_max: 1,
            webhook_listener: None,
            delivery: skald_participant::Delivery::default(),
        }
    }
}

/// Why the payment participant could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(
        "the reconciler's grace ({grace_ms} ms) must be longer than the provider timeout ({timeout_ms} ms), or it could refund a charge whose call is still in flight"
    )]
    GraceTooShort { grace_ms: u128, timeout_ms: u128 },
    #[error("cannot create the payments table: {0}")]
    Migrate(#[source] DbErr),
    #[error(transparent)]
    Sdk(#[from] SdkError),
}

/// Run the payment participant until `shutdown` is cancelled.
///
/// # Errors
/// A bad provider URL, a failed migration, or the SDK stopping (streams,
/// invalid set-up).
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    if config.reconcile.grace <= config.provider.request_timeout {
        return Err(ServeError::GraceTooShort {
            grace_ms: config.reconcile.grace.as_millis(),
            timeout_ms: config.provider.request_timeout.as_millis(),
        });
    }
    let provider = Provider::new(&config.provider)?;
    skald_participant::migrate::migrate::<PaymentSchema>(&config.db)
        .await
        .map_err(ServeError::Migrate)?;
    // The reconciler reads the SDK's inbox: make sure it exists before the
    // first pass (the SDK migrates it again, harmlessly, when it starts).
    skald_participant::inbox::migration::migrate(&config.db)
        .await
        .map_err(|e| ServeError::Sdk(SdkError::Migrate(e)))?;
    let payments = Arc::new(Payments { db: config.db.clone(), provider });
    info!(provider = %config.provider.base_url, prefix = %config.namespace.prefix(), "starting the payment participant");

    let tasks = TaskTracker::new();
    let reconciler_stop = shutdown.child_token();
    {
        let payments = Arc::clone(&payments);
        let stop = reconciler_stop.clone();
        let reconcile = config.reconcile;
        tasks.spawn(async move { reconcile::run(&payments, reconcile, stop).await });
    }
    if let Some(listener) = config.webhook_listener {
        let app = crate::webhooks::app(
            Arc::clone(&payments),
            config.nats.clone(),
            config.namespace.clone(),
        );
        let stop = reconciler_stop.clone();
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "taking the provider's webhooks");
        }
        tasks.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = served.await {
                tracing::error!(error = %e, "the webhook receiver stopped");
            }
        });
    }
    tasks.close();

    let sdk = Config {
        in_flight_max: config.in_flight_max,
        commit_group_max: config.commit_group_max,
        delivery: config.delivery,
        ..Config::new(config.nats, config.namespace, config.db)
    };
    let result = participant(&payments).run(sdk, shutdown).await;
    // Also when the SDK stopped on its own (an error): stop the reconciler.
    reconciler_stop.cancel();
    tasks.wait().await;
    result.map_err(ServeError::from)
}
