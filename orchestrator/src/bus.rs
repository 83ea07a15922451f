//! The NATS side: connecting, and creating the streams and consumers Skald uses.
//!
//! NATS is the transport, not the record. Streams are created idempotently
//! (whoever starts first creates them; participants use the same settings) and
//! only JetStream features of nats-server 2.9 are used.

use async_nats::jetstream::{self, consumer::pull, stream};
use sagas::protocol::{BODY_BYTES_MAX, Namespace};
use std::time::Duration;

/// How long JetStream remembers message ids to drop re-published duplicates.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// How long commands and replies are kept in their streams.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a reply may be unacknowledged before JetStream redelivers it.
pub const REPLY_ACK_WAIT: Duration = Duration::from_secs(30);
/// Most unacknowledged replies per partition consumer.
pub const REPLY_ACK_PENDING_MAX: i64 = 1_024;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(
        "cannot connect to NATS at {url}: {source}. Is nats-server running with JetStream? Start it with \
         `nats-server -js` (or `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server`)"
    )]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("cannot create JetStream stream {stream}: {message}. Is JetStream enabled (`-js`)?")]
    Stream { stream: String, message: String },
    #[error("cannot reach NATS: {0}")]
    Flush(String),
    #[error("cannot create consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
}

/// Connect to NATS, failing fast when the server is not there.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| BusError::Connect { url: url.to_owned(), source })
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
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DEDUPE_WINDOW,
        max_message_size: i32::try_from(BODY_BYTES_MAX).unwrap_or(i32::MAX),
        num_replicas: stream_replicas(),
        ..Default::default()
    }
}

/// Create (or find) the commands and replies streams of a namespace.
pub async fn ensure_streams(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<(stream::Stream, stream::Stream), BusError> {
    let make = |name: String, subject: String| async move {
        js.get_or_create_stream(stream_config(name.clone(), subject))
            .await
            .map_err(|e| BusError::Stream { stream: name, message: e.to_string() })
    };
    let commands = make(ns.commands_stream(), format!("{}.cmd.>", ns.prefix())).await?;
    let replies = make(ns.replies_stream(), format!("{}.reply.>", ns.prefix())).await?;
    Ok((commands, replies))
}

/// The durable consumer that reads one partition's replies.
pub async fn reply_consumer(
    replies: &stream::Stream,
    ns: &Namespace,
    partition: u32,
) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let name = format!("replies-{partition}");
    replies
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: ns.reply_subject(partition),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: REPLY_ACK_WAIT,
                max_ack_pending: REPLY_ACK_PENDING_MAX,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::Consumer { consumer: name, message: e.to_string() })
}
