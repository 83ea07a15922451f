//! The JetStream streams of a namespace: commands, replies, and the
//! announcements of sagas' ends.
//!
//! Both the orchestrator and the participants call [`ensure_streams`], so
//! whichever starts first creates them, with these settings, and the other
//! finds them; the orchestrator alone publishes ends and creates their stream
//! ([`ensure_ended_stream`]). File-backed limits streams with a dedupe window: only
//! features of nats-server 2.9.

use crate::TransportError;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use sagas::protocol::{BODY_BYTES_MAX, Namespace};
use std::time::Duration;

/// How long a stream keeps a command or a reply.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The environment variable that sets the streams' replicas.
pub const REPLICAS_ENV: &str = "SKALD_STREAM_REPLICAS";

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

/// The stream every saga's end is announced on (`<prefix>.ended.<type>`).
#[must_use]
pub fn ended_stream_config(ns: &Namespace) -> stream::Config {
    stream_config(ns.ended_stream(), format!("{}.ended.>", ns.prefix()))
}

/// Stream replicas, from `SKALD_STREAM_REPLICAS` (1 for development, 3 in a
/// NATS cluster; JetStream allows 1-5). Read by orchestrators and participants
/// alike, so one setting in a deployment's environment covers both.
#[must_use]
pub fn stream_replicas() -> usize {
    match std::env::var(REPLICAS_ENV) {
        Err(_) => 1,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n @ 1..=5) => n,
            _ => {
                tracing::warn!(value = %v, "{REPLICAS_ENV} must be 1-5; using 1");
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

/// Create the commands and replies streams if they do not exist yet.
///
/// # Errors
/// When JetStream cannot be reached or refuses a stream (for example when the
/// server runs without `-js`).
pub async fn ensure_streams(
    js: &Context,
    ns: &Namespace,
) -> Result<(jetstream::stream::Stream, jetstream::stream::Stream), TransportError> {
    Ok((
        ensure_stream(js, commands_stream_config(ns)).await?,
        ensure_stream(js, replies_stream_config(ns)).await?,
    ))
}

/// Create the stream of sagas' ends if it does not exist yet.
///
/// # Errors
/// As [`ensure_streams`].
pub async fn ensure_ended_stream(
    js: &Context,
    ns: &Namespace,
) -> Result<jetstream::stream::Stream, TransportError> {
    ensure_stream(js, ended_stream_config(ns)).await
}

async fn ensure_stream(
    js: &Context,
    config: stream::Config,
) -> Result<jetstream::stream::Stream, TransportError> {
    let stream = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|source| TransportError::Stream { stream, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let ns = Namespace::new("t1").unwrap();
        let commands = commands_stream_config(&ns);
        assert_eq!(commands.name, "T1_COMMANDS");
        assert_eq!(commands.subjects, vec!["t1.cmd.>".to_owned()]);
        assert_eq!(commands.max_message_size, 512 * 1024);
        assert_eq!(commands.duplicate_window, DUPLICATE_WINDOW);
        let replies = replies_stream_config(&ns);
        assert_eq!(replies.name, "T1_REPLIES");
        assert_eq!(replies.subjects, vec!["t1.reply.>".to_owned()]);
        let ended = ended_stream_config(&ns);
        assert_eq!(ended.name, "T1_ENDED");
        assert_eq!(ended.subjects, vec!["t1.ended.>".to_owned()]);
    }
}
