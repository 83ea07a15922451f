//! One command message, from JetStream delivery to ack (or, with direct
//! delivery, from core NATS to the reply; see [`Delivered`]).
//!
//! Parse and check the message (a malformed one is terminated: redelivering it
//! would never help), decide the answer ([`crate::execute`]), publish the
//! reply, and only then ack. Whatever could not be finished (a database error,
//! a reply JetStream did not acknowledge) is nak'ed with a delay: the
//! redelivery finds the stored reply, or runs again a handler whose writes
//! were rolled back, so it is cheap and has no second effect.
//!
//! While the command is being handled the SDK tells JetStream it is still in
//! progress, so a slow handler's command is not redelivered to another replica.
//!
//! Each command is handled in a `command` span carrying `saga_id`,
//! `command_id` and the `trace_id` of its `traceparent` header (the saga's
//! trace: the orchestrator derives it from the saga id), so a participant's
//! logs join the orchestrator's. The header is passed on to the reply.

use crate::execute::{Answer, Engine, execute};
use crate::reply;
use async_nats::jetstream::{self, AckKind};
use sagas::protocol::{BODY_BYTES_MAX, Command, HEADER_TRACEPARENT, Namespace, command_id};
use skald_transport::consumers::COMMAND_ACK_WAIT as ACK_WAIT;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

/// How often a command still being handled is reported "in progress".
const PROGRESS_EVERY: Duration = Duration::from_secs(ACK_WAIT.as_secs() / 3);

/// A command as it arrived.
pub(crate) enum Delivered {
    /// From the participant's durable consumer: acknowledged when answered.
    Stream(jetstream::Message),
    /// Directly, on core NATS: nothing to acknowledge; the orchestrator sends
    /// it again until its reply arrives.
    Direct(async_nats::Message),
}

impl Delivered {
    fn message(&self) -> &async_nats::Message {
        match self {
            Self::Stream(msg) => msg,
            Self::Direct(msg) => msg,
        }
    }

    /// How many times JetStream delivered it (1 when it came directly).
    fn delivered(&self) -> u32 {
        match self {
            Self::Stream(msg) => {
                msg.info().map_or(1, |info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            }
            Self::Direct(_) => 1,
        }
    }
}

/// Commands this replica is handling now (direct delivery): a copy sent
/// again meanwhile is dropped, as the first will be answered.
#[derive(Debug, Default)]
pub(crate) struct Busy(Mutex<HashSet<String>>);

impl Busy {
    /// Claim `msg_id`; `None` when it is already being handled.
    fn claim(&self, msg_id: String) -> Option<Claim<'_>> {
        let claimed = self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(msg_id.clone());
        // Built only when claimed: dropping a claim gives its id up.
        claimed.then(|| Claim { busy: self, msg_id })
    }
}

/// A claim on one command, given up when dropped.
struct Claim<'a> {
    busy: &'a Busy,
    msg_id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.busy.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.msg_id);
    }
}

/// Handles commands for one participant; shared by all in-flight commands.
pub(crate) struct Worker {
    pub engine: Engine,
    pub js: jetstream::Context,
    pub namespace: Namespace,
    pub redelivery_delay: Duration,
    /// Direct delivery's commands being handled.
    pub busy: Busy,
}

impl Worker {
    /// Handle one message, unless `abandon` fires first (shutdown grace spent):
    /// then the handler is dropped, its transaction rolls back, and the
    /// command goes back to JetStream for another replica, without a reply
    /// (a direct one is sent again by the orchestrator).
    pub async fn run(&self, msg: Delivered, abandon: CancellationToken) {
        let abandoned = tokio::select! {
            // Cancelled when abandoned: the handler future is dropped mid-way;
            // nothing it did is committed, replied or acked.
            () = self.handle(&msg) => false,
            // Cancelled when the message was handled: nothing to undo.
            () = abandon.cancelled() => true,
        };
        if abandoned {
            warn!(subject = %msg.message().subject, "shutting down: handler abandoned, command handed back");
            settle(&msg, AckKind::Nak(None)).await;
        }
    }

    async fn handle(&self, msg: &Delivered) {
        let delivered = msg.delivered();
        let command = match parse(&msg.message().payload, &self.namespace) {
            Ok(command) => command,
            Err(why) => {
                warn!(
                    participant = %self.engine.participant,
                    subject = %msg.message().subject,
                    delivered,
                    "malformed command terminated (JetStream will not redeliver it): {why}"
                );
                settle(msg, AckKind::Term).await;
                return;
            }
        };
        let _claim = match msg {
            Delivered::Stream(_) => None,
            Delivered::Direct(_) => {
                let msg_id = sagas::protocol::msg_id(&command.command_id, command.attempt);
                let Some(claim) = self.busy.claim(msg_id) else {
                    debug!(command_id = %command.command_id, "already being handled: this copy is dropped");
                    return;
                };
                Some(claim)
            }
        };
        let traceparent = msg
            .message()
            .headers
            .as_ref()
            .and_then(|headers| headers.get(HEADER_TRACEPARENT))
            .map(|value| value.as_str().to_owned());
        let trace_id = traceparent.as_deref().and_then(trace_id_of).unwrap_or_default();
        let span = info_span!(
            "command",
            participant = %self.engine.participant,
            saga_id = %command.saga_id,
            trace_id,
            command_id = %command.command_id,
            action = %command.action,
            attempt = command.attempt,
            delivered,
            traceparent = traceparent.as_deref().unwrap_or_default(),
        );
        self.answer(msg, &command, delivered, traceparent.as_deref()).instrument(span).await;
    }

    async fn answer(
        &self,
        msg: &Delivered,
        command: &Command,
        delivered: u32,
        traceparent: Option<&str>,
    ) {
        let answer = with_progress(msg, execute(&self.engine, command, delivered)).await;
        let outcome = match answer {
            Ok(Answer::Reply(outcome)) => outcome,
            Ok(Answer::Silent) => {
                debug!("handler chose not to answer: left unacknowledged");
                return;
            }
            Err(e) => {
                warn!(error = %e, "database error: nothing committed, command handed back");
                settle(msg, AckKind::Nak(Some(self.redelivery_delay))).await;
                return;
            }
        };
        debug!(?outcome, "answering");
        let published = match msg {
            Delivered::Stream(_) => reply::publish(&self.js, command, outcome, traceparent).await,
            Delivered::Direct(_) => {
                let client = self.js.client();
                reply::publish_direct(&client, &self.namespace, command, outcome, traceparent).await
            }
        };
        match published {
            Ok(()) => settle(msg, AckKind::Ack).await,
            Err(e) => {
                warn!(error = %e, "reply not published; the command will be redelivered");
                settle(msg, AckKind::Nak(Some(self.redelivery_delay))).await;
            }
        }
    }
}

/// Run `work`, telling JetStream every [`PROGRESS_EVERY`] that the message is
/// still being worked on.
async fn with_progress<F: Future>(msg: &Delivered, work: F) -> F::Output {
    if let Delivered::Direct(_) = msg {
        return work.await;
    }
    let mut work = std::pin::pin!(work);
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            // Never cancelled: the loop only ends when the work is done.
            out = &mut work => return out,
            // Cancelled when the work finishes first: no progress is owed.
            _ = ticks.tick() => settle(msg, AckKind::Progress).await,
        }
    }
}

/// Ack, nak, term or report progress; a failure only means JetStream will
/// redeliver, which the inbox makes harmless. Nothing for a direct command.
async fn settle(msg: &Delivered, kind: AckKind) {
    let Delivered::Stream(msg) = msg else { return };
    if let Err(e) = msg.ack_with(kind).await {
        warn!(error = %e, subject = %msg.subject, "could not send {kind:?} to JetStream");
    }
}

/// The trace id of a W3C `traceparent` header
/// (`<version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), if the
/// header is well formed; an invalid one is ignored, as W3C asks.
fn trace_id_of(traceparent: &str) -> Option<&str> {
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let not_zero = |s: &str| s.bytes().any(|b| b != b'0');
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; later versions may append more.
    let known_shape = version != "00" || parts.next().is_none();
    let valid = lower_hex(version, 2)
        && version != "ff"
        && known_shape
        && lower_hex(trace_id, 32)
        && not_zero(trace_id)
        && lower_hex(parent_id, 16)
        && not_zero(parent_id)
        && lower_hex(flags, 2);
    valid.then_some(trace_id)
}

/// Read and check a command body.
///
/// # Errors
/// Why the body can never be handled: too large, not a command, an id that is
/// not `<saga id>.<step>.<kind>`, or a reply subject outside the namespace.
pub(crate) fn parse(body: &[u8], namespace: &Namespace) -> Result<Command, String> {
    if body.len() > BODY_BYTES_MAX {
        return Err(format!("body is {} bytes, over the limit of {BODY_BYTES_MAX}", body.len()));
    }
    let command: Command =
        serde_json::from_slice(body).map_err(|e| format!("body is not a command: {e}"))?;
    let expected = command_id(&command.saga_id, &command.step, command.kind);
    if command.command_id != expected {
        return Err(format!(
            "command id `{}` is not `<saga id>.<step>.<kind>` (`{expected}`)",
            command.command_id
        ));
    }
    let prefix = format!("{}.reply.", namespace.prefix());
    let tail = command.reply_subject.strip_prefix(&prefix).unwrap_or_default();
    let valid_tail = !tail.is_empty()
        && tail.split('.').all(|token| {
            !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        });
    if !valid_tail {
        return Err(format!("reply subject `{}` is not under `{prefix}`", command.reply_subject));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagas::UnixMillis;
    use sagas::protocol::Kind;
    use serde_json::json;

    fn command() -> Command {
        Command {
            command_id: command_id("s-1", "hold", Kind::Do),
            saga_id: "s-1".into(),
            saga_type: "topup".into(),
            step: "hold".into(),
            kind: Kind::Do,
            action: "hold".into(),
            attempt: 1,
            payload: json!({}),
            deadline_unix_ms: UnixMillis(0),
            reply_subject: "skald.reply.3.ledger".into(),
        }
    }

    fn body(c: &Command) -> Vec<u8> {
        serde_json::to_vec(c).unwrap()
    }

    #[test]
    fn a_command_is_claimed_once_until_its_claim_is_dropped() {
        let busy = Busy::default();
        let first = busy.claim("a/1".into()).expect("free");
        assert!(busy.claim("a/1".into()).is_none(), "claimed already");
        assert!(busy.claim("a/1".into()).is_none(), "a refused claim does not give it up");
        let other = busy.claim("b/1".into()).expect("another command");
        drop(first);
        assert!(busy.claim("a/1".into()).is_some(), "given up with its claim");
        drop(other);
    }

    #[test]
    fn the_trace_id_is_read_from_a_valid_traceparent_only() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(trace_id_of(good), Some("0af7651916cd43dd8448eb211c80319c"));
        let future = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra";
        assert_eq!(trace_id_of(future), Some("0af7651916cd43dd8448eb211c80319c"));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_good_command_parses() {
        let ns = Namespace::default();
        assert_eq!(parse(&body(&command()), &ns).unwrap(), command());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let ns = Namespace::default();
        assert!(parse(b"{not json", &ns).unwrap_err().contains("not a command"));
        assert!(
            parse(&vec![b' '; BODY_BYTES_MAX + 1], &ns).unwrap_err().contains("over the limit")
        );
        let mut wrong_id = command();
        wrong_id.command_id = "s-1.other.do".into();
        assert!(parse(&body(&wrong_id), &ns).unwrap_err().contains("command id"));
        for subject in ["other.reply.3", "skald.reply.", "skald.reply.*", "skald.reply.a..b"] {
            let mut c = command();
            c.reply_subject = subject.into();
            assert!(parse(&body(&c), &ns).unwrap_err().contains("reply subject"), "{subject}");
        }
    }
}
