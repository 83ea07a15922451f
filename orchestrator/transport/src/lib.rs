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

pub use connect::{BusOptions, BusOptionsError, connect};

/// Something NATS or JetStream refused while setting up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "cannot connect to NATS at {url}: {source}. Is nats-server running with JetStream? Start it with \
         `nats-server -js` (or `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server`)"
    )]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "cannot create or find the JetStream stream `{stream}`: {source} \
         (is nats-server running with JetStream enabled, `nats-server -js`?)"
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
