//! The engine's side of the bus: [`intake`] (each partition's replies → the
//! driver; [`direct`] for direct delivery), [`relay`] (the outbox → a [`skald_transport::publish::Publisher`])
//! [`starter`] (start requests over NATS → the driver) and [`signals`] (events
//! for waiting sagas over NATS → the driver).
//!
//! Stream and consumer settings live in the `skald-transport` crate, shared
//! with the participant SDK. Fault injection ([`faulty`]) plugs into the two
//! seams, the publisher and the intake's [`intake::ReplyGate`], and is
//! compiled only with the `faults` feature (test builds).

pub mod direct;
#[cfg(feature = "faults")]
pub mod faulty;
pub mod intake;
pub mod relay;
pub mod signals;
pub mod starter;

use futures::StreamExt;
use skald_transport::publish::Publisher;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answer the requests of `requests` until `shutdown`, at most `max` at once,
/// each on `tasks`: `answer` gets the message and the place it holds among
/// those `max` (it may give it up early, to wait without holding it) and
/// returns the body published to the request's reply subject. A message
/// without a reply subject is dropped. On shutdown no new request is taken
/// (one not yet taken goes unanswered: its caller's request times out).
pub(crate) async fn answer_requests<F, Fut>(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    max: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    what: &'static str,
    answer: F,
) where
    F: Fn(async_nats::Message, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(max));
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = requests.next() => match msg { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else { continue };
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let body = answer(msg, permit);
        let client = client.clone();
        tasks.spawn(async move {
            let body = body.await;
            if let Err(e) = client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %e, "cannot answer a {what}");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), requests.unsubscribe()).await;
}

/// Wait `pause` unless `shutdown` comes first: true when the pause ran out.
pub(crate) async fn paused(shutdown: &CancellationToken, pause: std::time::Duration) -> bool {
    tokio::select! {
        // Either finishing first is the answer; the other is dropped unneeded.
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(pause) => true,
    }
}

/// The transport the engine is given: where commands go out, and the gate
/// replies pass on their way in (none: every reply is applied once).
#[derive(Debug, Clone)]
pub struct Wire {
    pub publisher: Arc<dyn Publisher>,
    pub replies: Option<Arc<dyn intake::ReplyGate>>,
    /// Direct delivery: the answered commands the intake hands to the relay
    /// (`None`: JetStream delivery, where a row is forgotten once published).
    pub answered: Option<Arc<direct::Answered>>,
}

impl Wire {
    /// Straight to and from JetStream.
    #[must_use]
    pub fn jetstream(js: async_nats::jetstream::Context) -> Self {
        Self {
            publisher: Arc::new(skald_transport::publish::JetStreamPublisher::new(js)),
            replies: None,
            answered: None,
        }
    }

    /// On core NATS, outside the streams ([`direct`]).
    #[must_use]
    pub fn direct(client: async_nats::Client, ns: sagas::protocol::Namespace) -> Self {
        Self {
            publisher: Arc::new(skald_transport::publish::DirectPublisher::new(client, ns)),
            replies: None,
            answered: Some(Arc::default()),
        }
    }

    /// As `delivery` says.
    #[must_use]
    pub fn new(
        delivery: skald_transport::Delivery,
        client: async_nats::Client,
        ns: sagas::protocol::Namespace,
    ) -> Self {
        match delivery {
            skald_transport::Delivery::JetStream => {
                Self::jetstream(async_nats::jetstream::new(client))
            }
            skald_transport::Delivery::Direct => Self::direct(client, ns),
        }
    }
}
