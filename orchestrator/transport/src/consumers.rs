//! The durable pull consumers: one per participant service on the commands
//! stream (every replica binds the same one, so JetStream spreads the
//! commands over them), and one per partition on the replies stream (read
//! only by that partition's owner).

use crate::TransportError;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use sagas::protocol::Namespace;
use std::time::Duration;

/// How long JetStream waits for a participant's ack before it redelivers a
/// command. The SDK sends "in progress" while a handler runs, so only a dead
/// replica's commands wait this long.
pub const COMMAND_ACK_WAIT: Duration = Duration::from_secs(30);
/// Most commands delivered to all replicas of one participant and not yet acked.
pub const COMMAND_ACK_PENDING_MAX: i64 = 256;
/// Redeliveries are not bounded by JetStream: the orchestrator's step timeout
/// and retry policy are the real bound.
pub const MAX_DELIVER_UNBOUNDED: i64 = -1;
/// How long a reply may be unacknowledged before JetStream redelivers it.
pub const REPLY_ACK_WAIT: Duration = Duration::from_secs(30);
/// Most unacknowledged replies per partition consumer.
pub const REPLY_ACK_PENDING_MAX: i64 = 1_024;

/// The durable pull consumer shared by every replica of `participant`.
#[must_use]
pub fn participant_config(ns: &Namespace, participant: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(participant.to_owned()),
        description: Some(format!("commands for the Skald participant `{participant}`")),
        filter_subject: ns.participant_filter(participant),
        ack_policy: AckPolicy::Explicit,
        ack_wait: COMMAND_ACK_WAIT,
        max_ack_pending: COMMAND_ACK_PENDING_MAX,
        max_deliver: MAX_DELIVER_UNBOUNDED,
        ..Default::default()
    }
}

/// The durable consumer of one partition's replies.
#[must_use]
pub fn reply_config(ns: &Namespace, partition: u32) -> pull::Config {
    pull::Config {
        durable_name: Some(reply_consumer_name(partition)),
        filter_subject: ns.partition_replies(partition),
        ack_policy: AckPolicy::Explicit,
        ack_wait: REPLY_ACK_WAIT,
        max_ack_pending: REPLY_ACK_PENDING_MAX,
        ..Default::default()
    }
}

/// The name of the durable consumer of `partition`'s replies.
#[must_use]
pub fn reply_consumer_name(partition: u32) -> String {
    // `replies-<partition>` filtered on `<prefix>.reply.<partition>` before
    // reply subjects named their sender; a new name, so an upgraded namespace
    // does not find the old consumer with the old filter.
    format!("partition-{partition}-replies")
}

/// The participant's durable consumer, created if missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the consumer.
pub async fn participant_consumer(
    commands: &Stream,
    ns: &Namespace,
    participant: &str,
) -> Result<PullConsumer, TransportError> {
    create(commands, participant_config(ns, participant), ns.commands_stream()).await
}

/// The durable consumer of one partition's replies, created if missing.
///
/// # Errors
/// When JetStream cannot be reached or refuses the consumer.
pub async fn reply_consumer(
    replies: &Stream,
    ns: &Namespace,
    partition: u32,
) -> Result<PullConsumer, TransportError> {
    create(replies, reply_config(ns, partition), ns.replies_stream()).await
}

async fn create(
    stream: &Stream,
    config: pull::Config,
    stream_name: String,
) -> Result<PullConsumer, TransportError> {
    let consumer = config.durable_name.clone().unwrap_or_default();
    stream
        .get_or_create_consumer(&consumer, config)
        .await
        .map_err(|source| TransportError::Consumer { consumer, stream: stream_name, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn consumers_follow_the_namespace() {
        let ns = Namespace::new("t1").unwrap();
        let consumer = participant_config(&ns, "ledger");
        assert_eq!(consumer.durable_name.as_deref(), Some("ledger"));
        assert_eq!(consumer.filter_subject, "t1.cmd.ledger.>");
        assert_eq!(consumer.max_deliver, -1);
        let replies = reply_config(&ns, 3);
        assert_eq!(replies.durable_name.as_deref(), Some("partition-3-replies"));
        assert_eq!(replies.filter_subject, "t1.reply.3.*");
        assert_eq!(replies.max_ack_pending, REPLY_ACK_PENDING_MAX);
    }
}
