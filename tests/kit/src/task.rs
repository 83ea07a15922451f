//! A service run in-process for a test (a participant, a simulator): spawned
//! with a cancellation token of its own, cancelled on drop, and on
//! [`Service::stop`] checked to have stopped in time, without a panic or an
//! error.

use std::future::Future;
use std::time::Duration;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A spawned `run(token)` that returns `Result<(), E>` when cancelled.
#[derive(Debug)]
pub struct Service<E> {
    stop: CancellationToken,
    handle: Option<JoinHandle<Result<(), E>>>,
}

impl<E: std::fmt::Debug + Send + 'static> Service<E> {
    /// Spawn `run` with a fresh token.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(stop.clone()));
        Self { stop, handle: Some(handle) }
    }

    /// Ask it to stop, without waiting.
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Whether it has returned already (stopped or failed on its own).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Wait for it to return, without asking it to stop: how it ended.
    ///
    /// # Errors
    /// When it panicked.
    pub async fn join(mut self) -> Result<Result<(), E>, JoinError> {
        match self.handle.take() {
            Some(handle) => handle.await,
            None => Ok(Ok(())),
        }
    }

    /// Cancel it and wait until it has returned.
    ///
    /// # Errors
    /// When it does not return `within`, panicked, or returned an error.
    pub async fn stop(mut self, within: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        let Some(handle) = self.handle.take() else { return Ok(()) };
        match tokio::time::timeout(within, handle).await {
            Err(_) => anyhow::bail!("did not stop within {within:?} of being cancelled"),
            Ok(Err(e)) => anyhow::bail!("panicked: {e}"),
            Ok(Ok(Err(e))) => anyhow::bail!("stopped with an error: {e:?}"),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

impl<E> Drop for Service<E> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_service_stops_when_cancelled_and_reports_how_it_ended() {
        let clean = Service::spawn(|token| async move {
            token.cancelled().await;
            Ok::<(), String>(())
        });
        assert!(!clean.is_finished());
        clean.stop(Duration::from_secs(5)).await.unwrap();

        let failing = Service::spawn(|token| async move {
            token.cancelled().await;
            Err("the store went away".to_owned())
        });
        let err = failing.stop(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("the store went away"), "{err}");

        let deaf = Service::spawn(|_| async {
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        });
        let err = deaf.stop(Duration::from_millis(50)).await.unwrap_err();
        assert!(err.to_string().contains("did not stop"), "{err}");
    }
}
