//! The engine's side of the bus: [`intake`] (each partition's replies → the
//! driver), [`relay`] (the outbox → a [`skald_transport::publish::Publisher`])
//! [`starter`] (start requests over NATS → the driver) and [`signals`] (events
//! for waiting sagas over NATS → the driver).
//!
//! Stream and consumer settings live in the `skald-transport` crate, shared
//! with the participant SDK. Fault injection ([`faulty`]) plugs into the two
//! seams, the publisher and the intake's [`intake::ReplyGate`], and is
//! compiled only with the `faults` feature (test builds).

#[cfg(feature = "faults")]
pub mod faulty;
pub mod intake;
pub mod relay;
pub mod signals;
pub mod starter;

use skald_transport::publish::Publisher;
use std::sync::Arc;

/// The transport the engine is given: where commands go out, and the gate
/// replies pass on their way in (none: every reply is applied once).
#[derive(Debug, Clone)]
pub struct Wire {
    pub publisher: Arc<dyn Publisher>,
    pub replies: Option<Arc<dyn intake::ReplyGate>>,
}

impl Wire {
    /// Straight to and from JetStream.
    #[must_use]
    pub fn jetstream(js: async_nats::jetstream::Context) -> Self {
        Self {
            publisher: Arc::new(skald_transport::publish::JetStreamPublisher::new(js)),
            replies: None,
        }
    }
}
