//! The sampler: every [`SAMPLE_INTERVAL`] it reads the outbox's size and age
//! and the lag of the reply consumers of the partitions this instance owns,
//! and every [`STUCK_EVERY`] samples the number of sagas in each stuck class,
//! and sets the gauges. A sample that fails or takes too long is skipped (the
//! gauges keep their last value) and logged at debug level.

use super::Metrics;
use crate::store::Store;
use async_nats::jetstream::consumer::{Consumer, pull};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the sampler reads the outbox and the reply consumers.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Samples between two counts of the stuck sagas (30 s).
pub const STUCK_EVERY: u32 = 6;
/// Longest wait for one sample (a query or a consumer info) before it is skipped.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consumer infos asked for at once by the sampler.
const SAMPLE_CONCURRENCY: usize = 8;

/// What the sampler reads and where it writes.
#[derive(Clone)]
pub struct SamplerParts {
    pub store: Store,
    pub metrics: Metrics,
    /// The partitions this instance drives now (another owner reports the rest).
    pub owned: Arc<dyn Fn() -> Vec<i32> + Send + Sync>,
    /// Each partition's reply consumer.
    pub consumers: Vec<(u32, Consumer<pull::Config>)>,
}

impl std::fmt::Debug for SamplerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplerParts")
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}

/// Sample every [`SAMPLE_INTERVAL`] until `shutdown`.
pub async fn run(parts: SamplerParts, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: u32 = 0;
    loop {
        tokio::select! {
            // Cancelled: no sample is in flight; nothing to finish.
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            // Cancelled mid-sample: the queries are read-only, dropping them is harmless.
            () = shutdown.cancelled() => return,
            () = sample(&parts) => {}
        }
        if samples.is_multiple_of(STUCK_EVERY) {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sample_stuck(&parts) => {}
            }
        }
        samples = samples.wrapping_add(1);
    }
}

/// How many sagas are in each stuck class, across the cluster: "no owner"
/// is judged by the leases alive now, as the API judges it.
async fn sample_stuck(parts: &SamplerParts) {
    let store = &parts.store;
    let now = store.clock().now_db();
    let live = match tokio::time::timeout(SAMPLE_TIMEOUT, store.live_partitions(now)).await {
        Ok(Ok(live)) => live,
        Ok(Err(e)) => return tracing::debug!(error = %e, "cannot read the leases"),
        Err(_) => return tracing::debug!("reading the leases timed out"),
    };
    for class in crate::store::StuckClass::ALL {
        let filter = crate::store::ListFilter { stuck: Some(class), ..Default::default() };
        match tokio::time::timeout(SAMPLE_TIMEOUT, store.count_matching(&filter, now, &live)).await
        {
            Ok(Ok(n)) => parts.metrics.set_stuck(class, n),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot count stuck sagas"),
            Err(_) => tracing::debug!("counting stuck sagas timed out"),
        }
    }
}

async fn sample(parts: &SamplerParts) {
    let metrics = &parts.metrics;
    match tokio::time::timeout(SAMPLE_TIMEOUT, parts.store.outbox_stats()).await {
        Ok(Ok((rows, oldest_ms))) => {
            let now_ms = parts.store.clock().now_db();
            let age = oldest_ms.map(|t| {
                Duration::from_millis(u64::try_from(now_ms.saturating_sub(t)).unwrap_or(0))
            });
            metrics.set_outbox(rows, age);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot sample the outbox"),
        Err(_) => tracing::debug!("sampling the outbox timed out"),
    }
    // Only the partitions this instance drives: another owner reports the rest.
    let owned = (parts.owned)();
    let owned = &owned;
    futures::stream::iter(&parts.consumers)
        .for_each_concurrent(SAMPLE_CONCURRENCY, |(partition, consumer)| async move {
            if !owned.contains(&i32::try_from(*partition).unwrap_or(-1)) {
                metrics.set_reply_consumer_lag(*partition, 0);
                return;
            }
            match tokio::time::timeout(SAMPLE_TIMEOUT, consumer.get_info()).await {
                Ok(Ok(info)) => metrics.set_reply_consumer_lag(*partition, info.num_pending),
                Ok(Err(e)) => {
                    tracing::debug!(partition, error = %e, "cannot sample the reply consumer");
                }
                Err(_) => tracing::debug!(partition, "sampling the reply consumer timed out"),
            }
        })
        .await;
}
