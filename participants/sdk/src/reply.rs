//! Publishing a reply through JetStream.
//!
//! The reply goes to the command's `reply_subject` (in the replies stream) with
//! `Nats-Msg-Id: <command id>/<attempt>/reply`: a redelivered command whose
//! reply was already published is deduplicated by JetStream instead of
//! reaching the orchestrator twice. Success means JetStream acknowledged it.
//! With direct delivery the reply goes on core NATS instead ([`publish_direct`]).

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use sagas::protocol::{Command, HEADER_MSG_ID, HEADER_TRACEPARENT, Outcome, Reply, msg_id};

/// Why a reply was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cannot encode the reply: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot publish the reply: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
    #[error("cannot publish the reply: {0}")]
    Direct(String),
}

/// The dedupe id of the reply to one attempt.
#[must_use]
pub fn reply_msg_id(command: &Command) -> String {
    format!("{}/reply", msg_id(&command.command_id, command.attempt))
}

/// The body of the reply to `command`.
fn body(command: &Command, outcome: Outcome) -> Result<Vec<u8>, serde_json::Error> {
    let reply = Reply { command_id: command.command_id.clone(), attempt: command.attempt, outcome };
    serde_json::to_vec(&reply)
}

pub(crate) async fn publish(
    js: &Context,
    command: &Command,
    outcome: Outcome,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let body = body(command, outcome)?;
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, reply_msg_id(command).as_str());
    if let Some(traceparent) = traceparent {
        headers.insert(HEADER_TRACEPARENT, traceparent);
    }
    let ack = js.publish_with_headers(command.reply_subject.clone(), headers, body.into()).await?;
    ack.await?;
    Ok(())
}

/// Direct delivery: publish the reply on core NATS, on the direct subject of
/// the command's reply subject. Nothing acknowledges it: a reply lost on the
/// way is asked for again by the orchestrator's re-send of the command.
pub(crate) async fn publish_direct(
    client: &async_nats::Client,
    namespace: &sagas::protocol::Namespace,
    command: &Command,
    outcome: Outcome,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let body = body(command, outcome)?;
    let subject = namespace.direct(&command.reply_subject);
    let result = match traceparent {
        Some(traceparent) => {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_TRACEPARENT, traceparent);
            client.publish_with_headers(subject, headers, body.into()).await
        }
        None => client.publish(subject, body.into()).await,
    };
    result.map_err(|e| PublishError::Direct(e.to_string()))
}
