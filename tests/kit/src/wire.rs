//! The orchestrator's end of the wire, played by a test: a namespace of the
//! test's own on the test NATS server, commands published as the orchestrator
//! publishes them (`Nats-Msg-Id` per attempt), and the participant's replies
//! read back one at a time. The namespace's streams are deleted on drop.
//!
//! NATS: `SKALD_TEST_NATS_URL`, by default [`NATS_URL`] (JetStream on).
//!
//! The methods that talk to NATS after set-up are test assertions: they panic
//! with what was expected (a reply within [`REPLY_WAIT`], an answer to the
//! command asked) rather than return errors every test would unwrap.

#![allow(
    clippy::panic,
    clippy::expect_used,
    reason = "assertion helpers: a failure here fails the calling test with its message"
)]

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures::StreamExt as _;
use sagas::UnixMillis;
use sagas::protocol::{Command, HEADER_MSG_ID, Kind, Namespace, Reply, command_id, msg_id};
use std::time::Duration;

/// The NATS server tests use when `SKALD_TEST_NATS_URL` is unset.
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// How long a test waits for a reply before it fails.
pub const REPLY_WAIT: Duration = Duration::from_secs(30);
/// The durable consumer the test reads replies with.
const REPLIES_CONSUMER: &str = "test";

/// The NATS server of the tests: `SKALD_TEST_NATS_URL`, else [`NATS_URL`].
#[must_use]
pub fn nats_url() -> String {
    std::env::var("SKALD_TEST_NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned())
}

/// A namespace of the test's own (`t<token>`), so no test sees another's messages.
#[must_use]
pub fn namespace() -> Namespace {
    Namespace::new(&format!("t{}", crate::token())).expect("a token makes a valid prefix")
}

/// Delete a namespace's streams (and so their consumers) from NATS.
pub async fn delete_streams(client: &async_nats::Client, ns: &Namespace) {
    let js = jetstream::new(client.clone());
    for stream in [ns.commands_stream(), ns.replies_stream(), ns.ended_stream()] {
        let _ = js.delete_stream(stream).await;
    }
}

/// The orchestrator's side of the wire to one participant.
pub struct OrchestratorSide {
    pub ns: Namespace,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    /// The participant commands are sent to.
    pub participant: String,
    replies: pull::Stream,
}

impl std::fmt::Debug for OrchestratorSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorSide")
            .field("ns", &self.ns)
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl OrchestratorSide {
    /// How this side sends commands and reads replies: through the streams.
    /// A participant under test must be given the same (`--delivery`).
    pub const DELIVERY: skald_transport::Delivery = skald_transport::Delivery::JetStream;

    /// Connect to the test NATS server on a fresh namespace whose streams
    /// `ensure_streams` creates (pass the transport's function, so the
    /// streams have the settings the services use), and listen for replies.
    ///
    /// # Errors
    /// When NATS cannot be reached or the streams or consumer cannot be made.
    pub async fn open<F, T, E>(participant: &str, ensure_streams: F) -> anyhow::Result<Self>
    where
        F: AsyncFnOnce(&jetstream::Context, &Namespace) -> Result<T, E>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let url = nats_url();
        let nats = async_nats::connect(&url).await.with_context(|| {
            format!("NATS must run at {url} with JetStream (`nats-server -js`)")
        })?;
        let js = jetstream::new(nats.clone());
        let ns = namespace();
        ensure_streams(&js, &ns).await?;
        let replies = js
            .get_stream(ns.replies_stream())
            .await?
            .get_or_create_consumer(
                REPLIES_CONSUMER,
                pull::Config {
                    durable_name: Some(REPLIES_CONSUMER.into()),
                    filter_subject: format!("{}.reply.>", ns.prefix()),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await?
            .messages()
            .await?;
        Ok(Self { ns, nats, js, participant: participant.to_owned(), replies })
    }

    /// A command as the orchestrator builds it (its id from saga, step and
    /// kind), with payload `{"saga": saga}`, answered on partition 0's reply
    /// subject. Change what a test needs with struct update syntax.
    #[must_use]
    pub fn command(
        &self,
        saga: &str,
        step: &str,
        kind: Kind,
        action: &str,
        attempt: u32,
    ) -> Command {
        Command {
            command_id: command_id(saga, step, kind),
            saga_id: saga.into(),
            saga_type: "test".into(),
            step: step.into(),
            kind,
            action: action.into(),
            attempt,
            payload: serde_json::json!({ "saga": saga }),
            deadline_unix_ms: UnixMillis(u64::MAX / 2),
            reply_subject: self.ns.reply_subject(0, &self.participant),
        }
    }

    /// Publish a command as the orchestrator does (`Nats-Msg-Id` per attempt).
    pub async fn send(&self, command: &Command) {
        self.send_with(command, HeaderMap::new()).await;
    }

    /// [`OrchestratorSide::send`] with more headers (a `traceparent`).
    pub async fn send_with(&self, command: &Command, mut headers: HeaderMap) {
        headers.insert(HEADER_MSG_ID, msg_id(&command.command_id, command.attempt).as_str());
        let body = serde_json::to_vec(command).expect("a command serializes");
        let subject = self.ns.command_subject(&self.participant, &command.action);
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await
            .expect("the command is published")
            .await
            .expect("JetStream stores the command");
    }

    /// Publish any bytes on an action's subject (a malformed command).
    pub async fn send_raw(&self, action: &str, body: &[u8]) {
        let subject = self.ns.command_subject(&self.participant, action);
        self.js
            .publish(subject, body.to_vec().into())
            .await
            .expect("the bytes are published")
            .await
            .expect("JetStream stores the bytes");
    }

    /// The next reply message, acked; its headers are the caller's to read.
    ///
    /// # Panics
    /// When none comes within [`REPLY_WAIT`].
    pub async fn reply_message(&mut self) -> jetstream::Message {
        let msg = tokio::time::timeout(REPLY_WAIT, self.replies.next())
            .await
            .unwrap_or_else(|_| panic!("no reply within {REPLY_WAIT:?}"))
            .expect("the replies consumer is open")
            .expect("a reply message");
        msg.ack().await.expect("the reply is acked");
        msg
    }

    /// The next reply.
    ///
    /// # Panics
    /// When none comes within [`REPLY_WAIT`] or it is not a reply.
    pub async fn reply(&mut self) -> Reply {
        let msg = self.reply_message().await;
        serde_json::from_slice(&msg.payload).expect("a reply body")
    }

    /// Send a command and wait for its reply (replies come one at a time here).
    ///
    /// # Panics
    /// When the next reply answers another command or attempt.
    pub async fn ask(&mut self, command: &Command) -> Reply {
        self.send(command).await;
        let reply = self.reply().await;
        assert_eq!(
            (reply.command_id.as_str(), reply.attempt),
            (command.command_id.as_str(), command.attempt),
            "the reply answers the command asked"
        );
        reply
    }

    /// True when no reply arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.replies.next()).await.is_err()
    }

    /// The participant's command consumer as JetStream sees it (named after
    /// the participant, as the SDK names it).
    pub async fn consumer_info(&self) -> jetstream::consumer::Info {
        self.js
            .get_stream(self.ns.commands_stream())
            .await
            .expect("the commands stream exists")
            .consumer_info(&self.participant)
            .await
            .expect("the participant's consumer exists")
    }
}

impl Drop for OrchestratorSide {
    fn drop(&mut self) {
        // On a thread with a runtime of its own: Drop cannot await, and the
        // test's runtime may be shutting down.
        let ns = self.ns.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(nats) = async_nats::connect(nats_url()).await {
                    delete_streams(&nats, &ns).await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sagas::protocol::Outcome;

    #[test]
    fn namespaces_differ_and_commands_carry_their_ids() {
        let (a, b) = (namespace(), namespace());
        assert_ne!(a.prefix(), b.prefix());
        assert!(a.prefix().starts_with('t'));
    }

    /// A reply published on the namespace's reply subject is read back; a
    /// command is stored on the participant's subject with its message id.
    #[tokio::test]
    async fn commands_go_out_and_replies_come_back() {
        let streams = async |js: &jetstream::Context, ns: &Namespace| {
            for (name, subject) in [
                (ns.commands_stream(), format!("{}.cmd.>", ns.prefix())),
                (ns.replies_stream(), format!("{}.reply.>", ns.prefix())),
            ] {
                let config = jetstream::stream::Config {
                    name,
                    subjects: vec![subject],
                    ..Default::default()
                };
                js.get_or_create_stream(config).await?;
            }
            Ok::<_, async_nats::error::Error<jetstream::context::CreateStreamErrorKind>>(())
        };
        let mut side = OrchestratorSide::open("p", streams).await.unwrap();
        let command = side.command("s1", "one", Kind::Do, "work", 1);
        assert_eq!((command.attempt, command.payload["saga"].as_str()), (1, Some("s1")));
        side.send(&command).await;
        let stored = side.js.get_stream(side.ns.commands_stream()).await.unwrap();
        let subject = side.ns.command_subject("p", "work");
        let message = stored.get_last_raw_message_by_subject(&subject).await.unwrap();
        assert_eq!(
            message.headers.get(HEADER_MSG_ID).unwrap().as_str(),
            msg_id(&command.command_id, 1)
        );

        assert!(side.quiet_for(Duration::from_millis(100)).await);
        let reply = Reply {
            command_id: command.command_id.clone(),
            attempt: 1,
            outcome: Outcome::Ok { output: serde_json::json!({}) },
        };
        let body = serde_json::to_vec(&reply).unwrap();
        side.js.publish(command.reply_subject.clone(), body.into()).await.unwrap().await.unwrap();
        assert_eq!(side.reply().await, reply);
    }
}
