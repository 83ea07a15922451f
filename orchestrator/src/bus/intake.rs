//! Reply intake: one durable pull consumer per partition.
//!
//! A reply is acknowledged only after its events are committed. Malformed
//! replies, replies the machine refuses (unknown command, attempt never
//! sent), replies published on another partition's subject than their
//! saga's and replies whose subject names another participant than the one
//! the command went to are terminated, logged and counted
//! (`skald_replies_terminated`); a
//! store failure, or a partition this instance has just lost, naks the reply
//! so it comes back later (to the partition's owner).
//!
//! Between the stream and the driver sits an optional [`ReplyGate`]: the seam
//! where the fault suite loses, holds and repeats replies. Without one (the
//! release build) every reply is applied once.

use crate::engine::driver::{DriveError, Driver};
use crate::metrics::TerminatedReply;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use futures::future::BoxFuture;
use sagas::protocol::{BODY_BYTES_MAX, Reply};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Replies of one partition handled at once.
pub const CONCURRENCY_PER_PARTITION: usize = 32;
/// Delay before a reply that hit a store error is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a [`ReplyGate`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Apply the reply, as usual.
    Once,
    /// Apply it twice (a duplicate delivery).
    Twice,
    /// Acknowledge it without applying it: it is lost.
    Lost,
}

/// Decides, before the driver sees a reply, whether it arrives at all.
pub trait ReplyGate: Send + Sync + std::fmt::Debug {
    fn admit<'a>(&'a self, reply: &'a Reply) -> BoxFuture<'a, Admit>;
}

/// Consume `partition`'s replies until `shutdown`.
pub async fn run(
    driver: Driver,
    gate: Option<Arc<dyn ReplyGate>>,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    partition: i32,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read replies; retrying");
                if !super::paused(&shutdown, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let work = messages.take_until(shutdown.cancelled()).for_each_concurrent(
            CONCURRENCY_PER_PARTITION,
            |msg| {
                let driver = driver.clone();
                let gate = gate.clone();
                async move {
                    match msg {
                        Ok(msg) => handle(&driver, gate.as_deref(), partition, msg).await,
                        Err(e) => tracing::warn!(error = %e, "reply stream error"),
                    }
                }
            },
        );
        // Cancelled by shutdown: `take_until` stops taking new replies and
        // the ones in flight finish (their acks follow their commits).
        work.await;
        // The stream ended (NATS trouble): pull again after a pause.
        if !super::paused(&shutdown, backoff).await {
            return;
        }
    }
}

async fn handle(
    driver: &Driver,
    gate: Option<&dyn ReplyGate>,
    partition: i32,
    msg: jetstream::Message,
) {
    let kind = match judge(driver, gate, partition, &msg.payload, &msg.subject).await {
        Verdict::Recorded { .. } | Verdict::Lost => AckKind::Ack,
        Verdict::Terminated { .. } => AckKind::Term,
        Verdict::Again => AckKind::Nak(Some(RETRY_DELAY)),
    };
    ack(&msg, kind).await;
}

/// What became of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its events are committed (or it repeated one already recorded).
    Recorded { msg_id: String },
    /// It can never be applied; `msg_id` when it names a command its sender
    /// was asked for (the saga moved on, or is gone), so that command is
    /// answered for good.
    Terminated { msg_id: Option<String> },
    /// The fault gate lost it on its way in.
    Lost,
    /// Not recorded this time (a store error, a partition being lost): it
    /// must come again.
    Again,
}

/// Check and apply one reply received on `subject` (a stream subject:
/// `<prefix>.reply.<partition>.<sender>`).
pub(crate) async fn judge(
    driver: &Driver,
    gate: Option<&dyn ReplyGate>,
    partition: i32,
    payload: &[u8],
    subject: &str,
) -> Verdict {
    let terminate = |reason: TerminatedReply, msg_id: Option<String>| {
        driver.metrics().reply_terminated(reason);
        Verdict::Terminated { msg_id }
    };
    let outcome = if payload.len() > BODY_BYTES_MAX {
        Err(format!("reply of {} bytes is over the limit", payload.len()))
    } else {
        serde_json::from_slice::<Reply>(payload).map_err(|e| format!("malformed reply: {e}"))
    };
    let reply = match outcome {
        Ok(r) => r,
        Err(problem) => {
            tracing::warn!(%subject, %problem, "terminating reply");
            return terminate(TerminatedReply::Malformed, None);
        }
    };
    // The consumer's filter lets only `<prefix>.reply.<partition>.<sender>` in.
    let Some(sender) = driver.namespace().reply_sender(subject) else {
        tracing::warn!(%subject, "terminating reply on a subject that names no sender");
        return terminate(TerminatedReply::Malformed, None);
    };
    let saga_id = reply.command_id.split('.').next().unwrap_or_default().to_owned();
    let msg_id = sagas::protocol::msg_id(&reply.command_id, reply.attempt);
    if let Some(gate) = gate {
        match gate.admit(&reply).await {
            Admit::Once => {}
            Admit::Lost => return Verdict::Lost,
            Admit::Twice => {
                if let Err(e) = driver.handle_reply(&saga_id, reply.clone(), sender).await {
                    tracing::info!(%saga_id, error = %e, "the first of a repeated reply was refused");
                }
            }
        }
    }
    match driver.handle_reply(&saga_id, reply, sender).await {
        Ok(_) => Verdict::Recorded { msg_id },
        Err(e @ DriveError::WrongSender { .. }) => {
            // Only a misbehaving or hostile publisher answers for another.
            tracing::warn!(%saga_id, %subject, error = %e, "terminating reply");
            terminate(TerminatedReply::WrongSender, None)
        }
        Err(e @ DriveError::Transition(_)) => {
            tracing::warn!(%saga_id, error = %e, "terminating reply the saga cannot take");
            terminate(TerminatedReply::Refused, Some(msg_id))
        }
        Err(e @ DriveError::UnknownSaga { .. }) => {
            tracing::warn!(%saga_id, error = %e, "terminating reply for no known saga");
            terminate(TerminatedReply::UnknownSaga, Some(msg_id))
        }
        Err(DriveError::NotOwner { partition: sagas_partition })
            if sagas_partition != partition =>
        {
            // Only a misbehaving or hostile publisher puts it here: redelivering
            // it would keep it pending on this partition's consumer forever.
            tracing::warn!(
                %saga_id, %subject, sagas_partition,
                "terminating reply published on another partition's subject"
            );
            terminate(TerminatedReply::WrongPartition, None)
        }
        Err(
            e @ (DriveError::UnknownDefinition { .. }
            | DriveError::Store(crate::store::StoreError::Corrupt { .. })),
        ) => {
            // Retrying cannot help: the saga needs an operator. The step's
            // timeout brings the answer back as a retry once it is repaired.
            tracing::error!(%saga_id, error = %e, "terminating reply: the saga cannot be loaded");
            terminate(TerminatedReply::Unloadable, None)
        }
        Err(e) => {
            tracing::warn!(%saga_id, error = %e, "reply not recorded; it will come again");
            Verdict::Again
        }
    }
}

async fn ack(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot acknowledge a reply; it will be redelivered");
    }
}
