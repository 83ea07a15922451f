//! The reconciler: gives back charges that may have happened although the
//! saga was told they did not.
//!
//! Why it is needed. A charge whose call timed out (the provider may have
//! charged) is answered `retry`, and nothing goes into the SDK's inbox. If
//! every retry ends the same way, the saga marks the step *unknown* and sends
//! its `refund`. But the SDK answers an `undo` whose `do` has no inbox row
//! with a tombstone (`ok {"tombstone": true}`) *without calling the refund
//! handler*, and refuses the `do` from then on. The same happens when the `do`
//! was refused after a call (a handler panic retried too often): the `undo` is
//! answered `nothing_to_undo`. In both cases the saga ends `compensated` while
//! the provider may hold the customer's money.
//!
//! What it does. Every `interval`, it takes the charges still `pending` (the
//! intent was recorded, no result) whose `do` the SDK has answered with a
//! refusal (so no attempt will ever run again) and whose last call is older
//! than `grace` (longer than a call can take, so no call with that key is in
//! flight). For each it records a refund intent under the `undo` command id
//! and asks the provider to refund *by reference* (the charge id was never
//! learnt), with that id as the idempotency key:
//! - refunded → refund row `succeeded`, charge row `refunded`;
//! - 404, no such charge → refund row `nothing_to_refund`, charge `not_charged`;
//! - refused (or 409) → charge row `stuck`, logged as an error: an operator
//!   must look;
//! - no definite answer → left `pending`, tried again next pass.
//!
//! Several replicas may reconcile the same row: they send the same key and
//! body, and the provider answers both from its idempotency store.

use crate::api::RefundRequest;
use crate::handlers::Payments;
use crate::outcome::{self, Action, Verdict};
use crate::store::{self, Intent, Kind, Model, Status, StoreError};
use sea_orm::TransactionTrait;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Default for [`ReconcileConfig::interval`].
pub const INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Default for [`ReconcileConfig::grace`].
pub const GRACE_DEFAULT: Duration = Duration::from_secs(30);
/// Default for [`ReconcileConfig::batch_max`].
pub const BATCH_MAX_DEFAULT: u64 = 64;

/// How often and how much the reconciler works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Pause between passes.
    pub interval: Duration,
    /// How long a charge must have been quiet: more than the provider
    /// client's request timeout, so that no call is still in flight.
    pub grace: Duration,
    /// Most charges settled per pass.
    pub batch_max: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self { interval: INTERVAL_DEFAULT, grace: GRACE_DEFAULT, batch_max: BATCH_MAX_DEFAULT }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub refunded: usize,
    pub not_charged: usize,
    pub stuck: usize,
    pub left_pending: usize,
}

/// Run passes until `shutdown`. A pass in progress finishes the charge it is
/// on, then stops.
pub async fn run(payments: &Payments, config: ReconcileConfig, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            // Cancelled while waiting: nothing is in progress.
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.interval) => {}
        }
        match pass(payments, config, &shutdown).await {
            Ok(report) if report != PassReport::default() => info!(?report, "reconciled charges"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reconciliation pass failed; trying again next pass"),
        }
    }
}

/// One pass: settle the charges that are due.
///
/// # Errors
/// A database error; the rows not yet settled are tried next pass.
pub async fn pass(
    payments: &Payments,
    config: ReconcileConfig,
    shutdown: &CancellationToken,
) -> Result<PassReport, StoreError> {
    let grace_ms = i64::try_from(config.grace.as_millis()).unwrap_or(i64::MAX);
    let before_ms = store::now_ms().saturating_sub(grace_ms);
    pass_before(payments, before_ms, config.batch_max, shutdown).await
}

/// One pass over the due charges whose last call was before `before_ms`
/// (Unix ms), at most `batch_max`: [`pass`] with the caller's idea of when
/// no call can still be in flight (the simulation, whose calls never
/// overlap, gives `i64::MAX`).
///
/// # Errors
/// A database error; the rows not yet settled are tried next pass.
pub async fn pass_before(
    payments: &Payments,
    before_ms: i64,
    batch_max: u64,
    shutdown: &CancellationToken,
) -> Result<PassReport, StoreError> {
    let due = store::pending_answered_charges(&payments.db, before_ms, batch_max).await?;
    let mut report = PassReport::default();
    for charge in due {
        if shutdown.is_cancelled() {
            break;
        }
        match settle_charge(payments, &charge).await? {
            Status::Refunded => report.refunded += 1,
            Status::NotCharged => report.not_charged += 1,
            Status::Stuck => report.stuck += 1,
            _ => report.left_pending += 1,
        }
    }
    Ok(report)
}

/// Refund one charge by reference; returns the charge's new status.
async fn settle_charge(payments: &Payments, charge: &Model) -> Result<Status, StoreError> {
    let Some(step_prefix) = charge.command_id.strip_suffix(".do") else {
        error!(key = %charge.command_id, "a charge key that is not a `do` command id; skipped");
        return Ok(Status::Pending);
    };
    let refund_key = format!("{step_prefix}.undo");
    let intent = Intent {
        key: &refund_key,
        kind: Kind::Refund,
        saga_id: &charge.saga_id,
        amount: charge.amount,
        currency: &charge.currency,
        reference: &charge.reference,
    };
    store::record_intent(&payments.db, intent).await?;
    let request = RefundRequest {
        charge_id: None,
        reference: Some(charge.reference.clone()),
        amount: charge.amount,
    };
    let answer = payments.provider.refund(&refund_key, &request).await;
    let (refund_status, charge_status, provider_id, code) = match outcome::verdict(
        Action::Refund,
        answer,
    ) {
        Verdict::Done(receipt) => (Status::Succeeded, Status::Refunded, Some(receipt.id), None),
        Verdict::NothingToRefund { .. } => {
            (Status::NothingToRefund, Status::NotCharged, None, None)
        }
        Verdict::Failed { code, message } => {
            error!(
                key = %charge.command_id, reference = %charge.reference, %code, %message,
                "the provider refused to refund a charge whose saga step was given up: \
                 an operator must settle it by hand"
            );
            (Status::Refused, Status::Stuck, None, Some(code))
        }
        Verdict::Retry { code, message } | Verdict::Unsent { code, message } => {
            warn!(key = %charge.command_id, %code, %message, "refund of a given-up charge not settled; trying again next pass");
            return Ok(Status::Pending);
        }
    };
    let tx = payments.db.begin().await?;
    store::settle(&tx, &refund_key, refund_status, provider_id.as_deref(), code.as_deref()).await?;
    store::settle(&tx, &charge.command_id, charge_status, None, code.as_deref()).await?;
    tx.commit().await?;
    info!(
        key = %charge.command_id, reference = %charge.reference,
        status = charge_status.as_str(), "settled a charge whose saga step was given up"
    );
    Ok(charge_status)
}
