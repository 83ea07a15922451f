//! The JetStream streams and the durable consumer a participant reads from.
//!
//! The orchestrator creates the same two streams with the same settings; both
//! sides call `get_or_create_stream`, so whichever starts first creates them and
//! the other finds them. Only JetStream features of nats-server 2.9 are used:
//! file-backed limits streams with a dedupe window, and a pull consumer with
//! explicit acks.
//!
//! Each participant service has ONE durable pull consumer, named after the
//! participant and filtered on its commands. Every replica of the service binds
//! the same consumer, so JetStream spreads the commands over the replicas.

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use sagas::protocol::{BODY_BYTES_MAX, Namespace};
use std::time::Duration;

/// How long a stream keeps a command or a reply.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long JetStream waits for an ack before it redelivers a command. The SDK
/// sends "in progress" while a handler runs, so only a dead replica's commands
/// wait this long.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Most commands delivered to all replicas of one participant and not yet acked.
pub const MAX_ACK_PENDING: i64 = 256;
/// Redeliveries are not bounded by JetStream: the orchestrator's step timeout
/// and retry policy are the real bound.
pub const MAX_DELIVER_UNBOUNDED: i64 = -1;

/// The stream all commands of the namespace go to.
#[must_use]
pub fn commands_stream_config(ns: &Namespace) -> stream::Config {
    stream_config(ns.commands_stream(), format!("{}.cmd.>", ns.prefix()))
}

/// The stream all replies of the namespace go to.
#[must_use]
pub fn replies_stream_config(ns: &Namespace) -> stream::Config {
    stream_config(ns.replies_stream(), format!("{}.reply.>", ns.prefix()))
}

/// Stream replicas, from `SKALD_STREAM_REPLICAS` (1 for development, 3 in a
/// NATS cluster; JetStream allows 1-5). Read by orchestrators and participants
/// alike, so one setting in a deployment's environment covers both.
pub fn stream_replicas() -> usize {
    match std::env::var("SKALD_STREAM_REPLICAS") {
        Err(_) => 1,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n @ 1..=5) => n,
            _ => {
                tracing::warn!(value = %v, "SKALD_STREAM_REPLICAS must be 1-5; using 1");
                1
            }
        },
    }
}

fn stream_config(name: String, subject: String) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subject],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: i32::try_from(BODY_BYTES_MAX).unwrap_or(i32::MAX),
        num_replicas: stream_replicas(),
        ..Default::default()
    }
}

/// The durable pull consumer shared by every replica of `participant`.
#[must_use]
pub fn consumer_config(ns: &Namespace, participant: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(participant.to_owned()),
        description: Some(format!("commands for the Skald participant `{participant}`")),
        filter_subject: ns.participant_filter(participant),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        max_deliver: MAX_DELIVER_UNBOUNDED,
        ..Default::default()
    }
}

/// Create the commands and replies streams if they do not exist yet.
///
/// # Errors
/// When JetStream cannot be reached or refuses a stream (for example when the
/// server runs without `-js`).
pub async fn ensure_streams(
    js: &Context,
    ns: &Namespace,
) -> Result<(jetstream::stream::Stream, jetstream::stream::Stream), StreamSetupError> {
    Ok((
        ensure_stream(js, commands_stream_config(ns)).await?,
        ensure_stream(js, replies_stream_config(ns)).await?,
    ))
}

async fn ensure_stream(
    js: &Context,
    config: stream::Config,
) -> Result<jetstream::stream::Stream, StreamSetupError> {
    let stream = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|source| StreamSetupError::Stream { stream, source })
}

/// The participant's durable consumer, created if missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the consumer.
pub async fn participant_consumer(
    commands: &jetstream::stream::Stream,
    ns: &Namespace,
    participant: &str,
) -> Result<PullConsumer, StreamSetupError> {
    commands.get_or_create_consumer(participant, consumer_config(ns, participant)).await.map_err(
        |source| StreamSetupError::Consumer {
            consumer: participant.to_owned(),
            stream: ns.commands_stream(),
            source,
        },
    )
}

/// Setting up a stream or the consumer failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamSetupError {
    #[error(
        "cannot create or find the JetStream stream `{stream}`: {source} \
         (is nats-server running with JetStream enabled, `nats-server -js`?)"
    )]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot create or find the durable consumer `{consumer}` on `{stream}`: {source}")]
    Consumer {
        consumer: String,
        stream: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let ns = Namespace::new("t1").unwrap();
        let commands = commands_stream_config(&ns);
        assert_eq!(commands.name, "T1_COMMANDS");
        assert_eq!(commands.subjects, vec!["t1.cmd.>".to_owned()]);
        assert_eq!(commands.max_message_size, 512 * 1024);
        let replies = replies_stream_config(&ns);
        assert_eq!(replies.name, "T1_REPLIES");
        assert_eq!(replies.subjects, vec!["t1.reply.>".to_owned()]);
        let consumer = consumer_config(&ns, "ledger");
        assert_eq!(consumer.durable_name.as_deref(), Some("ledger"));
        assert_eq!(consumer.filter_subject, "t1.cmd.ledger.>");
        assert_eq!(consumer.max_deliver, -1);
    }
}
