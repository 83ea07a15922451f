//! The outbox relay: publishes committed commands to JetStream, then forgets them.
//!
//! Rows are deleted only after JetStream acknowledged them. Each carries
//! `Nats-Msg-Id: <command id>/<attempt>`, so publishing a row twice (a crash
//! between the ack and the delete) is dropped by JetStream's dedupe window.
//! When NATS is down the relay keeps the rows and retries with backoff.
//!
//! Each command also carries a W3C `traceparent` header derived from the row's
//! saga id and message id ([`crate::trace::traceparent`]): the saga's trace,
//! a span per attempt. Nothing about it is stored.

use crate::driver::Driver;
use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sagas::protocol::{HEADER_MSG_ID, HEADER_TRACEPARENT};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Longest wait between retries while NATS is unreachable.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the outbox is checked when nothing wakes the relay.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for the acknowledgements of one round of publishes.
const ROUND_ACKS_MAX: Duration = Duration::from_secs(5);
/// How long a shutdown waits for the outbox to drain.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// Run until `shutdown`, then drain what is left for a short while.
pub async fn run(driver: Driver, js: jetstream::Context, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = tokio::select! {
            // Cancelled mid-round: unacknowledged rows stay in the outbox; the
            // drain below (bounded) or the next start publishes them.
            () = shutdown.cancelled() => break,
            r = round(&driver, &js) => r,
        };
        match result {
            Ok(0) => {
                backoff = Duration::from_millis(100);
                tokio::select! {
                    // Cancelled: nothing in flight, the outbox keeps the rows.
                    () = shutdown.cancelled() => break,
                    () = driver.relay_wake.notified() => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot publish");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let drain = async {
        while let Ok(n) = round(&driver, &js).await {
            if n == 0 {
                break;
            }
        }
    };
    if tokio::time::timeout(DRAIN_MAX, drain).await.is_err() {
        tracing::warn!("outbox not drained at shutdown; the next start publishes the rest");
    }
}

/// Publish one batch; returns how many rows were published and deleted.
async fn round(driver: &Driver, js: &jetstream::Context) -> Result<usize, String> {
    let rows = driver
        .store()
        .outbox_batch(crate::store::OUTBOX_BATCH_MAX, driver.owned_filter().as_deref())
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let rows = crate::faults::reorder(rows); // fault injection: off unless SKALD_FAULTS is set
    // Pipeline: send every publish first, then collect the acks.
    let mut pending = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for row in &rows {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, row.msg_id.as_str());
        let traceparent = crate::trace::traceparent(&row.saga_id, &row.msg_id);
        headers.insert(HEADER_TRACEPARENT, traceparent.as_str());
        let span = tracing::info_span!(
            "publish",
            saga_id = %row.saga_id,
            trace_id = %crate::trace::trace_id(&row.saga_id),
            msg_id = %row.msg_id,
        );
        crate::trace::link(&span, &row.saga_id);
        // `js.publish_with_headers`, unless fault injection (SKALD_FAULTS) drops, dups or holds it.
        let publish = crate::faults::publish(js, row.subject.clone(), headers, row.body.clone());
        match publish.instrument(span).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => {
                first_error = Some(e.to_string());
                break;
            }
        }
    }
    // All acks are awaited together under one deadline: acks lost with a
    // connection cost one deadline per round, not one timeout per row.
    let mut acks: FuturesUnordered<_> =
        pending.into_iter().map(|(id, ack)| async move { (id, ack.await) }).collect();
    let mut done = Vec::with_capacity(acks.len());
    let deadline = tokio::time::sleep(ROUND_ACKS_MAX);
    tokio::pin!(deadline);
    while !acks.is_empty() {
        tokio::select! {
            // Cancelled: the rows not yet acknowledged stay and are published
            // again next round (JetStream drops the duplicates by message id).
            () = &mut deadline => {
                first_error.get_or_insert_with(|| "acknowledgements timed out".into());
                break;
            }
            Some((id, result)) = acks.next() => match result {
                Ok(_) => done.push(id),
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            },
        }
    }
    driver.store().outbox_delete(&done).await.map_err(|e| e.to_string())?;
    match first_error {
        Some(e) if done.is_empty() => Err(e),
        _ => Ok(done.len()),
    }
}
