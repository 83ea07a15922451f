//! Direct delivery (`--delivery direct`): commands and replies on core NATS
//! subjects outside the streams (`<prefix>.direct.…`).
//!
//! Nothing is stored on the bus, so the outbox is the only record of a
//! command until its reply is recorded:
//! - the relay publishes a row and keeps it (in the table and in memory),
//!   sending it again with growing pauses until it is answered
//!   ([`crate::bus::relay`]);
//! - this module's intake subscribes to each owned partition's direct reply
//!   subject, applies each reply like the JetStream intake does, and tells
//!   the relay which commands are answered for good ([`Answered`]); the relay
//!   then deletes their rows.
//!
//! A reply lost on the way (no subscriber, a slow consumer, a partition
//! changing hands) costs one re-send: the participant answers a command it
//! already handled from its inbox, without running the handler again.

use crate::bus::intake::{self, ReplyGate, Verdict};
use crate::engine::driver::Driver;
use futures::StreamExt;
use sagas::protocol::Namespace;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Most answered commands waiting for the relay to forget them; beyond it an
/// answer is dropped, and its command is sent once more and answered again.
pub const ANSWERED_MAX: usize = 65_536;

/// Commands whose replies are recorded (by `<command id>/<attempt>`), on
/// their way from the intake to the relay.
#[derive(Debug, Default)]
pub struct Answered {
    ids: Mutex<Vec<String>>,
}

impl Answered {
    /// Note that the command of `msg_id` is answered.
    pub fn push(&self, msg_id: String) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() < ANSWERED_MAX {
            ids.push(msg_id);
        }
    }

    /// Everything noted since the last call.
    #[must_use]
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.ids.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Apply `partition`'s direct replies until `shutdown`.
pub async fn run(
    driver: Driver,
    gate: Option<Arc<dyn ReplyGate>>,
    client: async_nats::Client,
    answered: Arc<Answered>,
    partition: i32,
    shutdown: CancellationToken,
) {
    let ns = driver.namespace().clone();
    let subject = ns.direct(&ns.partition_replies(u32::try_from(partition).unwrap_or(0)));
    let mut backoff = std::time::Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let replies = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %subject, "cannot subscribe to replies; retrying");
                if !super::paused(&shutdown, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                continue;
            }
        };
        let work = replies.take_until(shutdown.cancelled()).for_each_concurrent(
            intake::CONCURRENCY_PER_PARTITION,
            |msg| {
                let (driver, gate, answered, ns) =
                    (driver.clone(), gate.clone(), answered.clone(), &ns);
                async move { handle(&driver, gate.as_deref(), &answered, ns, partition, msg).await }
            },
        );
        // Cancelled by shutdown: no new reply is taken; those in flight finish.
        // A reply not taken is answered again after the command's next re-send.
        work.await;
        // The subscription ended (the connection closed): subscribe again.
        if !super::paused(&shutdown, backoff).await {
            return;
        }
    }
}

async fn handle(
    driver: &Driver,
    gate: Option<&dyn ReplyGate>,
    answered: &Answered,
    ns: &Namespace,
    partition: i32,
    msg: async_nats::Message,
) {
    let Some(subject) = ns.undirect(&msg.subject) else { return };
    match intake::judge(driver, gate, partition, &msg.payload, &subject).await {
        Verdict::Recorded { msg_id } | Verdict::Terminated { msg_id: Some(msg_id) } => {
            answered.push(msg_id);
        }
        // Lost, or not recorded: the command is sent again and answered again.
        Verdict::Terminated { msg_id: None } | Verdict::Lost | Verdict::Again => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_taken_once_and_bounded() {
        let answered = Answered::default();
        answered.push("a/1".into());
        answered.push("b/2".into());
        assert_eq!(answered.take(), ["a/1", "b/2"]);
        assert!(answered.take().is_empty());
        for i in 0..ANSWERED_MAX + 5 {
            answered.push(format!("c/{i}"));
        }
        assert_eq!(answered.take().len(), ANSWERED_MAX);
    }
}
