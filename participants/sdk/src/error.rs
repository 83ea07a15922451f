//! Why a participant could not start or keep running.
//!
//! Only start-up problems stop a participant. Once it runs, a bad command is
//! terminated and logged, and a database or NATS hiccup hands the command back
//! to JetStream for redelivery: neither ends [`crate::Participant::run`].

use sea_orm::DbErr;
use skald_transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The participant was built wrong (bad names, duplicate handlers, limits).
    #[error("participant `{participant}` is not valid:\n  - {}", problems.join("\n  - "))]
    Invalid { participant: String, problems: Vec<String> },
    #[error("cannot create the SDK's inbox table in the participant database: {0}")]
    Migrate(#[source] DbErr),
    #[error(transparent)]
    Streams(#[from] TransportError),
    #[error("cannot subscribe to this participant's direct commands: {0}")]
    Subscribe(String),
}
