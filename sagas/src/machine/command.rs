//! The commands the machine asks the shell to send, and their one encoding.
//!
//! [`OutgoingCommand`] is what a [`super::Decision`] carries and what
//! [`SagaState::in_flight`] rebuilds after a takeover; both are made by
//! [`OutgoingCommand::for_step`], so a re-sent command is the command first
//! sent. [`OutgoingCommand::encode`] turns one into the outbox row the relay
//! publishes (subject, JetStream message id, JSON body), the only place that
//! encoding is written.

use super::state::SagaState;
use crate::UnixMillis;
use crate::protocol::{self, Kind, Namespace};
use serde_json::Value;

/// A command the shell must publish: the wire [`protocol::Command`] minus the
/// reply subject, which depends on the saga's partition.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingCommand {
    pub command_id: String,
    pub step: String,
    pub kind: Kind,
    pub participant: String,
    pub action: String,
    pub attempt: u32,
    pub payload: Value,
    pub deadline: UnixMillis,
}

/// One command as the outbox stores it and the relay publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCommand {
    /// `<prefix>.cmd.<participant>.<action>` ([`OutgoingCommand::subject`]).
    pub subject: String,
    /// The JetStream dedupe id, `<command id>/<attempt>` ([`OutgoingCommand::msg_id`]).
    pub msg_id: String,
    /// The JSON text of the wire [`protocol::Command`].
    pub body: String,
}

impl OutgoingCommand {
    /// Attempt `attempt` of one kind of step `index` of `state`'s saga, with
    /// the payload and answer deadline it is sent with.
    pub(crate) fn for_step(
        state: &SagaState,
        index: usize,
        kind: Kind,
        attempt: u32,
        payload: Value,
        deadline: UnixMillis,
    ) -> Self {
        let def = state.step_def(index);
        Self {
            command_id: protocol::command_id(&state.saga_id, &def.name, kind),
            step: def.name.clone(),
            kind,
            participant: def.participant.clone(),
            // An undo is only sent for a step with a compensation.
            action: def.action_for(kind).unwrap_or_default().to_owned(),
            attempt,
            payload,
            deadline,
        }
    }

    /// The NATS subject this command is published on.
    #[must_use]
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.command_subject(&self.participant, &self.action)
    }

    /// The JetStream dedupe id of this attempt.
    #[must_use]
    pub fn msg_id(&self) -> String {
        protocol::msg_id(&self.command_id, self.attempt)
    }

    /// The wire form.
    #[must_use]
    pub fn to_wire(
        &self,
        saga_id: &str,
        saga_type: &str,
        reply_subject: &str,
    ) -> protocol::Command {
        protocol::Command {
            command_id: self.command_id.clone(),
            saga_id: saga_id.to_owned(),
            saga_type: saga_type.to_owned(),
            step: self.step.clone(),
            kind: self.kind,
            action: self.action.clone(),
            attempt: self.attempt,
            payload: self.payload.clone(),
            deadline_unix_ms: self.deadline,
            reply_subject: reply_subject.to_owned(),
        }
    }

    /// The outbox row of this command for saga `saga_id` of type `saga_type`,
    /// whose replies come back on `partition`'s reply subject under `ns`,
    /// naming the participant it goes to.
    #[must_use]
    pub fn encode(
        &self,
        ns: &Namespace,
        saga_id: &str,
        saga_type: &str,
        partition: u32,
    ) -> EncodedCommand {
        let wire =
            self.to_wire(saga_id, saga_type, &ns.reply_subject(partition, &self.participant));
        EncodedCommand {
            subject: self.subject(ns),
            msg_id: self.msg_id(),
            // A command is plain data with string keys: writing it as JSON
            // does not fail.
            body: serde_json::to_string(&wire).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_encodes_to_its_subject_message_id_and_wire_body() {
        // Given: the second attempt of an undo.
        let command = OutgoingCommand {
            command_id: protocol::command_id("s-1", "hold", Kind::Undo),
            step: "hold".into(),
            kind: Kind::Undo,
            participant: "ledger".into(),
            action: "void".into(),
            attempt: 2,
            payload: json!({"amount": 1250}),
            deadline: UnixMillis(1_700_000_005_000),
        };
        // When: it is encoded for partition 3 under the `t1` prefix.
        let ns = Namespace::new("t1").unwrap();
        let row = command.encode(&ns, "s-1", "topup", 3);
        // Then: the row is what the relay publishes, and the body reads back as
        // the wire command with the reply subject of the partition and the participant.
        assert_eq!(row.subject, "t1.cmd.ledger.void");
        assert_eq!(row.msg_id, "s-1.hold.undo/2");
        let wire: protocol::Command = serde_json::from_str(&row.body).unwrap();
        assert_eq!(wire, command.to_wire("s-1", "topup", "t1.reply.3.ledger"));
        assert_eq!(wire.reply_subject, "t1.reply.3.ledger");
        assert_eq!(
            serde_json::from_str::<Value>(&row.body).unwrap(),
            json!({
                "command_id": "s-1.hold.undo",
                "saga_id": "s-1",
                "saga_type": "topup",
                "step": "hold",
                "kind": "undo",
                "action": "void",
                "attempt": 2,
                "payload": {"amount": 1250},
                "deadline_unix_ms": 1_700_000_005_000_u64,
                "reply_subject": "t1.reply.3.ledger",
            })
        );
    }
}
