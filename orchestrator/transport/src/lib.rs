//! Skald's transport over NATS JetStream, one definition of every setting.
//!
//! The orchestrator and the participant SDK both depend on this crate, so the
//! streams they create, the consumers they read and the way they connect are
//! written once:
//! - [`connect`]: who a process is on the bus ([`BusOptions`]: credentials and
//!   TLS, from flags and environment) and connecting, with an error that says
//!   how to start NATS and never prints a secret;
//! - [`access`]: who may say what: the nats-server configuration that gives
//!   each Skald process an identity and only its part's subjects;
//! - [`streams`]: the commands and replies streams of a namespace;
//! - [`consumers`]: the participant's durable consumer and the orchestrator's
//!   per-partition reply consumers;
//! - [`publish`]: the [`publish::Publisher`] seam the orchestrator's outbox
//!   relay sends commands through (JetStream here; a test may wrap it).
//!
//! Subjects and stream names come from [`sagas::protocol::Namespace`]. Only
//! JetStream features of nats-server 2.9 are used (DESIGN.md, wire protocol).
//! This crate may not depend on the orchestrator, the SDK or any database.

pub mod access;
pub mod connect;
pub mod consumers;
pub mod publish;
pub mod streams;

pub use connect::{BusOptions, BusOptionsError, Delivery, connect};

/// Something NATS or JetStream refused while setting up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to NATS at {url}: {source}; {}", self.hint())]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "cannot create or find the JetStream stream `{stream}`: {source} \
         (is nats-server running with JetStream enabled, `nats-server -js`? On a secured bus, \
         does this identity's permission cover it? A bus configuration written by an older \
         `skald bus init` lacks the ends stream: write it again with `skald bus init --force`)"
    )]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("cannot create or find the durable consumer `{consumer}` on `{stream}`: {source}")]
    Consumer {
        consumer: String,
        stream: String,
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error(transparent)]
    Options(#[from] BusOptionsError),
    #[error("the NATS URL {url} is not valid: {message}")]
    BadUrl { url: String, message: String },
    #[error("cannot reach NATS: {0}")]
    Flush(String),
}

impl TransportError {
    /// What to do about it, in one line.
    #[must_use]
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Connect { source, .. }
                if source.kind() == async_nats::ConnectErrorKind::AuthorizationViolation =>
            {
                "the server refused this client's credentials: give the identity it expects \
                 (--nats-nkey, --nats-creds, --nats-user/--nats-password or --nats-token, or \
                 the NATS_* variables; `skald bus init` writes one per process)"
            }
            Self::Connect { source, .. } if source.kind() == async_nats::ConnectErrorKind::Tls => {
                "TLS failed: check --nats-tls-ca (the CA that signed the server's certificate) \
                 and, for mutual TLS, --nats-tls-cert and --nats-tls-key"
            }
            Self::Options(_) | Self::BadUrl { .. } => "fix the --nats-* options (see --help)",
            _ => {
                "is nats-server running with JetStream? Start it with `nats-server -js` (or \
                 `docker compose up -d nats`), or point --nats-url / NATS_URL at it"
            }
        }
    }
}
