//! The seam commands leave through: a [`Publisher`] the orchestrator's outbox
//! relay is given. [`JetStreamPublisher`] and [`DirectPublisher`] are the real ones; the fault suite
//! wraps it in one that drops, duplicates, holds and reorders (compiled only
//! into test builds), so no fault code sits on the production path.

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
};
use futures::future::BoxFuture;
use sagas::protocol::Namespace;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

/// JetStream's acknowledgement of one publish, still to be awaited.
pub struct Ack(Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>);

impl Ack {
    /// An acknowledgement still to come from `fut`.
    pub fn new(fut: impl Future<Output = Result<(), PublishError>> + Send + 'static) -> Self {
        Self(Box::pin(fut))
    }

    /// An acknowledgement that is already there (nothing to wait for).
    #[must_use]
    pub fn ready() -> Self {
        Self::new(async { Ok(()) })
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl IntoFuture for Ack {
    type Output = Result<(), PublishError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

/// Sends commands to JetStream.
pub trait Publisher: Send + Sync + std::fmt::Debug {
    /// Publish one message; the returned [`Ack`] resolves when JetStream has
    /// it, so a caller can send many before awaiting their acks.
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: String,
    ) -> BoxFuture<'_, Result<Ack, PublishError>>;

    /// Whether a message published on `subject` is kept in the outbox until
    /// its reply is recorded (direct delivery's commands: nothing acknowledges
    /// them) rather than forgotten once the publish is acknowledged.
    fn kept_until_answered(&self, subject: &str) -> bool {
        let _ = subject;
        false
    }

    /// The order in which to publish a batch of `len` messages, as indices;
    /// `None` (the default) keeps the batch's order.
    fn arrange(&self, len: usize) -> Option<Vec<usize>> {
        let _ = len;
        None
    }
}

/// The real publisher: straight to JetStream.
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    js: jetstream::Context,
}

impl JetStreamPublisher {
    #[must_use]
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// The JetStream context it publishes to.
    #[must_use]
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }
}

impl Publisher for JetStreamPublisher {
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: String,
    ) -> BoxFuture<'_, Result<Ack, PublishError>> {
        Box::pin(async move {
            let ack = self.js.publish_with_headers(subject, headers, body.into()).await?;
            Ok(Ack::new(async move { ack.await.map(|_| ()) }))
        })
    }
}

/// The direct publisher (`--delivery direct`): commands on core NATS, on
/// their direct subject ([`Namespace::direct`]), outside the streams. There
/// is no acknowledgement: the [`Ack`] is ready once the message is handed to
/// the connection, and the outbox keeps the command until its reply is
/// recorded. Anything else (a saga's end) goes to JetStream as usual.
#[derive(Debug, Clone)]
pub struct DirectPublisher {
    client: async_nats::Client,
    streams: JetStreamPublisher,
    ns: Namespace,
}

impl DirectPublisher {
    #[must_use]
    pub fn new(client: async_nats::Client, ns: Namespace) -> Self {
        let streams = JetStreamPublisher::new(jetstream::new(client.clone()));
        Self { client, streams, ns }
    }
}

impl Publisher for DirectPublisher {
    fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: String,
    ) -> BoxFuture<'_, Result<Ack, PublishError>> {
        if !self.ns.is_command_subject(&subject) {
            return self.streams.publish(subject, headers, body);
        }
        Box::pin(async move {
            self.client
                .publish_with_headers(self.ns.direct(&subject), headers, body.into())
                .await
                .map_err(|e| PublishError::with_source(PublishErrorKind::BrokenPipe, e))?;
            Ok(Ack::ready())
        })
    }

    fn kept_until_answered(&self, subject: &str) -> bool {
        self.ns.is_command_subject(subject)
    }
}

/// Put `items` in the order `publisher` asks for (unchanged when it asks for none).
#[must_use]
pub fn arranged<T>(publisher: &dyn Publisher, items: Vec<T>) -> Vec<T> {
    let Some(order) = publisher.arrange(items.len()) else { return items };
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut out: Vec<T> =
        order.iter().filter_map(|&i| slots.get_mut(i).and_then(Option::take)).collect();
    // Anything the order left out keeps its place at the end: nothing is lost.
    out.extend(slots.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Reverse;

    impl Publisher for Reverse {
        fn publish(
            &self,
            _: String,
            _: HeaderMap,
            _: String,
        ) -> BoxFuture<'_, Result<Ack, PublishError>> {
            Box::pin(async { Ok(Ack::ready()) })
        }
        fn arrange(&self, len: usize) -> Option<Vec<usize>> {
            Some((0..len).rev().chain([0, len + 3]).collect())
        }
    }

    #[test]
    fn an_arrangement_reorders_and_never_loses_or_repeats() {
        assert_eq!(arranged(&Reverse, vec![1, 2, 3]), vec![3, 2, 1]);
        assert_eq!(arranged(&Reverse, Vec::<u8>::new()), Vec::<u8>::new());
    }
}
